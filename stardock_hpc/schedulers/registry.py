"""The scheduler backends, by name: the one list the site config, `site check` and
`get_scheduler` use. It imports nothing, so validating a site config loads no backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class Backend:
    name: str
    module: str         # where its Scheduler subclass lives (imported only when used)
    cls: str
    summary: str


BACKENDS: Dict[str, Backend] = {b.name: b for b in (
    Backend("sbatch", "stardock_hpc.schedulers.sbatch", "SbatchScheduler",
            "Slurm's commands: sbatch to submit, sacct/squeue/scontrol to ask, scancel to cancel"),
    Backend("rest", "stardock_hpc.schedulers.rest", "RestScheduler", "slurmrestd over HTTP, with a JWT"),
    Backend("pyslurm", "stardock_hpc.schedulers.pyslurm_backend", "PyslurmScheduler",
            "Slurm's C library through pyslurm (the optional extra stardock-hpc[pyslurm])"),
)}
NAMES = tuple(BACKENDS)
