#!/bin/bash
# Resources, placement and accounting, all as #SBATCH directives.
#SBATCH --job-name=fid-resources
#SBATCH --partition=batch
#SBATCH --time=00:10:00
#SBATCH --time-min=00:05:00
#SBATCH --nodes=1
#SBATCH --ntasks=2
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --mincpus=2
#SBATCH --mem-per-cpu=100M
#SBATCH --tmp=10M
#SBATCH --exclusive
#SBATCH --contiguous
#SBATCH --distribution=cyclic
#SBATCH --account=science
#SBATCH --qos=normal
#SBATCH --output=resources-%x-%j.out
#SBATCH --error="resources err %j.txt"
srun hostname
