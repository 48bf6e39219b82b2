"""Who may read a cache entry, decided when it is built.

An entry holds the spec, the rendered definition, meta.json and the image: everything its inputs
held. So it is readable by the users who may run it, never wider:
  * public (readable by everybody, as `stardock images` shows to all): built by a builder the site
    trusts (root, `trusted_builders`) from inputs everybody can read;
  * private (its builder's alone, never offered to anybody else): built by anybody else (nobody
    else may run it anyway), or from an input others cannot read, or with build secrets (what the
    build made of them is the builder's: a licensed program, a private repository's code).

"Everybody can read" is the kernel's rule for users who are neither the owner nor in the group:
a file needs o+r, a directory o+r and o+x (and so, recursively, everything in it: symbolic links
inside are copied as links, their text readable wherever their directory is), and every
directory on the way to it o+x, on its real path (after links). A group-readable file is not
readable by everybody. The inputs: the spec file, every `files:` source (each file and directory
in it), the lock of a --locked build, the catalog entries used, the site's CA certificates and
the base image's archive.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from stardock_hpc.cache.entries import PRIVATE, PUBLIC
from stardock_hpc.plan import BuildPlan

MAX_SHOWN = 3  # inputs named in the reason; the rest are counted


@dataclass(frozen=True)
class Visibility:
    scope: str      # PUBLIC or PRIVATE
    reason: str


def unreadable(path: Path) -> Optional[str]:
    """None when everybody can read path (see the module's docstring), else why not."""
    try:
        real = Path(os.path.realpath(path))
        for ancestor in reversed(real.parents):
            mode = os.stat(ancestor).st_mode
            if not mode & stat.S_IXOTH:
                return f"{ancestor} is closed to others (mode {stat.S_IMODE(mode):04o}), so {path} is"
        st = os.lstat(real)
        if not stat.S_ISDIR(st.st_mode):
            return _file_problem(real, st)
        return _tree_problem(real)
    except OSError as exc:
        return f"{exc.filename or path} cannot be checked ({exc.strerror})"


def _file_problem(path: Path, st: os.stat_result) -> Optional[str]:
    if stat.S_ISLNK(st.st_mode):
        return None  # copied as a link: its text is read through its directory
    if stat.S_ISDIR(st.st_mode):
        if st.st_mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
            return f"{path} is a directory others cannot list or enter (mode {stat.S_IMODE(st.st_mode):04o})"
        return None
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if not st.st_mode & stat.S_IROTH:
        return f"{path} is not readable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _tree_problem(top: Path) -> Optional[str]:
    """The first thing in the tree at top (a real directory) that others cannot read."""
    problems: List[str] = []

    def failed(exc: OSError) -> None:
        problems.append(f"{exc.filename} cannot be checked ({exc.strerror})")

    for root, dirs, files in os.walk(top, onerror=failed):  # links are not followed
        for name in [None, *sorted(dirs), *sorted(files)]:
            path = Path(root) if name is None else Path(root) / name
            if name is not None and name in dirs and not os.path.islink(path):
                continue  # judged as its own root when the walk gets there
            problem = _file_problem(path, os.lstat(path))
            if problem:
                return problem
        if problems:
            return problems[0]
    return problems[0] if problems else None


def inputs(spec: Path, plan: BuildPlan, lock: Optional[Path] = None) -> List[Tuple[str, Path]]:
    """(what, path) of everything an entry of plan carries the content of."""
    found = [("the spec", spec)]
    found += [(f"files: item {f.index + 1}", f.source) for f in plan.all_files]
    if plan.lock is not None and lock is not None:
        found.append(("the lock", lock))
    found += [(f"the catalog entry of {app.name}", app.path) for app in plan.apps if app.path.is_file()]
    found += [("a CA certificate of the site", cert) for cert in plan.ca_certificates]
    if plan.base.archive is not None:
        found.append((f"the archive of the base {plan.base.name}", plan.base.archive))
    return found


def decide(spec: Path, plan: BuildPlan, builder: str, builder_trusted: bool,
           lock: Optional[Path] = None) -> Visibility:
    """The entry's visibility and why (kept in its meta.json, shown by `stardock images`)."""
    reasons = [f"{what}: {problem}" for what, path in inputs(spec, plan, lock) for problem in [unreadable(path)]
               if problem]
    shown = reasons[:MAX_SHOWN] + ([f"and {len(reasons) - MAX_SHOWN} more"] if len(reasons) > MAX_SHOWN else [])
    why: List[str] = []
    if reasons:
        why.append("built from inputs others cannot read (" + "; ".join(shown) + ")")
    if plan.secrets:
        why.append("built with the build secrets " + ", ".join(s.id for s in plan.secrets))
    if not builder_trusted:
        why.append(f"its builder {builder} is not one of the site's trusted builders, so nobody else may run it")
    if why:
        return Visibility(PRIVATE, "; ".join(why))
    return Visibility(PUBLIC, f"built by {builder}, a trusted builder, from inputs everybody can read")
