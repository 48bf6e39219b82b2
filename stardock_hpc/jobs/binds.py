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

The container's environment travels the same way, never on a command line (everybody on the node
reads every process's command line, `ps`): a private memory file of NAME=VALUE records, the last
descriptor, from which the preflight sets each variable literally (no expansion of any value)
before it runs the job. The preflight is bash -p: bash then reads no startup file ($BASH_ENV,
$ENV), imports no function and ignores $SHELLOPTS and $BASHOPTS of the environment it starts
with, which is the image's: nothing of the image runs before the checks. Nor does it run before
the job's first line: the image's startup files are unset unless the job names them, its shell
options are not passed on, and its exported functions are removed (env -u, by name) before a
bash job script could import them.
"""
from __future__ import annotations

import fcntl
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from stardock_hpc.engines.base import Mount
from stardock_hpc.errors import StardockError
from stardock_hpc.jobs.mounts import VolumeMount, unsafe_in
from stardock_hpc.safefs import is_name

FIRST_FD = 3
PREFLIGHT = r"""environment=$1
shift
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
if ! mapfile -d '' -u "$environment" stardock_env; then
    printf 'stardock: refusing to run: the job'"'"'s environment did not reach the container\n' >&2
    exit 126
fi
eval "exec $environment<&-"
strip=()
if mapfile -d '' initial </proc/self/environ; then
    for kv in "${initial[@]}"; do
        case $kv in BASH_FUNC_*=*) strip+=(-u "${kv%%=*}") ;; esac
    done
fi
if [ "${#strip[@]}" -gt 0 ]; then
    set -- /usr/bin/env "${strip[@]}" -- "$@"
fi
unset -v fd environment strip initial kv BASH_ENV ENV
export -n SHELLOPTS BASHOPTS
stardock_environment() {
    unset -v stardock_env
    while [ "$#" -gt 0 ]; do
        command export -- "$1" || printf 'stardock: warning: %s was not set in the container\n' "${1%%=*}" >&2
        shift
    done
}
stardock_environment "${stardock_env[@]}"
unset -f stardock_environment
if [ -n "${STARDOCK_PATH_PREFIX:-}" ]; then
    PATH="$STARDOCK_PATH_PREFIX${PATH:+:$PATH}"
    export PATH
fi
unset -v STARDOCK_PATH_PREFIX
exec "$@"
"""
# Shells source these before a command: the image's never run in stardock's shells, and reach the
# job only when it names them (PREFLIGHT unsets them before setting the job's variables). The
# job's own shells would also take options and functions from the environment: PREFLIGHT passes
# on neither the image's $SHELLOPTS/$BASHOPTS nor its BASH_FUNC_* functions.
STARTUP_FILES = ("BASH_ENV", "ENV")
# Names bash sets or keeps itself, so that a value given for them would not arrive as given (bash
# 5.2, Debian 12's; tests/unit/test_binds.py measures them). `_` and SHLVL it sets for every
# program it starts, as it would without a container: dropped without a word.
SHELL_OWN = frozenset({
    "UID", "EUID", "PPID", "BASHPID", "SHELLOPTS", "BASHOPTS", "BASH_VERSINFO", "GROUPS", "FUNCNAME",
    "DIRSTACK", "BASH_ALIASES", "BASH_CMDS", "BASH_ARGC", "BASH_ARGV", "BASH_LINENO", "BASH_SOURCE",
    "BASH_SUBSHELL", "BASH_COMMAND", "PIPESTATUS", "RANDOM", "SRANDOM", "SECONDS", "LINENO", "HISTCMD",
    "EPOCHSECONDS", "EPOCHREALTIME", "OPTIND", "_", "SHLVL"})
SILENT = frozenset({"_", "SHLVL"})
SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def passable(env: Mapping[str, str]) -> Tuple[Dict[str, str], List[str]]:
    """The variables the preflight can set exactly as given, and the names of the others (not
    names bash can set: `A.B`, an exported function's `BASH_FUNC_f%%`; bash's own; a value with a
    NUL, which no environment can hold), except those bash sets for every program anyway."""
    ok: Dict[str, str] = {}
    refused: List[str] = []
    for name, value in env.items():
        if SHELL_NAME.fullmatch(name) and name not in SHELL_OWN and "\0" not in value:
            ok[name] = value
        elif name not in SILENT:
            refused.append(name)
    return ok, refused


def image_defaults(pairs: Sequence[str]) -> Dict[str, str]:
    """The image's own variables (NAME=VALUE) that an engine does not set itself (a --rootfs run),
    without its startup files."""
    out: Dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if eq and name not in STARTUP_FILES:
            out[name] = value
    return out


def environment_file(env: Mapping[str, str]) -> int:
    """A private memory file holding env as NAME=VALUE records, each ended by a NUL, read from its
    start: what PREFLIGHT reads (no size limit of its own: the kernel's, at the job's exec)."""
    fd = os.memfd_create("stardock-environment", os.MFD_CLOEXEC)
    try:
        data = memoryview(b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in env.items()))
        while data:
            data = data[os.write(fd, data):]
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    except BaseException:
        os.close(fd)
        raise


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
    exactly those), then the extra ones, then the container's environment (add_environment):
    renumbered in the child, between fork and exec (preexec). Until then free numbers in that
    range are reserved here, so the pipes Popen makes cannot take them."""

    def __init__(self, held: Sequence[Held], extra: Sequence[int] = ()) -> None:
        """extra: descriptors passed on after the held ones, unchecked (a task's PMI_FD)."""
        self.mounts = [h.mount for h in held]
        self._highs = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in [h.fd for h in held] + list(extra)]
        release(held)  # before reserving: their numbers may be among the slots
        self.extra_fds = tuple(range(FIRST_FD + len(held), FIRST_FD + len(self._highs)))
        self._reserved: List[int] = []
        for i in range(len(self._highs)):
            self._reserve(i)
        self.environment_fd: Optional[int] = None

    def _reserve(self, i: int) -> None:
        slot = FIRST_FD + i
        if not _is_open(slot):
            os.dup2(self._highs[i], slot, inheritable=False)
            self._reserved.append(slot)

    def add_environment(self, env: Mapping[str, str]) -> int:
        """Pass env on as the last descriptor (environment_file); its number in the container."""
        fd = environment_file(env)
        try:
            self._highs.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100))
        finally:
            os.close(fd)
        self._reserve(len(self._highs) - 1)
        self.environment_fd = FIRST_FD + len(self._highs) - 1
        return self.environment_fd

    @property
    def pass_fds(self) -> Tuple[int, ...]:
        return tuple(range(FIRST_FD, FIRST_FD + len(self._highs)))

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


def checked_command(mounts: Sequence[Mount], environment_fd: int, command: Sequence[str]) -> List[str]:
    """command, run only once every bind target is proven to be the descriptor held for it (the
    Handover's order), with the environment read from environment_fd (Handover.add_environment)."""
    return ["/bin/bash", "-p", "-c", PREFLIGHT, "stardock-preflight", str(environment_fd),
            *(m.target for m in mounts), "--", *command]
