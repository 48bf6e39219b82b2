"""Scheduler backends behind one interface (base.Scheduler), chosen by name (registry.py)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Optional, Tuple, Type

from stardock_hpc.errors import UsageError
from stardock_hpc.schedulers.registry import BACKENDS

if TYPE_CHECKING:
    from stardock_hpc.schedulers.base import Scheduler
    from stardock_hpc.site import Site


def scheduler_class(name: str) -> Type[Scheduler]:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
    backend = BACKENDS[name]
    cls: Type[Scheduler] = getattr(importlib.import_module(backend.module), backend.cls)
    return cls


def get_scheduler(option: Optional[str], site: Site, recorded: Optional[str] = None) -> Tuple[Scheduler, str]:
    """The backend and where the choice came from (reported in --debug and JSON output): the
    --backend option, else the backend a job was submitted with (its record), else the site config."""
    if option:
        name, source = option, "--backend option"
    elif recorded:
        name, source = recorded, "the job's submit record"
    else:
        name, source = site.scheduler.backend, f"site config ({site.source})"
    return scheduler_class(name).from_site(site), source
