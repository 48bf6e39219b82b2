"""A recipe file in, an ImportResult out: read it, tell which format it is, name the
environment, and run the importer for its format over it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from stardock_hpc.catalog import Catalog
from stardock_hpc.errors import UsageError
from stardock_hpc.fsutil import read_text
from stardock_hpc.importer.base import SiteBases
from stardock_hpc.importer.definition import DefImporter
from stardock_hpc.importer.definition import lex as lex_def
from stardock_hpc.importer.docker import DockerImporter
from stardock_hpc.importer.dockerlex import lex as lex_docker
from stardock_hpc.importer.spec_builder import NotCarried, SpecBuilder
from stardock_hpc.site import DEFAULT_BASES, BaseImage
from stardock_hpc.spec import NAME_RE

MAX_BYTES = 1 << 20
DOCKERFILE, DEFINITION = "Dockerfile", "Apptainer definition"
_GENERIC_NAMES = {"dockerfile", "containerfile", "singularity", "apptainer", "recipe", "def", ""}


@dataclass
class ImportResult:
    source: Path
    kind: str                           # DOCKERFILE or DEFINITION
    spec: Dict[str, Any]                # stardock.yaml as plain data, in its key order
    not_carried: List[NotCarried] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    changes: List[str] = field(default_factory=list)   # said first: the base is not the recipe's


def read_recipe(path: Path) -> str:
    """The recipe's text; anything that is not a readable text file is a UsageError naming it."""
    text = read_text(path, "recipe", MAX_BYTES)
    if "\x00" in text:
        raise UsageError(f"{path}: not a text file (it contains NUL bytes)")
    return text.lstrip("\ufeff")


def detect_kind(path: Path, text: str) -> str:
    name = path.name.lower()
    if name.endswith(".def") or name.startswith(("singularity", "apptainer")):
        return DEFINITION
    if "dockerfile" in name or "containerfile" in name:
        return DOCKERFILE
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if re.match(r"bootstrap\s*:", stripped, re.I):
            return DEFINITION
        if re.match(r"(?:from|arg)\s", stripped, re.I):
            return DOCKERFILE
        break
    raise UsageError(f"{path}: not a Dockerfile/Containerfile (starts with FROM) or an Apptainer/"
                     "Singularity definition (starts with 'Bootstrap:')")


def default_name(path: Path) -> str:
    """The environment's name from the recipe's file name (m51.def, Dockerfile.m51, m51.dockerfile)
    or, for a plain Dockerfile / Singularity, from its directory; made to fit the spec's rule."""
    name = path.name.lower()
    for generic in ("dockerfile", "containerfile", "singularity", "apptainer"):
        if name.startswith(generic + "."):
            name = name[len(generic) + 1:]
        elif name.endswith("." + generic):
            name = name[:-len(generic) - 1]
    name = re.sub(r"\.def$", "", name)
    if name in _GENERIC_NAMES:
        name = path.resolve().parent.name.lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", name).strip("._-")[:63].rstrip("._-")
    return name if re.fullmatch(NAME_RE, name) else "imported"


def import_recipe(path: Path, name: Optional[str] = None, catalog: Optional[Catalog] = None,
                  bases: Optional[Mapping[str, BaseImage]] = None,
                  spec_dir: Optional[Path] = None, base: Optional[str] = None,
                  default_base: Optional[str] = None) -> ImportResult:
    """Read the recipe at `path` into a spec. `catalog` turns apt packages into its apps;
    `bases` (the site's, with its `default_base`) are what the recipe's image becomes (see
    bases.py), or `base` when given (`stardock import --base`); `spec_dir` is where the spec will
    be written (file sources are relative to it; default: the recipe's directory). A recipe that
    cannot be imported (a base of another family, a line Docker rejects) is a UsageError."""
    text = read_recipe(path)
    kind = detect_kind(path, text)
    builder = SpecBuilder(spec_dir if spec_dir is not None else path.parent, catalog)
    offered = DEFAULT_BASES if bases is None else bases
    if default_base is None and bases is None:
        default_base = next(iter(DEFAULT_BASES))
    site = SiteBases(offered, default_base, base)
    try:
        if kind == DOCKERFILE:
            DockerImporter(path, builder, site).run(lex_docker(text))
        else:
            DefImporter(path, builder, site).run(lex_def(text))
    except UsageError as exc:
        raise UsageError(f"{path}: {exc.message}", exc.hint) from None
    spec = builder.spec(name or default_name(path))
    return ImportResult(path, kind, spec, builder.not_carried, builder.notes, builder.changes)
