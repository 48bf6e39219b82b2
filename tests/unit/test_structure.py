"""The package's boundaries, read from its import statements: schedulers/ does not reach into
jobs/, the Slurm notions in slurm/ depend on nothing of stardock's but its errors and file
reading, and the importer is loaded by the import command alone."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[2] / "stardock_hpc"


def imports_of(path: Path) -> Set[str]:
    """The stardock_hpc modules a file imports (at any level, type-checking blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("stardock_hpc")}


def graph() -> Dict[str, Set[str]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = imports_of(path)
    return out


def test_schedulers_import_nothing_from_jobs():
    bad = {m: sorted(i for i in deps if i.startswith("stardock_hpc.jobs"))
           for m, deps in graph().items() if m.startswith("stardock_hpc.schedulers")}
    assert {m: deps for m, deps in bad.items() if deps} == {}


def test_slurm_notions_stand_alone():
    allowed = ("stardock_hpc.slurm", "stardock_hpc.errors", "stardock_hpc.fsutil")
    bad = {m: sorted(i for i in deps if not i.startswith(allowed))
           for m, deps in graph().items() if m.startswith("stardock_hpc.slurm")}
    assert {m: deps for m, deps in bad.items() if deps} == {}


def test_only_the_import_command_loads_the_importer():
    users = sorted(m for m, deps in graph().items() if not m.startswith("stardock_hpc.importer")
                   and any(d.startswith("stardock_hpc.importer") for d in deps))
    assert users == ["stardock_hpc.commands.importcmd"]
