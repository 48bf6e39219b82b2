"""Container engines behind one small interface (base.Engine)."""
from __future__ import annotations

from typing import Dict, Type

from stardock_hpc.engines.apptainer import ApptainerEngine
from stardock_hpc.engines.base import Engine, ImageRef, Mount
from stardock_hpc.engines.podman import PodmanEngine
from stardock_hpc.errors import UsageError

ENGINES: Dict[str, Type[Engine]] = {"podman": PodmanEngine, "apptainer": ApptainerEngine}


def get_engine(name: str) -> Engine:
    try:
        return ENGINES[name]()
    except KeyError:
        raise UsageError(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}") from None


__all__ = ["ENGINES", "Engine", "ImageRef", "Mount", "get_engine"]
