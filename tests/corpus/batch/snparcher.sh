#!/bin/bash
#SBATCH -J sm
#SBATCH -o out
#SBATCH -e err
#SBATCH -p debug
#SBATCH -n 1
#SBATCH -t 4000
#SBATCH --mem=4000


snakemake --snakefile Snakefile_fastq2bam --profile ./profiles/slurm
