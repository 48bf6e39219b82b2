"""Slurm's own notions, in one place for every part of stardock: sbatch's options (options.py),
batch scripts as sbatch reads them (script.py), and Slurm's times, sizes and job states
(values.py). Nothing here imports the rest of stardock but its errors."""
