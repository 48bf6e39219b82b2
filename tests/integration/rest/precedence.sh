#!/bin/bash
# Which value wins: the command line over $SBATCH_* over #SBATCH; the last of two directives;
# directives after the first command do not count.
#SBATCH --job-name=from-script
#SBATCH --time=10
#SBATCH --mem=100M
#SBATCH --mem=150M
#SBATCH --partition=debug
echo "the first command"
#SBATCH --partition=batch
