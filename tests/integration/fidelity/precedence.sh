#!/bin/bash
# Which value wins: the command line over $SBATCH_* over #SBATCH; the last of two directives;
# directives after a blank line still count, those after the first command do not.
#SBATCH --job-name=from-script
#SBATCH --time=10
#SBATCH --comment=from_script
#SBATCH --mem=100M
#SBATCH --mem=150M

#SBATCH --nice=5
#SBATCH --partition=debug
echo "the first command: sbatch reads no directive below it"
#SBATCH --partition=batch
