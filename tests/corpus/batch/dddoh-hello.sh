#!/bin/bash
# Job name:
#SBATCH --job-name=test
#
# Account:
#SBATCH --account=science
#
# Partition:
#SBATCH --partition=debug
#
# Quality of Service:
#SBATCH --qos=normal
#
# Wall clock limit:
#SBATCH --time=50:00:30
#
## Command(s) to run:
echo "hello world"