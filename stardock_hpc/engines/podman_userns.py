"""A rootless user namespace of this process's own for its Podman commands, never the user's pause process.

Rootless Podman runs in a user namespace (the user as root, then the user's subordinate ids) that
the user's first Podman command on a machine makes and leaves to a pause process; every later
command joins it through that process's pid file (its "tmp dir": the runtime directory). On a
compute node that process is in the cgroup of whichever job or step of the user started it, and
Slurm kills it when that job or step ends, at a moment no other job controls. The next Podman
command may find the pid file naming a process that is dying: seen on the testbed as a zombie
for seconds (init reaps orphans late), which Podman cannot join; it then removes the pid file,
tries the conmon of each container its database calls running (a killed job's, long dead) and
fails ("invalid internal status, try resetting the pause process ...: could not find any
running process"). A namespace made afresh would not hold what the old one did (a squashfs mount).

So a job's wrapper (each task of a step too) makes its own: `unshare --user --mount` mapped as
Podman maps its own (0 the user, 1... the subordinate ranges, lowest first; newuidmap and
newgidmap, the setuid helpers Podman itself uses), and keeps the two namespaces open by
descriptor, for exactly as long as the wrapper lives, however it ends (no process holds them:
none to be stopped, killed or mistaken for another by its number). Each Podman command of the
wrapper enters them with nsenter and _CONTAINERS_USERNS_CONFIGURED, as Podman's own conmon and
cleanup processes are started: Podman then neither joins nor starts a pause process, nor looks for
one among the containers of other jobs. What jobs share stays on disk, as before: the node
storage's images, database and lock files (engines/podman_locks.py). Mounts are the namespace's:
a squashfs is mounted for each run, in the run's namespace (engines/podman.py).

`python -m stardock_hpc.engines.podman_userns PROGRAM [ARGS...]` runs a program (podman) the same way.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from stardock_hpc import proc
from stardock_hpc.errors import ExternalError

SUBUID, SUBGID = Path("/etc/subuid"), Path("/etc/subgid")
MAX_MAP_READ = 1 << 20

_held: Optional[Tuple[int, int]] = None  # this process's own user and mount namespaces, by descriptor


def subordinate(path: Path, user: str, uid: int) -> List[Tuple[int, int]]:
    """The (start, count) ranges path (/etc/subuid or /etc/subgid) gives the user, by name or
    number, lowest first (the order Podman maps them in)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_MAP_READ).decode("utf-8", "replace")
    except OSError:
        return []
    ranges = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            ranges.append((start, count))
    return sorted(ranges)


def id_map(own: int, ranges: Sequence[Tuple[int, int]]) -> List[str]:
    """newuidmap's (newgidmap's) triples after the pid: own id as 0, the ranges from 1 on."""
    args, inner = ["0", str(own), "1"], 1
    for start, count in ranges:
        args += [str(inner), str(start), str(count)]
        inner += count
    return args


def enter() -> None:
    """Make this process's own namespaces, once; every Podman command after it runs there."""
    global _held
    if _held is None:
        _held = _make()


def leave() -> None:
    """Let this process's namespaces go (they end with the last process in them)."""
    global _held
    if _held is not None:
        for fd in _held:
            os.close(fd)
        _held = None


def entered() -> bool:
    return _held is not None


def nsenter() -> List[str]:
    """The head of an argv that runs the rest in this process's namespaces, as their root (the
    user's own credentials): through this process's descriptors, which only the user may open
    (nsenter is our child, or this very process after main()'s exec)."""
    if _held is None:
        return []
    me, (user, mount) = os.getpid(), _held
    return ["nsenter", f"--user=/proc/{me}/fd/{user}", f"--mount=/proc/{me}/fd/{mount}",
            "--preserve-credentials", "--"]


def rootless_env() -> List[str]:
    """Podman started in its namespace takes it as it is, and needs the user's own ids."""
    return ["env", "_CONTAINERS_USERNS_CONFIGURED=done", f"_CONTAINERS_ROOTLESS_UID={os.getuid()}",
            f"_CONTAINERS_ROOTLESS_GID={os.getgid()}"]


def _make() -> Tuple[int, int]:
    """unshare runs cat in the new namespaces: it echoes one byte once they exist, then they are
    mapped and opened here, and cat ends with its input."""
    child = proc.spawn(["unshare", "--user", "--mount", "--propagation", "unchanged", "cat"], pipes=True,
                       stderr=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    try:
        try:
            child.stdin.write(b"\n")
            child.stdin.flush()
        except BrokenPipeError:
            pass
        if child.stdout.read(1) != b"\n":
            raise ExternalError("cannot make a user namespace for Podman (unshare --user --mount): "
                                + child.stderr.read(4096).decode("utf-8", "replace").strip())
        if _ns(child.pid, "user") == _ns(os.getpid(), "user"):
            raise ExternalError("unshare --user made no user namespace for Podman")
        _map(child.pid)
        fds = (os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC),
               os.open(f"/proc/{child.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC))
        return fds
    finally:
        child.stdin.close()
        child.stdout.close()
        child.stderr.close()
        child.wait()


def _ns(pid: int, kind: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError as exc:
        raise ExternalError(f"cannot read the namespace of the process making Podman's: {exc.strerror}") from None


def _map(pid: int) -> None:
    """As Podman maps its namespace: with newuidmap and newgidmap where the user has subordinate
    ids in both files, else only the user (Podman warns then that some images will not run)."""
    user = pwd.getpwuid(os.getuid()).pw_name
    uids, gids = subordinate(SUBUID, user, os.getuid()), subordinate(SUBGID, user, os.getuid())
    if uids and gids:
        for tool, own, ranges in (("newuidmap", os.getuid(), uids), ("newgidmap", os.getgid(), gids)):
            out = proc.run([tool, str(pid), *id_map(own, ranges)], check=False, timeout=60)
            if not out.ok:
                raise ExternalError(f"{tool} failed for Podman's user namespace: {out.tail(3)}")
        return
    try:
        for name, text in (("uid_map", f"0 {os.getuid()} 1\n"), ("setgroups", "deny\n"),
                           ("gid_map", f"0 {os.getgid()} 1\n")):
            with open(f"/proc/{pid}/{name}", "w") as fh:
                fh.write(text)
    except OSError as exc:
        raise ExternalError(f"cannot map Podman's user namespace: {exc.strerror}") from None


def main(argv: Optional[List[str]] = None) -> None:
    """Run argv in namespaces of its own (exec: the descriptors stay open in it, and so do they)."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m stardock_hpc.engines.podman_userns PROGRAM [ARGS...]", file=sys.stderr)
        sys.exit(2)
    try:
        enter()
    except ExternalError as exc:
        print(f"stardock: error: {exc}", file=sys.stderr)
        sys.exit(1)
    assert _held is not None
    for fd in _held:
        os.set_inheritable(fd, True)
    os.execvp("nsenter", [*nsenter(), *rootless_env(), *args])


if __name__ == "__main__":  # pragma: no cover
    main()
