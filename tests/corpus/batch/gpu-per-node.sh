#!/bin/bash
#SBATCH --partition=debug
##SBATCH --gpus-per-node=1 
#SBATCH --ntasks-per-node=1
#SBATCH --mem=1GB
#SBATCH --time=3:00
#SBATCH --account=science
hostname
nvidia-smi