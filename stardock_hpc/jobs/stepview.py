"""Files a step names, in the container's own view: found on the host without following links.

A step asked for from inside a job's container (jobs/steps.py) may name files: srun's --output,
--error and --input, its --multi-prog file, a node list file. They are the container's paths, and
the container shares with the host only its output directory and its volumes; a path anywhere else
(in the image, $HOME, /tmp, a host path) names nothing the host may open for it. And what the
container shares it can also fill with links (`out.txt -> ~/.bashrc`), at any moment. So a file is
reached from the shared directory's root one component at a time with O_NOFOLLOW (safefs), and
opened by stardock itself, never handed to Slurm as a path: srun's files by each task's wrapper
before its container starts (open_streams), the others read once when the step is asked for.
"""
from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import pwd
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.safefs import Unsafe, is_name, open_beneath, opened, read_regular
from stardock_hpc.slurm import srun as srun_cli

MAX_FILE = 1 << 20  # bytes of a --multi-prog or node list file


@dataclass(frozen=True)
class Place:
    """A directory the container shares with the host: where it sees it, and its host root and
    the sub-path below (walked without links)."""

    target: str
    root: Path
    parts: Tuple[str, ...]
    readonly: bool


def view(launch: Launch, output: str) -> List[Place]:
    """What the job's container shares with the host: its output directory and its volumes."""
    places = [Place(f"{launch.mount_root}/output", Path(output), (), False)]
    for m in launch.mounts:
        places.append(Place(m.target, m.root, tuple(p for p in m.sub.split("/") if p), m.readonly))
    return places


def absolute(path: str, base: str) -> str:
    """A container path made absolute against base and normalized as text (no link is followed
    later, so '..' means what it says)."""
    full = posixpath.normpath(posixpath.join(base, path))
    return "/" + full.lstrip("/")


def place_of(places: Sequence[Place], full: str) -> Optional[Place]:
    for place in sorted(places, key=lambda p: -len(p.target)):
        if full == place.target or full.startswith(place.target.rstrip("/") + "/"):
            return place
    return None


def shared(places: Sequence[Place], writable: bool) -> str:
    names = [p.target for p in places if not (writable and p.readonly)]
    return ", ".join(names)


def in_view(places: Sequence[Place], path: str, base: str, writable: bool, what: str) -> Tuple[str, Place]:
    """The container path of a file the step names, if the container shares it with the host
    (writable: on a directory the container may write); else a clear refusal."""
    full = absolute(path, base)
    place = place_of(places, full)
    if place is None:
        raise UsageError(f"{what} {path!r} is refused: it is {full} in the container, which the node does not see; "
                         f"only the job's output directory and volumes are shared ({shared(places, writable)}): "
                         "put the file there")
    if writable and place.readonly:
        raise UsageError(f"{what} {path!r} is refused: {place.target} is a read-only volume; "
                         f"write to {shared(places, True)}")
    if full == place.target:
        raise UsageError(f"{what} {path!r} is refused: it is the directory {full} itself, not a file in it")
    return full, place


def _below(place: Place, full: str) -> List[str]:
    return full[len(place.target):].strip("/").split("/")


def read_in_view(places: Sequence[Place], path: str, base: str, what: str) -> bytes:
    """A file the step names (a --multi-prog or node list file), read now on the host: a regular
    file, reached without following links, at most MAX_FILE bytes."""
    full, place = in_view(places, path, base, False, what)
    rel = _below(place, full)
    try:
        with opened(open_beneath(place.root, [*place.parts, *rel[:-1]])) as dfd:
            return read_regular(dfd, rel[-1], MAX_FILE)
    except Unsafe as exc:
        raise UsageError(f"{what} {path!r} is refused: {full}, or a directory on its way, {exc.why} "
                         "(links are not followed)") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path!r}: {exc.strerror}") from None


def task_values(environ: Mapping[str, str]) -> Dict[str, str]:
    """What srun's filename patterns stand for in this task (slurm/srun.py expand)."""
    job = environ.get("SLURM_JOB_ID", "")
    step = environ.get("SLURM_STEP_ID", "")
    return {"A": environ.get("SLURM_ARRAY_JOB_ID", job), "a": environ.get("SLURM_ARRAY_TASK_ID", "4294967294"),
            "J": f"{job}.{step}", "j": job, "s": step, "t": environ.get("SLURM_PROCID", ""),
            "n": environ.get("SLURM_NODEID", ""),
            "N": environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0],
            "u": pwd.getpwuid(os.getuid()).pw_name, "x": environ.get("SLURM_JOB_NAME", "")}


def truncates(pattern: str, environ: Mapping[str, str], open_mode: Optional[str]) -> bool:
    """Whether this task empties the file first (srun's default, --open-mode=truncate): each file
    once, by the one task that owns it (%t), the node's first (%n, %N) or the step's first; the
    others append, so that no task empties what another already wrote."""
    if (open_mode or "truncate").lower().startswith("a"):
        return False
    letters = {m.group(2) for m in srun_cli.PATTERN.finditer(pattern)}
    if "t" in letters:
        return True
    if letters & {"n", "N"}:
        return environ.get("SLURM_LOCALID", "0") == "0"
    return environ.get("SLURM_PROCID", "0") == "0"


def open_task_file(places: Sequence[Place], pattern: str, environ: Mapping[str, str], write: bool,
                   truncate: bool) -> int:
    """A task's --output/--error (write) or --input file: the pattern expanded for this task,
    reached without following any link, a regular file (created 0600 when writing)."""
    place = place_of(places, pattern)
    if place is None or (write and place.readonly):
        raise StardockError(f"{pattern} is not on a directory the job may write")
    values = task_values(environ)
    rel = [srun_cli.expand(part, values) for part in _below(place, pattern)]
    for part in rel:
        if not is_name(part):
            raise StardockError(f"{pattern} gives the name {part!r} in this task, which is not a plain file name")
    target = "/".join([place.target, *rel])
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    flags |= (os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)) if write else os.O_RDONLY
    try:
        with opened(open_beneath(place.root, [*place.parts, *rel[:-1]])) as dfd:
            fd = os.open(rel[-1], flags, 0o600, dir_fd=dfd)
    except Unsafe as exc:
        raise StardockError(f"{target}: a directory on its way {exc.why} (links are not followed)") from None
    except OSError as exc:
        why = "it is a symbolic link (links are not followed)" if exc.errno == errno.ELOOP else exc.strerror
        raise StardockError(f"cannot open {target}: {why}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StardockError(f"{target} is not a regular file")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd
