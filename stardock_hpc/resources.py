"""Where the data directories (definitions/, wrappers/, slurm/) are.

An installed wheel carries them inside the package as stardock_hpc/_data/<name>; a source
checkout (and an editable install of it) uses the top-level directories of the tree.
"""
from __future__ import annotations

from pathlib import Path

DATA_DIRS = ("definitions", "wrappers", "slurm")
_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    if name not in DATA_DIRS:
        raise ValueError(f"unknown data directory {name!r}; known: {', '.join(DATA_DIRS)}")
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"stardock-hpc's {name}/ directory is missing from {_PACKAGE}")
