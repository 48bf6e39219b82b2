#!/bin/bash
# An array job: %A/%a output patterns, signals, requeue, CPU topology.
#SBATCH --array=0-3%2
#SBATCH --output=array-%A_%a.out
#SBATCH --error=array-%A_%a-%x.err
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@60
#SBATCH --requeue
#SBATCH --mem=200M
#SBATCH --cpus-per-task=2
#SBATCH --sockets-per-node=1
#SBATCH --cores-per-socket=2
#SBATCH --threads-per-core=1
#SBATCH --ntasks-per-core=1
echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"
