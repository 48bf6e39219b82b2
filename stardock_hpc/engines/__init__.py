"""Container engines behind one small interface (base.Engine). An engine's module is imported
only when that engine is used."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, Tuple, Type

from stardock_hpc.engines.base import Engine, ImageRef, Mount
from stardock_hpc.errors import UsageError

if TYPE_CHECKING:
    from stardock_hpc.engines.apptainer import ApptainerEngine
    from stardock_hpc.engines.podman import PodmanEngine

# name -> (module, class)
REGISTRY: Dict[str, Tuple[str, str]] = {"podman": ("stardock_hpc.engines.podman", "PodmanEngine"),
                                        "apptainer": ("stardock_hpc.engines.apptainer", "ApptainerEngine")}
NAMES = tuple(REGISTRY)


def engine_class(name: str) -> Type[Engine]:
    if name not in REGISTRY:
        raise UsageError(f"unknown engine {name!r}; engines: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name]
    found: Type[Engine] = getattr(importlib.import_module(module), cls)
    return found


def get_engine(name: str) -> Engine:
    return engine_class(name)()


def __getattr__(name: str) -> Any:
    """ENGINES (every engine class, by name) and the classes themselves, loaded when asked for."""
    if name == "ENGINES":
        return {n: engine_class(n) for n in REGISTRY}
    for engine, (_module, cls) in REGISTRY.items():
        if name == cls:
            return engine_class(engine)
    raise AttributeError(name)


__all__ = ["ENGINES", "NAMES", "ApptainerEngine", "Engine", "ImageRef", "Mount", "PodmanEngine", "engine_class",
           "get_engine"]
