"""Scheduler backends behind one interface (base.Scheduler)."""
from __future__ import annotations

from typing import Optional, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.schedulers.base import Scheduler
from stardock_hpc.site import BACKENDS, Site


def get_scheduler(option: Optional[str], site: Site, recorded: Optional[str] = None) -> Tuple[Scheduler, str]:
    """The backend and where the choice came from (reported in --debug and JSON output): the
    --backend option, else the backend a job was submitted with (its record), else the site config."""
    if option:
        name, source = option, "--backend option"
    elif recorded:
        name, source = recorded, "the job's submit record"
    else:
        name, source = site.scheduler.backend, f"site config ({site.source})"
    if name == "sbatch":
        from stardock_hpc.schedulers.sbatch import SbatchScheduler
        return SbatchScheduler(), source
    if name == "rest":
        from stardock_hpc.schedulers.rest import RestScheduler
        return RestScheduler.from_site(site), source
    if name == "pyslurm":
        from stardock_hpc.schedulers.pyslurm_backend import PyslurmScheduler
        return PyslurmScheduler(), source
    raise UsageError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
