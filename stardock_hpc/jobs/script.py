"""Render the job script sbatch receives, from the skeleton slurm/job.sbatch.tmpl."""
from __future__ import annotations

import shlex
import string
import sys
from pathlib import Path
from typing import Optional

from stardock_hpc import __version__
from stardock_hpc.jobs.jobspec import JobSpec
from stardock_hpc.jobs.request import Script
from stardock_hpc.resources import data_dir

TEMPLATE = "job.sbatch.tmpl"
WRAPPER = "stardock-node"


def render_job_script(script: Script, spec: JobSpec, python: str = sys.executable,
                      wrappers: Optional[Path] = None) -> str:
    """The job script: the batch script's header kept verbatim, then the wrapper call. python
    and wrappers default to this installation (the nodes share it)."""
    template = string.Template((data_dir("slurm") / TEMPLATE).read_text())
    header = "\n".join(script.header) if script.header else "# (the batch script has no #SBATCH lines)"
    return template.substitute(
        header=header, version=__version__, name=shlex.quote(spec.name), key12=spec.key[:12],
        engine=spec.engine, python=shlex.quote(python),
        wrapper=shlex.quote(str((wrappers or data_dir("wrappers")) / WRAPPER)), jobspec=spec.to_json())
