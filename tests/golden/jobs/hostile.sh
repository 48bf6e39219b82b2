#!/bin/bash
#SBATCH --job-name="it's $(id) \"x\""
#SBATCH --output=out-%j.txt   # a comment after the option
#SBATCH --array=1-4

# a comment between directives
#STARDOCK --mount archive/m51
echo "task $SLURM_ARRAY_TASK_ID" 'STARDOCK_JOB_SPEC'
