#!/usr/bin/env python3
#SBATCH --mem=2G --time=10
import os
print(os.environ["SLURM_JOB_ID"])
