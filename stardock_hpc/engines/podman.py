"""Rootless Podman: build with `podman build`, keep an OCI archive as the portable artifact."""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence, Set

from stardock_hpc import proc, proctree, safefs
from stardock_hpc.engines import podman_userns as userns
from stardock_hpc.engines.base import Engine, ImageRef, Mount, OnLine, RunOptions
from stardock_hpc.engines.podman_locks import use_file_locks
from stardock_hpc.errors import ExternalError
from stardock_hpc.ociarchive import identity
from stardock_hpc.site import BaseImage, base_reference

RUN_FORM = "image.sqfs"
NODE_STORAGE = "STARDOCK_NODE_STORAGE"  # set by a job's wrapper: the user's node storage (jobs/nodestore.py)


def podman(storage: Optional[str] = None) -> list:
    """podman, with the store a job's wrapper chose (graph root and run root in the user's node
    storage; explicit flags, which rootless Podman never overrides with the user's own config), in
    the wrapper's own user namespace once it made one (engines/podman_userns.py)."""
    root = storage or os.environ.get(NODE_STORAGE)
    joined = [*userns.nsenter(), *userns.rootless_env()] if userns.entered() else []
    if not root:
        return [*joined, "podman"]
    return [*joined, "podman", "--root", f"{root}/podman/storage", "--runroot", f"{root}/podman/run"]


STEP_ID_RE = re.compile(r"--> (?:Using cache )?([0-9a-f]{11,64})$")


class PodmanEngine(Engine):
    name = "podman"
    binary = "podman"
    artifact_name = "image.oci.tar"

    def _image_id(self, ref: str) -> Optional[str]:
        use_file_locks()  # before any Podman command: no fixed name in /dev/shm (podman_locks.py)
        out = proc.run([*podman(), "image", "inspect", "--format", "{{.Id}}", ref], check=False)
        return out.stdout.strip() if out.ok else None

    def _load(self, archive: Path, expected_id: str, tag: str, timeout: Optional[float] = None) -> None:
        if self._image_id(tag) == expected_id:
            return
        if self._image_id(expected_id) is None:
            proc.run([*podman(), "load", "-q", "-i", archive], timeout=timeout)
        proc.run([*podman(), "tag", expected_id, tag], timeout=timeout)

    def prepare_base(self, base: BaseImage, on_line: OnLine = None, *, timeout: Optional[float] = None) -> None:
        if base.archive is None:
            return  # a registry reference: podman build pulls it
        ident = identity(base.archive)
        self._load(base.archive, ident.config_digest.split(":", 1)[1], base_reference(base), timeout)

    def build(self, context: Path, tag: str, out_dir: Path, on_line: OnLine = None, *,
              timeout: Optional[float] = None, secrets: Optional[Mapping[str, Path]] = None) -> Path:
        """podman build, then the OCI archive. Its temporary files (buildah's, podman save's) go to a
        private directory removed afterwards; a build that fails or is stopped also loses the
        working containers it left (podman removes them itself only when it finishes a step)."""
        use_file_locks()
        deadline = None if timeout is None else time.monotonic() + timeout
        before = set(_working_containers())
        ours: Set[str] = set()

        def line(text: str) -> None:
            m = STEP_ID_RE.match(text.strip())
            if m:
                ours.add(m.group(1))
            if on_line:
                on_line(text)

        with private_tmpdir("stardock-podman-", os.environ.get("TMPDIR") or "/var/tmp", _remove_private_tmp) as tmpdir:
            env = dict(os.environ, TMPDIR=str(tmpdir))
            # a secret's file by its path (RUN --mount=type=secret,id=ID reads it), never its value
            given = [f"--secret=id={sid},src={path}" for sid, path in sorted((secrets or {}).items())]
            return self._build(context, tag, out_dir, env, line, timeout, deadline, before, ours, given)

    def _build(self, context: Path, tag: str, out_dir: Path, env: Dict[str, str], line: Callable[[str], None],
               timeout: Optional[float], deadline: Optional[float], before: Set[str], ours: Set[str],
               secrets: Sequence[str] = ()) -> Path:
        try:
            result = proc.run(["podman", "build", "--pull=never", "--layers", "--force-rm", *secrets, "--tag", tag,
                               "--file", context / "Containerfile", context],
                              check=False, env=env, on_line=line, timeout=timeout)
            if not result.ok:
                raise BuildFailed("podman build", result.returncode, result.stdout)
            artifact = out_dir / self.artifact_name
            proc.run(["podman", "save", "--format", "oci-archive", "--output", artifact, tag], env=env,
                     timeout=None if deadline is None else max(1.0, deadline - time.monotonic()))
            return artifact
        except BaseException:
            if proctree.in_stoppable():
                proctree.stop_descendants()  # before its containers can be removed
            _remove_working_containers(before, ours)
            raise

    def make_run_form(self, artifact: Path, out_dir: Path, timeout: Optional[float] = None) -> Optional[Dict]:
        """image.sqfs: the image's root file system as one read-only squashfs (ocirootfs.py)."""
        from stardock_hpc import ocirootfs

        if not shutil.which("mksquashfs"):
            return None  # jobs load the archive instead (slower; doctor says so)
        with private_tmpdir("stardock-rootfs-", os.environ.get("TMPDIR") or "/var/tmp", _remove_private_tmp) as tmp:
            ocirootfs.squash(artifact, out_dir / RUN_FORM, tmp, proc.run, timeout)
        return {"name": RUN_FORM, "config": ocirootfs.image_config(artifact)}

    def image_for_entry(self, entry, tag: str) -> ImageRef:
        if entry.meta.get("run_form") == RUN_FORM:
            env = (entry.meta.get("image_config") or {}).get("Env") or []
            return ImageRef(self.name, tag, squashfs=str(entry.path / RUN_FORM), env=tuple(env))
        return self.image_for(entry.artifact, tag)

    def mount(self, image: ImageRef, mountpoint: Path) -> ImageRef:
        """squashfuse in the user namespace of this process's Podman commands (made here if it is not
        yet; engines/podman_userns.py), where the files, root's in the squashfs, are the user's;
        each container gets an overlay of its own on top (--rootfs DIR:O).

        The mount exists in that namespace's mount namespace only, which lives as long as this
        process (the job's wrapper, or a task's): the run is started in it, never in a namespace
        another job or step of the user made and Slurm may end at any moment (the user's pause
        process; a new namespace made then would lack the mount, and the container would start
        from an empty directory: "stat /run/podman-init: permission denied")."""
        if not image.squashfs:
            return image
        use_file_locks()
        userns.enter()
        mountpoint.mkdir(mode=0o700)
        proc.run([*userns.nsenter(), "squashfuse", "-o", "ro,allow_other", image.squashfs, str(mountpoint)],
                 timeout=120)
        return ImageRef(image.engine, image.ref, image.squashfs, str(mountpoint), image.env)

    def unmount(self, image: ImageRef) -> None:
        if image.rootfs and userns.entered():  # the squashfuse daemon ends with its mount
            proc.run([*userns.nsenter(), "umount", "-l", image.rootfs], check=False, timeout=60)

    def image_for(self, artifact: Path, tag: str) -> ImageRef:
        ident = identity(artifact)
        self._load(artifact, ident.config_digest.split(":", 1)[1], tag)
        return ImageRef(self.name, tag)

    def run_argv(self, image: ImageRef, command: Sequence[str], mounts: Sequence[Mount],
                 workdir: Optional[str], options: RunOptions) -> list:
        # no_new_privs: a setuid file in the image gains nothing (runc, not Podman, enforces it)
        # --init reaps and forwards signals as PID 1; in the node's PID namespace there is none
        pid = ["--pid=host"] if options.host_pid else ["--init"]
        argv = [*podman(options.storage), "run", "--rm", "--pull=never", *pid,
                f"--network={'host' if options.host_network else 'slirp4netns' if options.network else 'none'}",
                "--userns=keep-id",
                "--security-opt=no-new-privileges",
                # podman copies its own proxy variables (the login session's) into the container
                # by default: the job's variables come by descriptor (jobs/binds.py), as named
                "--http-proxy=false"]
        if options.uid is not None:
            argv.append(f"--user={options.uid}:{options.gid if options.gid is not None else options.uid}")
        if options.runtime:
            argv.append(f"--runtime={options.runtime}")
        if options.name:
            argv.append(f"--name={options.name}")
        if options.interactive:
            argv += ["--interactive", "--tty"]
        if options.pids:
            # RLIMIT_NPROC for the container's processes only (not podman's and conmon's): the
            # kernel counts the user's processes in the rootless user namespace of this node
            argv.append(f"--ulimit=nproc={options.pids}:{options.pids}")
        if options.preserve_fds:
            argv.append(f"--preserve-fds={options.preserve_fds}")
        for m in mounts:
            # -v splits on ':' only; --mount is CSV and would choke on a quote in a path
            argv += ["--volume", f"{m.host}:{m.target}:{'ro' if m.readonly else 'rw'}"]
        if workdir:
            argv += ["--workdir", workdir]
        if image.rootfs:  # the image's own variables come with the job's (ImageRef.env)
            return argv + ["--rootfs", f"{image.rootfs}:O", *command]
        return argv + [image.ref, *command]

    def remove_run(self, name: str) -> bool:
        # `podman run --rm` removes the container itself unless it was interrupted
        use_file_locks()
        out = proc.run([*podman(), "rm", "--force", "--ignore", name], check=False)
        return out.ok


class BuildFailed(ExternalError):
    def __init__(self, what: str, code: int, output: str) -> None:
        lines = [line for line in output.splitlines() if line.strip()]
        # what the build script itself said went wrong (a failed step, a locked version missing)
        failed = [line for line in lines if line.startswith(("stardock: build step failed", "stardock: the locked"))]
        detail = "\n".join(lines[-15:])
        message = f"{what} failed (exit {code})"
        if failed:
            message += f": {failed[-1][len('stardock: '):]}"
        super().__init__(f"{message}\nlast lines of the build:\n{detail}")
        self.output = output


def _working_containers() -> Dict[str, Dict]:
    """Buildah's working containers (status Storage) in the user's store, by id."""
    out = proc.run(["podman", "ps", "--all", "--external", "--format", "json"], check=False, timeout=60)
    try:
        rows = json.loads(out.stdout or "[]") if out.ok else []
    except ValueError:
        return {}
    return {r["Id"]: r for r in rows if isinstance(r, dict) and str(r.get("Status", "")).lower() == "storage"
            and isinstance(r.get("Id"), str)}


def _other_builds() -> bool:
    """Whether another `podman build` of this user runs (ours was stopped before this is asked)."""
    uid = os.getuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"podman" and b"build" in argv[1:4]:
            return True
    return False


def _remove_working_containers(before: Set[str], ours: Set[str]) -> None:
    """Remove the working containers that appeared during this build. When another build of the
    user runs at the same time, only those made from this build's own intermediate images (named
    after them, or based on them) are removed: the others may be that build's."""
    new = {cid: row for cid, row in _working_containers().items() if cid not in before}
    if new and _other_builds():
        new = {cid: row for cid, row in new.items()
               if any(str(row.get("ImageID", "")).startswith(i) or
                      any(str(n).startswith(i[:12]) for n in row.get("Names") or []) for i in ours)}
    if new:
        proc.run(["podman", "rm", "--force", *sorted(new)], check=False, timeout=120)


def _remove_private_tmp(path: Path) -> None:
    """Buildah leaves files of subordinate ids there when stopped: those need `podman unshare`."""
    try:
        safefs.remove_tree(path)
    except OSError:
        proc.run(["podman", "unshare", "rm", "-rf", "--", path], check=False, timeout=300)
        try:
            safefs.remove_tree(path)
        except OSError:
            pass


LOCK = ".stardock.lock"


@contextmanager
def private_tmpdir(prefix: str, parent: str, remove: Callable[[Path], None]) -> Iterator[Path]:
    """A private temporary directory for one build, locked while in use and removed after it.
    Those of earlier builds of ours killed too hard to clean up (SIGKILL) go first."""
    _sweep_stale(Path(parent), prefix, remove)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        remove(path)
        os.close(fd)


def _sweep_stale(parent: Path, prefix: str, remove: Callable[[Path], None]) -> None:
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        path = parent / name
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            fd: Optional[int] = os.open(path / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            if time.time() - st.st_mtime < 3600:
                continue  # just made: its lock comes next
            fd = None
        except OSError:
            continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            remove(path)
        except BlockingIOError:
            pass  # a build of ours is using it
        finally:
            if fd is not None:
                os.close(fd)
