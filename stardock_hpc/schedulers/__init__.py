"""Scheduler backends behind one interface (base.Scheduler)."""
from __future__ import annotations

from typing import Optional, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.schedulers.base import Scheduler
from stardock_hpc.site import BACKENDS, Site


def get_scheduler(option: Optional[str], site: Site) -> Tuple[Scheduler, str]:
    """The backend and where the choice came from (reported in --debug and JSON output)."""
    name, source = (option, "--backend option") if option else (site.scheduler.backend, f"site config ({site.source})")
    if name == "sbatch":
        from stardock_hpc.schedulers.sbatch import SbatchScheduler
        return SbatchScheduler(), source
    if name in BACKENDS:
        raise UsageError(f"the {name!r} backend is not available yet; use --backend sbatch")
    raise UsageError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
