"""`stardock import`: turn an existing recipe (Dockerfile / Containerfile, or an Apptainer /
Singularity .def) into an environment spec, listing everything that is not carried over.

spython's parsers were the plan, and were studied (0.3.14): they cannot be the reader. The
Docker parser crashes on `ENV K a b` (and splits `ENV K a b c` into K=a, b=c), reads a RUN, CMD
or COPY one physical line at a time (continued lines become separate commands, a two-line CMD
becomes its second line), takes `--chown=...` for a source file, splits `COPY ["a b", "/x"]`
at the space, turns USER into a shell line and ADD of a URL or archive into curl / `tar -zvf`
commands, and loses unnamed final stages. The Singularity parser strips indentation and blank
lines from %post (here-documents, Python snippets), writes %runscript and %test into the build
as `echo ... >> /entrypoint.sh` lines, drops %setup, files %help, %startscript and %app* as
comments, refuses non-docker Bootstrap types, keeps quotes in %environment values and drops its
non-assignment lines without a word. So the recipe is read here: import_docker and import_def
read the two formats, import_shell / import_words the shell text and Dockerfile words,
import_rules decides what each command becomes, import_spec collects the spec (checking each
value as the spec would). tests/unit/test_import.py keeps checking spython's behaviour so the
choice can be revisited.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import yaml

from stardock_hpc import __version__
from stardock_hpc.catalog import Catalog
from stardock_hpc.errors import UsageError
from stardock_hpc.fsutil import read_text
from stardock_hpc.import_def import DefImporter
from stardock_hpc.import_def import lex as lex_def
from stardock_hpc.import_docker import DockerImporter
from stardock_hpc.import_docker import lex as lex_docker
from stardock_hpc.import_spec import NotCarried, SpecBuilder
from stardock_hpc.site import DEFAULT_BASES, BaseImage
from stardock_hpc.spec import NAME_RE

MAX_BYTES = 1 << 20
DOCKERFILE, DEFINITION = "Dockerfile", "Apptainer definition"
_GENERIC_NAMES = {"dockerfile", "containerfile", "singularity", "apptainer", "recipe", "def", ""}

__all__ = ["ImportResult", "NotCarried", "import_recipe", "render_yaml", "default_name"]


@dataclass
class ImportResult:
    source: Path
    kind: str                           # DOCKERFILE or DEFINITION
    spec: Dict[str, Any]                # stardock.yaml as plain data, in its key order
    not_carried: List[NotCarried] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


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
                  spec_dir: Optional[Path] = None) -> ImportResult:
    """Read the recipe at `path` into a spec. `catalog` turns apt packages into its apps;
    `bases` (the site's) names the base; `spec_dir` is where the spec will be written (file
    sources are relative to it; default: the recipe's directory)."""
    text = read_recipe(path)
    kind = detect_kind(path, text)
    builder = SpecBuilder(spec_dir if spec_dir is not None else path.parent)
    bases = DEFAULT_BASES if bases is None else bases
    try:
        if kind == DOCKERFILE:
            DockerImporter(path, builder, bases).run(lex_docker(text))
        else:
            DefImporter(path, builder, bases).run(lex_def(text))
    except UsageError as exc:
        raise UsageError(f"{path}: {exc.message}", exc.hint) from None
    spec = builder.spec(name or default_name(path), catalog)
    return ImportResult(path, kind, spec, builder.not_carried, builder.notes)


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)  # indent list items under their key


def _str(dumper: yaml.SafeDumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _comment(text: str) -> str:
    """One line of printable text: what a YAML comment may hold."""
    return re.sub(r"[^\t\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+", "?", text)


def render_yaml(result: ImportResult) -> str:
    """The spec as stardock.yaml text, headed by comments that list what was not carried over
    and the notes, so that they stay with the file."""
    head = [f"# stardock.yaml imported from {result.source.name} ({result.kind}) by stardock-hpc "
            f"{__version__}.",
            "# Review it, then build it: stardock build stardock.yaml"]
    if result.not_carried:
        head += ["#", f"# Not carried over ({len(result.not_carried)}):"]
        head += [f"#   - {_comment(str(item))}" for item in result.not_carried]
    if result.notes:
        head += ["#", "# Notes:"] + [f"#   - {_comment(note)}" for note in result.notes]
    body = "".join(yaml.dump({key: value}, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                             allow_unicode=True, width=1 << 16) for key, value in result.spec.items())
    return "\n".join(head) + "\n\n" + body
