"""stardock-hpc: ship the software to the data. A YAML environment spec becomes an Apptainer
definition and a Podman Containerfile, built unprivileged, cached by content, and run as a
Slurm batch job."""

__version__ = "0.1.0"
