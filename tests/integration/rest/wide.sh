#!/bin/bash
# Many more options slurmrestd can carry, as #SBATCH lines (submitted held: it never runs).
#SBATCH --account=science
#SBATCH --qos=normal
#SBATCH --time=1-00:00:30
#SBATCH --time-min=00:05:00
#SBATCH --nodes=1-1
#SBATCH --ntasks=2
#SBATCH --ntasks-per-node=2
#SBATCH --mincpus=2
#SBATCH --mem-per-cpu=100M
#SBATCH --tmp=10M
#SBATCH --exclusive
#SBATCH --distribution=cyclic
#SBATCH --begin=now+1hour
#SBATCH --deadline=now+3hours
#SBATCH --delay-boot=5
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --no-kill
#SBATCH --no-requeue
#SBATCH --open-mode=append
#SBATCH --signal=USR1@60
#SBATCH --mail-type=END,FAIL
#SBATCH --mail-user=stardock@example.org
#SBATCH --output="wide out %j.txt"
#SBATCH --input=/dev/null

#SBATCH --threads-per-core=1
echo "$@"
