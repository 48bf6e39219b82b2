"""Binds checked on the node and proven in the container: what is checked is what is bound.

The wrapper opens every bind source (a volume's sub-path, the job's output directory, the batch
script) one component at a time without following any link below its starting point, and holds
each open (O_PATH) while the container starts. Engines bind by path, and a path can be swapped
between that check and the engine's mount, so the container's first process compares each bind
target with the descriptor held for it (`[ TARGET -ef /proc/self/fd/N ]`: same device and inode)
before anything of the user's runs, closes the descriptors and only then executes the job. A
swapped path is refused, never followed.

Descriptors travel as 3, 4, ...: Podman passes exactly those (`--preserve-fds=N`); Apptainer
passes inherited descriptors as they are. The check runs in /bin/bash (Essential in Debian, the
only base family): dash cannot close descriptors above 9.
"""
from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from stardock_hpc.engines.base import Mount
from stardock_hpc.errors import StardockError
from stardock_hpc.jobs.mounts import VolumeMount, unsafe_in
from stardock_hpc.safefs import is_name

FIRST_FD = 3
PREFLIGHT = r"""if [ -n "${STARDOCK_PATH_PREFIX:-}" ]; then
    PATH="$STARDOCK_PATH_PREFIX${PATH:+:$PATH}"
    export PATH
fi
unset STARDOCK_PATH_PREFIX
fd=3
while [ "$1" != -- ]; do
    if ! [ "$1" -ef "/proc/self/fd/$fd" ]; then
        printf 'stardock: refusing to run: %s is not what was checked on the host (%s)\n' "$1" \
            'it was replaced as the job started' >&2
        exit 126
    fi
    eval "exec $fd>&-"
    fd=$((fd + 1))
    shift
done
shift
exec "$@"
"""


class BindError(StardockError):
    """A bind source is not what the job may bind (a link, gone, a name engines would split)."""


@dataclass(frozen=True)
class Held:
    mount: Mount
    fd: int


def open_beneath(root: Path, sub: str, what: str) -> int:
    """An O_PATH descriptor for root/sub, following no link below root: each component must be a
    real directory, the last a directory or a regular file."""
    try:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise BindError(f"{what}: cannot open {root}: {exc.strerror}") from None
    parts = [p for p in sub.split("/") if p] if sub else []
    try:
        for i, part in enumerate(parts):
            here = root.joinpath(*parts[:i + 1])
            if not is_name(part):
                raise BindError(f"{what}: {here}: {part!r} is not a plain name")
            try:
                nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise BindError(f"{what}: {here}: {exc.strerror}") from None
            os.close(fd)
            fd = nxt
            mode = os.fstat(fd).st_mode
            last = i == len(parts) - 1
            if stat.S_ISLNK(mode):
                raise BindError(f"{what}: {here} is now a symbolic link (it was not when the job was "
                                "submitted): links are never followed at job start; not running")
            if not (stat.S_ISDIR(mode) or (last and stat.S_ISREG(mode))):
                raise BindError(f"{what}: {here} is no longer a directory; not running")
        return fd
    except BaseException:
        os.close(fd)
        raise


def hold(mount: Mount, root: Path, sub: str, what: str) -> Held:
    bad = unsafe_in(str(mount.host))
    if bad:
        raise BindError(f"{what}: {mount.host} holds {bad!r}, on which container engines split bind "
                        "specifications; it cannot be bound")
    return Held(mount, open_beneath(root, sub, what))


def hold_volume(m: VolumeMount) -> Held:
    return hold(m.mount(), m.root, m.sub, f"volume mount {m.target}")


def hold_path(path: Path, target: str, readonly: bool, what: str) -> Held:
    """A bind source in a directory only the user can change (the job's own files)."""
    return hold(Mount(path, target, readonly), path.parent, path.name, what)


class Handover:
    """The held descriptors given to the engine as 3, 4, ... (Podman's --preserve-fds passes
    exactly those): renumbered in the child, between fork and exec (preexec). Until then free
    numbers in that range are reserved here, so the pipes Popen makes cannot take them."""

    def __init__(self, held: Sequence[Held], extra: Sequence[int] = ()) -> None:
        """extra: descriptors passed on after the held ones, unchecked (a task's PMI_FD)."""
        self.mounts = [h.mount for h in held]
        self._highs = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in [h.fd for h in held] + list(extra)]
        release(held)
        self.extra_fds = tuple(range(FIRST_FD + len(held), FIRST_FD + len(self._highs)))
        self._reserved: List[int] = []
        for i, high in enumerate(self._highs):
            if not _is_open(FIRST_FD + i):
                os.dup2(high, FIRST_FD + i, inheritable=False)
                self._reserved.append(FIRST_FD + i)
        self.pass_fds = tuple(range(FIRST_FD, FIRST_FD + len(self._highs)))

    def in_child(self) -> None:
        for i, high in enumerate(self._highs):
            os.dup2(high, FIRST_FD + i)

    def close(self) -> None:
        for fd in self._highs + self._reserved:
            try:
                os.close(fd)
            except OSError:
                pass
        self._highs, self._reserved = [], []


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
        return True
    except OSError:
        return False


def release(held: Sequence[Held]) -> None:
    for h in held:
        try:
            os.close(h.fd)
        except OSError:
            pass


def checked_command(mounts: Sequence[Mount], command: Sequence[str]) -> List[str]:
    """command, run only once every bind target is proven to be the descriptor held for it (the
    Handover's order)."""
    return ["/bin/bash", "-c", PREFLIGHT, "stardock-preflight", *(m.target for m in mounts), "--", *command]
