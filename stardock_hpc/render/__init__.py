"""Pure renderers: BuildPlan -> Apptainer definition / Containerfile text. No I/O here."""
from stardock_hpc.render.apptainer import render_apptainer
from stardock_hpc.render.containerfile import render_containerfile

FORMATS = {"apptainer": render_apptainer, "containerfile": render_containerfile}

__all__ = ["FORMATS", "render_apptainer", "render_containerfile"]
