#!/bin/bash
# The job the issue names, through sbatch and through slurmrestd: name, partition, time limit,
# memory, cpus, output paths with patterns and an array, as #SBATCH lines (the dependency comes
# from the command line).
#SBATCH --job-name=rest-twin
#SBATCH --partition=batch
#SBATCH --time=00:10:00
#SBATCH --mem=150M
#SBATCH --cpus-per-task=2
#SBATCH --output=twin-%x-%A_%a.out
#SBATCH --error=twin-%x-%A_%a.err
#SBATCH --array=0-2%2
echo "task $SLURM_ARRAY_TASK_ID of $SLURM_JOB_NAME: $*"
cat /stamp
