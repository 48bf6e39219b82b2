"""COPY and ADD of a Dockerfile as files: items at their place in build:.

The context is the recipe's directory less what .dockerignore excludes (buildcontext.py): an
excluded file never reaches the image, as under Docker. A wildcard is expanded when the recipe
is imported; where it names every entry of a directory and those are all files, the copy is of
the directory instead, which stays right when files are added (with subdirectories it cannot be:
Docker copies the contents of each matched directory, not the directory)."""
from __future__ import annotations

import json
import posixpath
import shlex
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from stardock_hpc.importer.buildcontext import Ignore, plan_copy
from stardock_hpc.importer.dockerlex import Instruction
from stardock_hpc.importer.shell import one_line

if TYPE_CHECKING:  # the importer passes itself in
    from stardock_hpc.importer.docker import DockerImporter

_WILD = "*?["
_APT_CONFIG = ("/etc/apt/", "/usr/share/keyrings/")


def copy_instruction(imp: DockerImporter, inst: Instruction) -> None:
    args, flags = inst.args, {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        args = args.lstrip()
    out = imp.out
    if inst.heredocs:
        out.drop(inst.shown, "files written from a here-document: put the file next to the recipe and copy it")
        return
    if "from" in flags:
        stage = imp.stage(flags["from"])
        if stage is not None:
            out.drop(inst.shown, f"copies what build stage {flags['from']!r} ({stage.lines(imp.instructions)}) "
                     "built, and that stage is not built: stardock builds one image; put that stage's steps "
                     "in build: (or install what it builds from a package)")
        else:
            out.drop(inst.shown, f"copies from the image {flags['from']!r}, which stardock does not pull; "
                     "install what it takes in a build step")
        return
    try:
        paths = json.loads(args) if args.startswith("[") else None
    except ValueError:
        paths = None
    if not (isinstance(paths, list) and all(isinstance(p, str) for p in paths)):
        paths = imp._words(Instruction(inst.keyword, args, inst.lines, inst.line))
    if paths is None:
        return
    if len(paths) < 2:
        out.drop(inst.shown, "needs a source and a destination")
        return
    for name in sorted(set(flags) - {"chown", "chmod", "link"}):
        out.note(f"{inst.keyword} --{name} dropped")
    if "chown" in flags:
        out.note(f"{inst.keyword} --chown={flags['chown']}: ownership is not carried (files "
                 "belong to root; jobs run as the submitting user)")
    *sources, dest = paths
    as_dir = dest.endswith(("/", "/.")) or dest == "."
    dest = posixpath.normpath(posixpath.join(imp.workdir, dest))
    dest = dest.rstrip("/") + "/" if as_dir else dest
    if (len(sources) > 1 or any(c in "".join(sources) for c in _WILD)) and not dest.endswith("/"):
        dest += "/"
    ignore = Ignore.for_recipe(imp.recipe)
    for src in sources:
        _copy_one(imp, inst, src, dest, flags.get("chmod"), ignore)


def _copy_one(imp: DockerImporter, inst: Instruction, src: str, dest: str, chmod: Optional[str],
              ignore: Ignore) -> None:
    out = imp.out
    shown = one_line(f"{inst.keyword} {src} {dest}")
    if "://" in src or src.startswith("git@"):
        out.drop(shown, "ADD of a URL: download it in a build step (curl/wget) or put the file "
                 "next to the recipe")
        return
    rel = posixpath.normpath(src.lstrip("/")) if src.strip("/") else "."
    if rel == ".." or rel.startswith("../"):
        out.drop(shown, "outside the build context")
        return
    matches = imp.sources(rel)
    root = imp.directory
    if ignore and matches:
        kept = [m for m in matches if m == root or not ignore.excluded(_rel(root, m))
                or (m.is_dir() and ignore.may_include_below(_rel(root, m)))]
        if not kept:
            out.drop(shown, f"excluded by {ignore.source.name if ignore.source else '.dockerignore'}: "
                     "not in the build context")
            return
        matches = kept
    if not matches:
        out.drop(shown, "not found in the build context (taken to be the recipe's directory)")
        return
    if any(c in rel for c in _WILD):
        whole = _whole_directory(root, rel, matches, ignore)
        if whole is not None:
            matches, dest = [whole], dest.rstrip("/") or "/"
        elif len(matches) > 1 or matches[0].is_dir():
            out.note(f"{shown}: the wildcard is expanded now, into {len(matches)} entr"
                     f"{'y' if len(matches) == 1 else 'ies'} (Docker reads the context when it builds: "
                     "import again when files are added)")
    left: List[str] = []
    if dest.startswith(_APT_CONFIG):
        imp.rules.repo_added = True   # an apt source or key: the installs after it are from there
    for source in matches:
        if len(matches) > 1:
            shown = one_line(f"{inst.keyword} {_rel(root, source) or '.'} {dest}")
        if inst.keyword == "ADD" and source.is_file() and tarfile.is_tarfile(source):
            out.drop(shown, "ADD of a tar archive: Docker unpacks it, stardock copies files as "
                     "they are; unpack it next to the recipe, or in a build step")
            continue
        taken, excluded = plan_copy(root, source, ignore)
        left += excluded
        for path, sub in taken:
            target = dest if not sub else posixpath.join(dest.rstrip("/") or "/", sub)
            if out.add_file(path, target, shown) and chmod:
                placed = target + path.name if target.endswith("/") and path.is_file() else target
                out.add_shell([f"chmod {'-R ' if path.is_dir() else ''}{shlex.quote(chmod)} {shlex.quote(placed)}"],
                              imp._state())
    if left:
        listed = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        out.note(f"{shown}: {ignore.source.name if ignore.source else '.dockerignore'} leaves out {listed}: "
                 "not copied, as under Docker")


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else ""


def _whole_directory(root: Path, pattern: str, matches: List[Path], ignore: Ignore) -> Optional[Path]:
    """The directory `dir/*` names when it takes all of its entries (those .dockerignore keeps)
    and they are all files: a copy of the directory then means the same."""
    parent, _, name = pattern.rpartition("/")
    if name != "*" or any(c in parent for c in _WILD):
        return None
    directory = root / parent if parent and parent != "." else root
    if not directory.is_dir():
        return None
    entries: Dict[Path, bool] = {p: p.is_dir() for p in directory.iterdir()
                                 if not (ignore and ignore.excluded(_rel(root, p)))}
    if set(entries) != set(matches) or any(entries.values()):
        return None
    return directory
