"""The node side of a job: run the batch script in the container, rootless and accounted.

Started by the job script (wrappers/stardock-node) with the launch (the job spec) on standard input:
  * becomes a child subreaper, so conmon, catatonit and anything else the engine double-forks
    stay its descendants: Slurm's jobacct_gather/linux counts a task's descendants, and
    nothing escapes the cleanup at the end;
  * for Podman, runs runc through wrappers/stardock-runc, which makes the cgroup hierarchy
    read-only for runc: rootless runc then creates no child cgroup, and the container stays in
    the job's own cgroup, where --mem is enforced and an OOM kill is reported as such;
  * passes an explicit environment (Slurm's job variables, a few named ones), never the login
    session's; forwards SIGTERM/SIGINT/SIGUSR1/SIGUSR2/SIGHUP to the container;
  * marks its container while it runs, and removes containers that earlier jobs of the user on
    this node left when their wrapper died without cleaning up (jobs/runmarks.py);
  * writes the job record (start, end, exit status) atomically and exits with the script's status.
"""
from __future__ import annotations

import fcntl
import os
import pwd
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from stardock_hpc import proctree
from stardock_hpc.cache import Cache
from stardock_hpc.engines import get_engine
from stardock_hpc.engines.base import Engine, ImageRef, RunOptions
from stardock_hpc.errors import StardockError
from stardock_hpc.jobs.binds import Handover, Held, checked_command, hold_path, hold_volume, release
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.jobs.records import RecordStore
from stardock_hpc.jobs.runmarks import RunMarks
from stardock_hpc.jobs.userdirs import private_dir

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
SCRIPT_IN_CONTAINER = "/.stardock/job/script"
PASSED = ("LANG", "LC_ALL", "TZ", "TERM")


def log(msg: str) -> None:
    print(f"stardock: {msg}", file=sys.stderr, flush=True)


def become_subreaper() -> None:
    if not proctree.set_subreaper(True):
        log("warning: cannot become a child subreaper")


@dataclass(frozen=True)
class JobIds:
    """Who this job is, from Slurm's variables."""

    job: str                   # SLURM_JOB_ID
    record_id: str             # the records' directory: the array's job id for a task
    task: Optional[str]        # SLURM_ARRAY_TASK_ID
    label: str                 # 123, or 123_4 for an array task: names the output directory and container

    @classmethod
    def of(cls, environ: Dict[str, str]) -> JobIds:
        array_job, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
        job = environ.get("SLURM_JOB_ID", f"local-{os.getpid()}")
        return cls(job, array_job or job, task, f"{array_job}_{task}" if array_job and task else job)


def runtime_dir(uid: int) -> str:
    """Podman needs an XDG_RUNTIME_DIR the user owns; the login session's may not exist here."""
    standard = Path(f"/run/user/{uid}")
    try:
        if standard.is_dir() and standard.stat().st_uid == uid:
            forget_dead_pause_process(standard)
            return str(standard)
    except OSError:
        pass
    private = Path(tempfile.gettempdir()) / f"stardock-runtime-{uid}"
    try:
        private.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = private.lstat()
    if st.st_uid != uid or not stat.S_ISDIR(st.st_mode):
        # another user took the name (a directory or a link of theirs): one of our own, for this job
        log(f"warning: {private} is not a directory of yours; using a private one for this job")
        return tempfile.mkdtemp(prefix=f"stardock-runtime-{uid}-")
    os.chmod(private, 0o700)
    forget_earlier_boots(private)
    forget_dead_pause_process(private)
    return str(private)


PAUSE_DIR = ("libpod", "tmp")


def forget_dead_pause_process(runtime: Path) -> None:
    """Let Podman start a new pause process when the last one died with the job that made it.

    Rootless Podman keeps its user namespace open with a pause process, started by the user's
    first Podman command on the node, in that job's cgroup: when that job ends, Slurm kills it.
    Its "alive" marker stays, and every later Podman command of the user on the node fails
    ("invalid internal status ... could not find any running process"). Without a live pause
    process the marker is stale: removed, Podman makes a new namespace (with the same mappings)."""
    tmp = runtime.joinpath(*PAUSE_DIR)
    if not (tmp / "alive").exists():
        return
    try:
        lock = os.open(tmp / "alive.lck", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX)  # Podman holds it (a POSIX lock) while it sets the namespace up
        try:
            pid = int((tmp / "pause.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        if pid is not None and process_exists(pid):
            return
        for name in ("alive", "pause.pid"):
            try:
                (tmp / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log(f"warning: cannot clear Podman's stale state {tmp / name}: {exc.strerror}")
    finally:
        os.close(lock)


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
BOOT_STAMP = ".boot-id"
LOCK = ".lock"


def forget_earlier_boots(runtime: Path) -> None:
    """Empty a runtime directory that an earlier boot left behind.

    A runtime directory must not outlive a boot (XDG), but /tmp need not be cleared at boot:
    Podman would find the old pause-process PID file and take the old boot's containers for
    running ones ("invalid internal status"). Jobs of the user starting together on this node
    share the directory, hence the lock.
    """
    boot = BOOT_ID.read_text().strip()
    with open(runtime / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = runtime / BOOT_STAMP
        if stamp.is_file() and stamp.read_text().strip() == boot:
            return
        for child in runtime.iterdir():
            if child.name == LOCK:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink()
        stamp.write_text(boot + "\n")


def remove_orphans(marks: RunMarks) -> None:
    """Remove containers of this user's earlier jobs on this node that never got cleaned up."""
    try:
        for name, engine in marks.orphans(process_exists):
            if get_engine(engine).remove_run(name):
                marks.unmark(name)  # kept otherwise: the next job tries again
                log(f"removed {name}, left on this node by a job that ended without cleaning up")
            else:
                log(f"warning: could not remove {name}, left on this node by an earlier job; the next job tries again")
    except (OSError, StardockError) as exc:  # best effort: never fail this job over an earlier one
        log(f"warning: could not remove what earlier jobs left: {exc}")


def process_exists(pid: int) -> bool:
    """Whether pid is a live process of this user (a wrapper runs as the job's user)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False  # gone, or another user's: not a wrapper of ours
    return True


def container_env(launch: Launch, environ: Dict[str, str], user: str, output_target: str) -> Dict[str, str]:
    """The script's environment: Slurm's SLURM_* variables, a few named ones, what --export names
    (as under plain sbatch: Slurm put them in the job's environment with the values it chose) and
    what --pass-env names; never the rest of the login session, which --export=ALL brings along.
    stardock's own variables (HOME, USER, LOGNAME, STARDOCK_*) are set last and win."""
    env = {k: v for k, v in environ.items() if k.startswith("SLURM_")}
    for name in (*PASSED, *launch.export_env, *launch.pass_env):
        if name in environ:
            env[name] = environ[name]
    env.update(HOME="/tmp", USER=user, LOGNAME=user, STARDOCK_OUTPUT=output_target,
               STARDOCK_IMAGE=launch.key, STARDOCK_ENVIRONMENT=launch.name, STARDOCK_MOUNT_ROOT=launch.mount_root)
    return env


def run(launch: Launch, args: List[str], environ: Dict[str, str]) -> int:
    become_subreaper()
    uid, gid = os.getuid(), os.getgid()
    user = pwd.getpwuid(uid).pw_name
    ids = JobIds.of(environ)
    try:
        records_dir = private_dir(launch.records, user, uid, "job records directory (site config: records)")
    except StardockError as exc:
        log(f"error: {exc}")
        return 1
    records = RecordStore(records_dir)
    started = time.time()
    node = socket.gethostname()
    record = {"job": ids.job, "array_task": ids.task, "user": user, "node": node,
              "engine": launch.engine, "key": launch.key, "name": launch.name, "image": launch.tag,
              "mounts": [m.to_json() for m in launch.mounts], "start": started, "end": None, "exit_code": None,
              "state": "running"}
    workdir = Path(tempfile.mkdtemp(prefix=f"stardock-job-{ids.label}-"))
    output_target = f"{launch.mount_root}/output"
    # This process exists for the job: the engine commands it runs take its environment.
    os.environ["XDG_RUNTIME_DIR"] = runtime_dir(uid)
    for leak in ("DBUS_SESSION_BUS_ADDRESS", "CONTAINERS_STORAGE_CONF"):
        os.environ.pop(leak, None)
    container = f"stardock-{ids.label}-{os.getpid()}"
    marks = RunMarks(records_dir, node)
    code = 1
    child: Optional[subprocess.Popen] = None
    interrupted = False
    held: List[Held] = []
    handover: Optional[Handover] = None
    try:
        output = own_dir(private_dir(launch.outputs, user, uid, "outputs directory (site config: outputs)")
                         / ids.label)
        record["output"] = str(output)
        script = workdir / "script"
        script.write_text(launch.script)
        script.chmod(0o500)
        os.chmod(workdir, 0o700)
        engine = get_engine(launch.engine)
        remove_orphans(marks)
        image = _image(engine, launch)
        # what the container gets is held open from here on and proven in the container (binds.py)
        for m in launch.mounts:
            held.append(hold_volume(m))
        held.append(hold_path(script, SCRIPT_IN_CONTAINER, True, "the batch script"))
        held.append(hold_path(output, output_target, False, "the output directory"))
        handover = Handover(held)
        held = []
        command = checked_command(handover.mounts, list(launch.command) if launch.command
                                  else [SCRIPT_IN_CONTAINER, *args])
        options = RunOptions(network=launch.network, uid=uid, gid=gid, runtime=launch.runtime_shim, name=container,
                             tmpdir=str(workdir), interactive=launch.interactive,
                             preserve_fds=len(handover.pass_fds), pids=process_limit(launch.pids))
        argv = engine.run_argv(image, command, handover.mounts,
                               container_env(launch, environ, user, output_target), output_target, options)
        records.write_run(ids.record_id, ids.task, record)
        forwarded: List[int] = []

        def forward(signum: int, _frame) -> None:
            forwarded.append(signum)
            if child is not None and child.poll() is None:
                child.send_signal(signum)

        for sig in FORWARDED:
            signal.signal(sig, forward)
        marks.mark(container, os.getpid(), launch.engine)
        limits = engine.spawn_rlimits(options)

        def in_child() -> None:
            handover.in_child()
            set_rlimits(limits)

        child = subprocess.Popen(argv, stdin=None if launch.interactive else subprocess.DEVNULL,
                                 pass_fds=handover.pass_fds, preexec_fn=in_child)
        handover.close()  # the engine holds its own copies until the container has checked them
        status = child.wait()
        interrupted = status < 0 or bool(forwarded)
        code = status if status >= 0 else 128 - status
        record["state"] = "completed" if code == 0 else "failed"
    except Exception as exc:  # noqa: BLE001 - the record and the exit code must say what happened
        log(f"error: {exc}")
        record["state"] = "error"
        record["error"] = str(exc)
        code = 1
    finally:
        release(held)
        if handover is not None:
            handover.close()
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)
        if child is not None and (interrupted or child.returncode is None):
            get_engine(launch.engine).remove_run(container)
        proctree.stop_descendants()  # what the engine left behind (conmon, pause processes...)
        marks.unmark(container)
        shutil.rmtree(workdir, ignore_errors=True)
        record.update(end=time.time(), exit_code=code)
        try:
            records.write_run(ids.record_id, ids.task, record)
        except OSError as exc:
            log(f"warning: cannot write the job record: {exc}")
    return code


def own_dir(path: Path) -> Path:
    """The job's own directory: made private, or (a requeued job) already ours and real."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise StardockError(f"{path} exists and is not a directory of yours; not writing the job's "
                                "outputs there") from None
    return path


def process_limit(wanted: int) -> int:
    """The site's process limit, never above what this job may already have (not raisable)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def set_rlimits(limits: Dict[int, Tuple[int, int]]) -> None:
    """In the engine's process, before it starts (only lowering: an unprivileged process may)."""
    for which, value in limits.items():
        resource.setrlimit(which, value)


def _image(engine: Engine, launch: Launch) -> ImageRef:
    """The image the job was submitted with, checked again here: the entry directory is still the
    one owned by the builder trusted at submission, and its artifact still has the recorded digest."""
    entry_dir = Path(launch.entry)
    entry = Cache(entry_dir.parent.parent).entry_for_run(entry_dir, launch.entry_owner, launch.artifact_sha256)
    return engine.image_for(entry.artifact, launch.tag)


def main(argv: Optional[List[str]] = None) -> None:
    """stardock-node [ARGS...] with the spec on stdin (batch jobs), or
    stardock-node --spec-file FILE (stardock shell, whose stdin is the terminal)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["--spec-file"]:
            launch = Launch.from_json(Path(args[1]).read_text())
            args = args[2:]
        else:
            launch = Launch.from_json(sys.stdin.read())
    except (ValueError, TypeError, OSError, IndexError) as exc:
        log(f"error: cannot read the job spec: {exc}")
        sys.exit(1)
    sys.exit(run(launch, args, dict(os.environ)))


if __name__ == "__main__":  # pragma: no cover
    main()
