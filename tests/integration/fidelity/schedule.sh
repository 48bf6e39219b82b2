#!/bin/bash
# When and how the job may run; no --job-name, so Slurm names it after this file.
#SBATCH --begin=now+1hour
#SBATCH --deadline=now+3hours
#SBATCH --delay-boot=5
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --propagate=STACK
#SBATCH --no-kill
#SBATCH --oversubscribe
#SBATCH --power=level

#SBATCH --switches=1@00:10:00
echo "$@"
