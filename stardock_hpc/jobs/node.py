"""The node side of a job: run the batch script in the container, rootless and accounted.

Started by the job script (wrappers/stardock-node) with the job spec on standard input:
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

import ctypes
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from stardock_hpc.cache import Cache
from stardock_hpc.engines import get_engine
from stardock_hpc.engines.base import Mount, RunOptions
from stardock_hpc.errors import StardockError
from stardock_hpc.jobs.jobspec import JobSpec
from stardock_hpc.jobs.records import RecordStore
from stardock_hpc.jobs.runmarks import RunMarks

PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
SCRIPT_IN_CONTAINER = "/.stardock/job/script"
PASSED = ("LANG", "LC_ALL", "TZ", "TERM")
CLEANUP_GRACE = 5.0


def log(msg: str) -> None:
    print(f"stardock: {msg}", file=sys.stderr, flush=True)


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log(f"warning: cannot become a child subreaper (errno {ctypes.get_errno()})")


def job_ids(environ: Dict[str, str]) -> Dict[str, Optional[str]]:
    array_job, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    job = environ.get("SLURM_JOB_ID", f"local-{os.getpid()}")
    return {"job": job, "record_id": array_job or job, "task": task,
            "label": f"{array_job}_{task}" if array_job and task else job}


def runtime_dir(uid: int) -> str:
    """Podman needs an XDG_RUNTIME_DIR the user owns; the login session's may not exist here."""
    standard = Path(f"/run/user/{uid}")
    try:
        if standard.is_dir() and standard.stat().st_uid == uid:
            return str(standard)
    except OSError:
        pass
    private = Path(tempfile.gettempdir()) / f"stardock-runtime-{uid}"
    private.mkdir(mode=0o700, exist_ok=True)
    st = private.lstat()
    if st.st_uid != uid or not private.is_dir() or private.is_symlink():
        raise RuntimeError(f"{private} is not a directory of ours")
    os.chmod(private, 0o700)
    forget_earlier_boots(private)
    return str(private)


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
            get_engine(engine).remove_run(name)
            marks.unmark(name)
            log(f"removed {name}, left on this node by a job that ended without cleaning up")
    except (OSError, StardockError) as exc:  # best effort: never fail this job over an earlier one
        log(f"warning: could not remove what earlier jobs left: {exc}")


def process_exists(pid: int) -> bool:
    """Whether pid is a live process of this user (a wrapper runs as the job's user)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False  # gone, or another user's: not a wrapper of ours
    return True


def container_env(spec: JobSpec, environ: Dict[str, str], user: str, output_target: str) -> Dict[str, str]:
    env = {k: v for k, v in environ.items() if k.startswith("SLURM_")}
    for name in (*PASSED, *spec.pass_env):
        if name in environ:
            env[name] = environ[name]
    env.update(HOME="/tmp", USER=user, LOGNAME=user, STARDOCK_OUTPUT=output_target,
               STARDOCK_IMAGE=spec.key, STARDOCK_ENVIRONMENT=spec.name, STARDOCK_MOUNT_ROOT=spec.mount_root)
    return env


def descendants(root: int) -> List[int]:
    """Processes below root (as a subreaper, every orphan of ours is reparented to us)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def reap_all(grace: float = CLEANUP_GRACE) -> List[int]:
    """Stop and reap whatever the engine left behind (conmon, pause processes...)."""
    left = descendants(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and descendants(os.getpid()):
            _reap_nowait()
            time.sleep(0.05)
        if not descendants(os.getpid()):
            break
    _reap_nowait()
    return left


def _reap_nowait() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(spec: JobSpec, args: List[str], environ: Dict[str, str]) -> int:
    become_subreaper()
    uid, gid = os.getuid(), os.getgid()
    user = pwd.getpwuid(uid).pw_name
    ids = job_ids(environ)
    records = RecordStore(Path(spec.records))
    started = time.time()
    node = socket.gethostname()
    record = {"job": ids["job"], "array_task": ids["task"], "user": user, "node": node,
              "engine": spec.engine, "key": spec.key, "name": spec.name, "image": spec.tag,
              "mounts": spec.mounts, "start": started, "end": None, "exit_code": None, "state": "running"}
    workdir = Path(tempfile.mkdtemp(prefix=f"stardock-job-{ids['label']}-"))
    output = Path(spec.outputs) / ids["label"]
    output_target = f"{spec.mount_root}/output"
    record["output"] = str(output)
    # This process exists for the job: the engine commands it runs take its environment.
    os.environ["XDG_RUNTIME_DIR"] = runtime_dir(uid)
    for leak in ("DBUS_SESSION_BUS_ADDRESS", "CONTAINERS_STORAGE_CONF"):
        os.environ.pop(leak, None)
    container = f"stardock-{ids['label']}-{os.getpid()}"
    marks = RunMarks(Path(spec.records), node)
    code = 1
    child: Optional[subprocess.Popen] = None
    interrupted = False
    try:
        output.mkdir(parents=True, exist_ok=True)
        script = workdir / "script"
        script.write_text(spec.script)
        script.chmod(0o500)
        os.chmod(workdir, 0o700)
        engine = get_engine(spec.engine)
        remove_orphans(marks)
        image = _image(engine, spec)
        mounts = [Mount(Path(m["host"]), m["target"], m["readonly"]) for m in spec.mounts]
        mounts += [Mount(script, SCRIPT_IN_CONTAINER, True), Mount(output, output_target, False)]
        command = list(spec.command) if spec.command else [SCRIPT_IN_CONTAINER, *args]
        argv = engine.run_argv(image, command, mounts,
                               container_env(spec, environ, user, output_target), output_target,
                               RunOptions(network=spec.network, uid=uid, gid=gid, runtime=spec.runtime_shim,
                                          name=container, tmpdir=str(workdir), interactive=spec.interactive))
        records.write_run(ids["record_id"], ids["task"], record)
        forwarded: List[int] = []

        def forward(signum: int, _frame) -> None:
            forwarded.append(signum)
            if child is not None and child.poll() is None:
                child.send_signal(signum)

        for sig in FORWARDED:
            signal.signal(sig, forward)
        marks.mark(container, os.getpid(), spec.engine)
        child = subprocess.Popen(argv, stdin=None if spec.interactive else subprocess.DEVNULL)
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
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)
        if child is not None and (interrupted or child.returncode is None):
            get_engine(spec.engine).remove_run(container)
        reap_all()
        marks.unmark(container)
        shutil.rmtree(workdir, ignore_errors=True)
        record.update(end=time.time(), exit_code=code)
        try:
            records.write_run(ids["record_id"], ids["task"], record)
        except OSError as exc:
            log(f"warning: cannot write the job record: {exc}")
    return code


def _image(engine, spec: JobSpec):
    entry_dir = Path(spec.entry)
    cache = Cache(entry_dir.parent.parent)
    entry = cache.entry_at(entry_dir)
    if entry is None or not cache.verify(entry):
        raise RuntimeError(f"the image {entry_dir} is missing or no longer matches its digest")
    return engine.image_for(Path(spec.artifact), spec.tag)


def main(argv: Optional[List[str]] = None) -> None:
    """stardock-node [ARGS...] with the spec on stdin (batch jobs), or
    stardock-node --spec-file FILE (stardock shell, whose stdin is the terminal)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["--spec-file"]:
            spec = JobSpec.from_json(Path(args[1]).read_text())
            args = args[2:]
        else:
            spec = JobSpec.from_json(sys.stdin.read())
    except (ValueError, TypeError, OSError, IndexError) as exc:
        log(f"error: cannot read the job spec: {exc}")
        sys.exit(1)
    sys.exit(run(spec, args, dict(os.environ)))


if __name__ == "__main__":  # pragma: no cover
    main()
