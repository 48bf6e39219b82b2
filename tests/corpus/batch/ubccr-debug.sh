#!/bin/bash -l

#SBATCH --clusters=stardock
#SBATCH --partition=debug
#SBATCH --qos=normal
#SBATCH --time=01:00:00
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=32
#SBATCH --mem=64000




