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
import json
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from stardock_hpc import proctree
from stardock_hpc.cache import Cache
from stardock_hpc.engines import get_engine
from stardock_hpc.engines import podman_userns as userns
from stardock_hpc.engines.base import Engine, ImageRef, RunOptions
from stardock_hpc.engines.podman_locks import use_file_locks
from stardock_hpc.errors import StardockError
from stardock_hpc.jobs import nodestore, steps
from stardock_hpc.jobs.binds import (
    Handover,
    Held,
    checked_command,
    hold_path,
    hold_volume,
    image_defaults,
    passable,
    release,
)
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.jobs.records import RecordStore
from stardock_hpc.jobs.runmarks import RunMarks
from stardock_hpc.jobs.userdirs import Taken, beside, names_key, own_path, private_dir, this_machine
from stardock_hpc.resources import data_dir
from stardock_hpc.schedulers.job_env import SESSION_CREDENTIALS, without_session_credentials

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


RUN_USER = Path("/run/user")  # where logind (or the node's boot) makes each user's runtime dir


def runtime_dir(uid: int, key: Optional[Callable[[], bytes]] = None, warn: Callable[[str], None] = log) -> str:
    """Podman needs an XDG_RUNTIME_DIR the user owns; the login session's may not exist here.
    /run/user/UID where the node has one (root makes it: nobody else can), else
    /tmp/stardock-runtime-UID; where another user made that name first, the user's own directory
    beside it (jobs/userdirs.py: the same for every task of the user's jobs on this node in this
    boot, when key gives the user's names key)."""
    standard = RUN_USER / str(uid)
    try:
        if standard.is_dir() and standard.stat().st_uid == uid:
            return str(standard)
    except OSError:
        pass
    name = PurePosixPath(tempfile.gettempdir()) / f"stardock-runtime-{uid}"
    what = "runtime directory of your jobs on this node"
    try:
        private = own_path(name, uid, what)
    except Taken as taken:
        if key is None:
            raise
        private = beside(taken, uid, key, this_machine(boot=True), warn)
    os.chmod(private, 0o700)
    forget_earlier_boots(private)
    return str(private)


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
BOOT_STAMP = ".boot-id"
LOCK = ".lock"


def forget_earlier_boots(runtime: Path) -> None:
    """Empty a runtime directory that an earlier boot left behind.

    A runtime directory must not outlive a boot (XDG), but /tmp need not be cleared at boot:
    Podman would find the old boot's marker ("alive") and take its containers for running ones
    (and the user's own Podman, the old pause-process PID file: "invalid internal status"). Jobs
    of the user starting together on this node share the directory, hence the lock.
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


def remove_own_tmpdir(path: Optional[Path]) -> None:
    """A dead wrapper's temporary directory: only a real directory of this user, named as the
    wrappers name theirs (never through a link, never anything else a mark might name)."""
    if path is None or not path.name.startswith(("stardock-job-", "stardock-task-")):
        return
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
        remove_tree(path)


def remove_tree(path: Path) -> None:
    """Remove a directory of this user's, read-only parts included (the step stand-ins' bin/ is
    0500: a plain rmtree left every job's temporary directory behind on the node). Links are
    removed, never followed. Best effort."""
    def writable_parent(func, failed, _exc) -> None:
        try:
            parent = os.path.dirname(failed)
            if not os.path.islink(parent):
                os.chmod(parent, 0o700)
            func(failed)
        except OSError:
            pass
    shutil.rmtree(path, onerror=writable_parent)


def remove_orphans(marks: RunMarks) -> None:
    """Remove containers of this user's earlier jobs on this node that never got cleaned up."""
    try:
        for orphan in marks.orphans(process_exists):
            if get_engine(orphan.engine).remove_run(orphan.name):
                remove_own_tmpdir(orphan.tmpdir)
                marks.unmark(orphan.name)  # kept otherwise: the next job tries again
                log(f"removed {orphan.name}, left on this node by a job that ended without cleaning up")
            else:
                log(f"warning: could not remove {orphan.name}, left on this node by an earlier job; the next job "
                    "tries again")
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
    what --pass-env names; never the rest of the login session, which --export=ALL brings along,
    nor its credentials (SLURM_JWT) unless named. stardock's own variables (HOME, USER, LOGNAME,
    STARDOCK_*) are set last and win."""
    env = {k: v for k, v in environ.items() if k.startswith("SLURM_") and k not in SESSION_CREDENTIALS}
    for name in (*PASSED, *launch.export_env, *launch.pass_env):
        if name in environ:
            env[name] = environ[name]
    env.update(HOME="/tmp", USER=user, LOGNAME=user, STARDOCK_OUTPUT=output_target,
               STARDOCK_IMAGE=launch.key, STARDOCK_ENVIRONMENT=launch.name, STARDOCK_MOUNT_ROOT=launch.mount_root)
    return env


@dataclass
class Run:
    """One container run of a launch: what it runs, with what, where and under which name."""

    command: List[str]
    env: Dict[str, str]
    workdir: str
    name: str
    tmpdir: Path
    held: List[Held]                  # bind sources, held open (binds.py); handed over by run_container
    host_network: bool = False
    host_pid: bool = False            # a task of a step: the node's PID namespace (see _run_task)
    extra_fds: Tuple[int, ...] = ()   # passed on after the held ones (a task's PMI_FD)
    fd_env: Optional[str] = None      # the variable that names the first of them in the container


def run_container(launch: Launch, engine: Engine, image: ImageRef, run_: Run, marks: RunMarks,
                  before_start: Optional[Callable[[], None]] = None) -> int:
    """Start the container, forward signals to it, wait; remove what an interrupted run left.
    The exit status as a shell gives it (128+N for a signal)."""
    uid, gid = os.getuid(), os.getgid()
    handover = Handover(run_.held, run_.extra_fds)
    run_.held = []
    child: Optional[subprocess.Popen] = None
    forwarded: List[int] = []
    env = dict(run_.env)
    if run_.fd_env and handover.extra_fds:
        env[run_.fd_env] = str(handover.extra_fds[0])
    mounted: Optional[ImageRef] = None
    try:
        if image.squashfs:  # the cache's squashfs, mounted for this run only (engines/podman.py)
            image = mounted = engine.mount(image, run_.tmpdir / "rootfs")
        # by descriptor, never on a command line (binds.py); the image's own first where the engine
        # does not set them itself; the session's credentials only when named, whoever built env
        # (a step's task takes its Slurm variables from the host's srun)
        env = without_session_credentials(env, (*launch.pass_env, *launch.export_env))
        env, refused = passable({**image_defaults(image.env), **env})
        if refused:
            log("warning: not passed into the container (bash, which starts the command there, cannot "
                f"set these names as given): {', '.join(sorted(refused))}")
        command = checked_command(handover.mounts, handover.add_environment(env), run_.command)
        options = RunOptions(network=launch.network, host_network=run_.host_network, host_pid=run_.host_pid,
                             uid=uid, gid=gid,
                             runtime=launch.runtime_shim, name=run_.name, tmpdir=str(run_.tmpdir),
                             interactive=launch.interactive, preserve_fds=len(handover.pass_fds),
                             pids=process_limit(launch.pids))
        argv = engine.run_argv(image, command, handover.mounts, run_.workdir, options)
        if before_start is not None:
            before_start()

        def forward(signum: int, _frame) -> None:
            forwarded.append(signum)
            if child is not None and child.poll() is None:
                child.send_signal(signum)

        for sig in FORWARDED:
            signal.signal(sig, forward)
        marks.mark(run_.name, os.getpid(), launch.engine, run_.tmpdir)
        limits = engine.spawn_rlimits(options)

        def in_child() -> None:
            handover.in_child()
            set_rlimits(limits)

        child = subprocess.Popen(argv, stdin=None if launch.interactive else subprocess.DEVNULL,
                                 pass_fds=handover.pass_fds, preexec_fn=in_child)
        handover.close()  # the engine holds its own copies until the container has checked them
        status = child.wait()
        return status if status >= 0 else 128 - status
    finally:
        handover.close()
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_IGN)
        if child is not None and (forwarded or child.returncode is None or child.returncode < 0):
            engine.remove_run(run_.name)
        if mounted is not None:
            engine.unmount(mounted)
        proctree.stop_descendants()  # what the engine left behind (conmon, squashfuse...)
        marks.unmark(run_.name)


def shares_node_network(launch: Launch, environ: Dict[str, str]) -> bool:
    """Whether the container joins the node's network: the site allows it (policy.node_network)
    and the job spans nodes or tasks, or the step uses an MPI plugin (PMIx's server listens on
    the node's loopback; MPI ranks talk over the nodes' network)."""
    def number(name: str) -> int:
        try:
            return int(environ.get(name, "1"))
        except ValueError:
            return 1
    mpi = any(k.startswith(("PMIX_", "PMI_")) for k in environ)
    return launch.node_network and (mpi or number("SLURM_JOB_NUM_NODES") > 1 or number("SLURM_NTASKS") > 1)


def _node_setup(launch: Launch, uid: int, records: Path) -> None:
    """This process exists for the job: the engine commands it runs take its environment, which
    points them at the user's node-local storage (jobs/nodestore.py), never at the home. Names
    another user made first on this node are not used (a private directory beside each instead),
    and the job's log says so once for this node."""
    said: List[str] = []

    def key() -> bytes:
        return names_key(records)

    if launch.engine == "podman":
        use_file_locks()  # the job's Podman commands: no fixed name in /dev/shm (engines/podman_locks.py)
    runtime = runtime_dir(uid, key, said.append)
    os.environ["XDG_RUNTIME_DIR"] = runtime
    # and the session's credentials (a Slurm token): the srun of a step run from here would
    # authenticate with it, which slurmd refuses for the step's tasks (munge is the node's way)
    for leak in ("DBUS_SESSION_BUS_ADDRESS", "CONTAINERS_STORAGE_CONF", nodestore.NODE_STORAGE, *SESSION_CREDENTIALS):
        os.environ.pop(leak, None)
    try:
        if launch.node_storage:
            root = nodestore.setup(launch.node_storage, pwd.getpwuid(uid).pw_name, uid, os.environ, key, said.append)
            nodestore.podman_tmpdir(root, uid, said.append)
        if launch.engine == "podman":  # its commands in a namespace of this process's own, never one
            userns.enter()             # that another job or step made and Slurm may end (podman_userns.py)
    finally:
        if said and first_to_say(Path(runtime), os.environ.get("SLURM_JOB_ID")):
            for msg in said:
                log(f"warning: {msg}")


SAID = ".stardock-said-"


def first_to_say(runtime: Path, job: Optional[str]) -> bool:
    """Whether this process is the first of job's on this node to say what it found (the batch
    script's, or the first task of a step): a mark in the runtime directory; marks of jobs long
    gone are swept. Without a job (stardock exec on a login node): always."""
    if not job:
        return True
    week_ago = time.time() - 7 * 86400
    for name in os.listdir(runtime):
        if name.startswith(SAID):
            try:
                if os.lstat(runtime / name).st_mtime < week_ago:
                    os.unlink(runtime / name)
            except OSError:
                pass
    try:
        os.close(os.open(runtime / f"{SAID}{job}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        return False
    except OSError:
        return True
    return True


def run(launch: Launch, args: List[str], environ: Dict[str, str]) -> int:
    """The batch script (or stardock shell's command) in the container, with the job record."""
    become_subreaper()
    uid = os.getuid()
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
    marks = RunMarks(records_dir, node)
    code = 1
    held: List[Held] = []
    server: Optional[steps.StepServer] = None
    try:
        _node_setup(launch, uid, records_dir)
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
        # Slurm's commands in the script: served from here (jobs/steps.py)
        rpc, bin_dir = workdir / "rpc", workdir / "bin"
        rpc.mkdir(mode=0o700)
        steps.make_bin(bin_dir, data_dir("wrappers") / steps.SHIM)
        server = steps.StepServer(rpc, records_dir, launch, output, ids.label)
        # what the container gets is held open from here on and proven in the container (binds.py)
        for m in launch.mounts:
            held.append(hold_volume(m))
        held.append(hold_path(script, SCRIPT_IN_CONTAINER, True, "the batch script"))
        held.append(hold_path(output, output_target, False, "the output directory"))
        held.append(hold_path(bin_dir, steps.BIN_IN_CONTAINER, True, "Slurm's commands"))
        held.append(hold_path(rpc, steps.RPC_IN_CONTAINER, False, "the job's request directory"))
        if launch.inputs:  # fetched here, outside the container, before it starts (jobs/staging.py)
            held.append(stage_inputs(launch, workdir, record))
        env = container_env(launch, environ, user, output_target)
        env["STARDOCK_PATH_PREFIX"] = steps.BIN_IN_CONTAINER
        if launch.notebook_token:  # stardock notebook: the server's socket, in a directory of the job's own
            held.append(notebook_dir(launch, workdir, record, env))
        server.start()
        run_ = Run(list(launch.command) if launch.command else [SCRIPT_IN_CONTAINER, *args], env, output_target,
                   f"stardock-{ids.label}-{os.getpid()}", workdir, held,
                   host_network=shares_node_network(launch, environ))
        held = []
        code = run_container(launch, engine, image, run_, marks,
                             before_start=lambda: records.write_run(ids.record_id, ids.task, record))
        record["state"] = "completed" if code == 0 else "failed"
    except Exception as exc:  # noqa: BLE001 - the record and the exit code must say what happened
        log(f"error: {exc}")
        record["state"] = "error"
        record["error"] = str(exc)
        code = 1
    finally:
        release(held)
        if server is not None:
            server.stop()
            for leftover in records_dir.glob(f"{ids.label}.{os.getpid()}.*.step.*"):  # a step cut short
                leftover.unlink()
        proctree.stop_descendants()
        if launch.deliver and "output" in record:  # whatever the job's state
            record["deliveries"] = deliver(launch, Path(str(record["output"])), workdir, ids.label)
        remove_tree(workdir)
        record.update(end=time.time(), exit_code=code)
        try:
            records.write_run(ids.record_id, ids.task, record)
        except OSError as exc:
            log(f"warning: cannot write the job record: {exc}")
    return code


def notebook_dir(launch: Launch, workdir: Path, record: Dict, env: Dict[str, str]) -> Held:
    """The notebook server's private directory (its socket), bound read-write; the login node's
    relay finds the socket through the job's record (jobs/notebook.py)."""
    from stardock_hpc.jobs import notebook

    directory = workdir / "notebook"
    directory.mkdir(mode=0o700)
    target = f"{launch.mount_root}/{notebook.DIR_IN_CONTAINER}"
    record["notebook_socket"] = str(directory / notebook.SOCKET)
    env.update(notebook.write_config(directory, target, launch.notebook_token))
    return hold_path(directory, target, False, "the notebook's directory")


def stage_inputs(launch: Launch, workdir: Path, record: Dict) -> Held:
    """The job's --input files in a directory of its own, bound read-only at <mount_root>/input;
    pinned ones from the user's download cache on this node when they are there."""
    from stardock_hpc.jobs.staging import INPUT_DIR, JobInput, fetch_inputs, size_cap

    directory = workdir / INPUT_DIR
    directory.mkdir(mode=0o700)
    store = os.environ.get(nodestore.NODE_STORAGE)
    cache = Path(store) / "downloads" if store else None
    try:
        record["inputs"] = fetch_inputs([JobInput.from_json(i) for i in launch.inputs], directory, cache,
                                        size_cap(launch.input_max_bytes), launch.retries, log,
                                        allowed=(launch.input_schemes, launch.input_hosts),
                                        cache_max=size_cap(launch.input_cache_max))
    except StardockError as exc:
        raise StardockError(f"{exc}; the job's container was not started") from None
    os.chmod(directory, 0o500)
    return hold_path(directory, f"{launch.mount_root}/{INPUT_DIR}", True, "the job's inputs")


def deliver(launch: Launch, output: Path, workdir: Path, label: str) -> List[Dict]:
    from stardock_hpc.jobs.deliveries import deliver_outputs
    from stardock_hpc.jobs.staging import Delivery

    try:
        return deliver_outputs([Delivery.from_json(d) for d in launch.deliver], output, workdir, label,
                               launch.retries, log, allowed=(launch.deliver_schemes, launch.deliver_hosts))
    except Exception as exc:  # noqa: BLE001 - the job's record must still be written
        from stardock_hpc.urls import redact_url, scrub

        error = scrub(exc, [str(d.get("url") or "") for d in launch.deliver])
        log(f"error: delivering the outputs: {error}")
        return [{"dest": redact_url(d.get("dest")), "ok": False, "error": error} for d in launch.deliver]


PMIX_DIRS = ("PMIX_SERVER_TMPDIR",)


def run_task(step_file: Path, program: List[str], environ: Dict[str, str]) -> int:
    """One task of an srun step started from a job's script (the step file the job's wrapper wrote)."""
    try:
        step = steps.Step.from_json(step_file.read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log(f"error: cannot read the step {step_file}: {exc}")
        return 1
    try:  # srun's --output/--error/--input, opened in the container's view (jobs/stepview.py)
        steps.open_streams(step, environ)
    except StardockError as exc:
        log(f"error: task {environ.get('SLURM_PROCID', '0')}: {exc}")
        return 1
    return run_step_task(step, step_file.parent, program, environ)


def run_exec(launch: Launch, program: List[str], environ: Dict[str, str]) -> int:
    """`stardock exec`: one command in the environment, here (a login node, or a task of a plain
    sbatch script's srun step), with the output directory of the job it runs in."""
    uid = os.getuid()
    user = pwd.getpwuid(uid).pw_name
    ids = JobIds.of(environ)
    records = private_dir(launch.records, user, uid, "job records directory (site config: records)")
    output = own_dir(private_dir(launch.outputs, user, uid, "outputs directory (site config: outputs)") / ids.label)
    target = f"{launch.mount_root}/output"
    step = steps.Step(launch, container_env(launch, environ, user, target), target, str(output), ids.label)
    return run_step_task(step, records, program, environ)


def run_step_task(step: steps.Step, records_dir: Path, program: List[str], environ: Dict[str, str]) -> int:
    """The program in its own container, in this task's cgroup, with the step's environment and
    the task's own Slurm and PMI variables; the job's tasks on this node share the prepared image
    and one /dev/shm."""
    become_subreaper()
    launch = step.launch
    _node_setup(launch, os.getuid(), records_dir)
    marks = RunMarks(records_dir, socket.gethostname())
    procid = environ.get("SLURM_PROCID", "0")
    name = f"stardock-{step.label}-{environ.get('SLURM_STEP_ID', 's')}-{procid}-{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix=f"stardock-task-{step.label}-"))
    try:
        os.chmod(workdir, 0o700)
        engine = get_engine(launch.engine)
        with job_on_node(engine, launch, step.label) as (image, shm):
            return _run_task(step, program, environ, engine, image, shm, name, workdir, marks)
    except Exception as exc:  # noqa: BLE001 - srun reports the task's status
        log(f"error: task {procid}: {exc}")
        return 1
    finally:
        remove_tree(workdir)


def _run_task(step: steps.Step, program: List[str], environ: Dict[str, str], engine: Engine, image: ImageRef,
              shm: Path, name: str, workdir: Path, marks: RunMarks) -> int:
    launch, uid = step.launch, os.getuid()
    user = pwd.getpwuid(uid).pw_name
    held: List[Held] = []
    try:
        for m in launch.mounts:
            held.append(hold_volume(m))
        output = Path(step.output)
        st = os.lstat(output)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            raise StardockError(f"{output} is not the job's output directory")
        held.append(hold_path(output, f"{launch.mount_root}/output", False, "the output directory"))
        # the job's tasks on this node share one /dev/shm, as processes on the node do (MPI's
        # shared-memory transports put their segments there)
        held.append(hold_path(shm, "/dev/shm", False, "the tasks' shared memory directory"))
        for var in PMIX_DIRS:
            directory = environ.get(var, "").rstrip("/")
            if directory.startswith("/") and os.path.isdir(directory):
                held.append(hold_path(Path(directory), directory, False, f"PMIx's directory (${var})"))
        env = steps.task_env(step.env, environ)
        env.update(HOME=step.env.get("HOME", "/tmp"), USER=user, LOGNAME=user)
        extra: Tuple[int, ...] = ()
        fd_env = None
        if environ.get("PMI_FD", "").isdigit():
            extra, fd_env = (int(environ["PMI_FD"]),), "PMI_FD"
        # A step's tasks on a node share its PID namespace, as they would without containers and
        # as with Pyxis and Apptainer's defaults: MPI's shared-memory transports (Open MPI's vader)
        # tell their peers apart by PID, and each task in a namespace of its own is PID 6 or 2.
        shared = shares_node_network(launch, environ)
        run_ = Run(program, env, step.cwd, name, workdir, held, host_network=shared, host_pid=shared,
                   extra_fds=extra, fd_env=fd_env)
        held = []
        return run_container(launch, engine, image, run_, marks)
    finally:
        release(held)


NODE_STATE = ".stardock-job-"


@contextmanager
def job_on_node(engine: Engine, launch: Launch, label: str) -> Iterator[Tuple[ImageRef, Path]]:
    """The job's image on this node, and the directory the job's tasks here share as /dev/shm.

    The first task of the job on the node checks the image and makes it ready (Podman: loads
    it), under the user's node lock; the others take its result. Each task holds the job's state
    shared while it runs; the last one out removes it, so nothing of the job stays on the node.
    What tasks killed too hard to clean up left (no task holds it any more) goes first."""
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    state = runtime / f"{NODE_STATE}{label}"
    stamp, shm = state / f"image-{launch.key[:16]}", state / "shm"
    with open(runtime / ".stardock-job.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sweep_node_state(runtime, label)
        for directory in (state, shm):
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                st = os.lstat(directory)
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                    raise StardockError(f"{directory} is not a directory of yours") from None
        active = os.open(state / "active", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(active, fcntl.LOCK_SH)
        image: Optional[ImageRef] = None
        try:
            data = json.loads(stamp.read_text())
            image = ImageRef(data["engine"], data["ref"], data.get("squashfs"), None, tuple(data.get("env") or ()))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if image is None:
            image = _image(engine, launch)
            fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as fh:  # all of it: a squashfs is mounted again for each run
                json.dump({"engine": image.engine, "ref": image.ref, "squashfs": image.squashfs,
                           "env": list(image.env)}, fh)
    try:
        yield image, shm
    finally:
        with open(runtime / ".stardock-job.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                fcntl.flock(active, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(state, ignore_errors=True)  # the last task of the job on this node
            except BlockingIOError:
                pass
            finally:
                os.close(active)


def sweep_node_state(runtime: Path, current: str) -> None:
    """Remove the node state of this user's jobs that no task holds any more."""
    for name in os.listdir(runtime):
        if not name.startswith(NODE_STATE) or name == f"{NODE_STATE}{current}":
            continue
        try:
            fd = os.open(runtime / name / "active", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1
        except OSError:
            continue
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(runtime / name, ignore_errors=True)
        except BlockingIOError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)


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
    one owned by the builder trusted at submission, and its artifact (and run form) still have the
    recorded digests. An image without a run form is loaded into the node's store, which is kept
    under the site's bound."""
    entry_dir = Path(launch.entry)
    entry = Cache(entry_dir.parent.parent).entry_for_run(entry_dir, launch.entry_owner, launch.artifact_sha256)
    image = engine.image_for_entry(entry, launch.tag)
    store = os.environ.get(nodestore.NODE_STORAGE)
    if engine.name == "podman" and not image.squashfs and store:
        nodestore.used(Path(store), launch.tag)
        for tag in nodestore.bound(Path(store), launch.node_storage_max, keep=launch.tag):
            log(f"removed {tag} from this node's store (node_storage_max {launch.node_storage_max})")
    return image


def main(argv: Optional[List[str]] = None) -> None:
    """stardock-node [ARGS...] with the spec on stdin (batch jobs), or
    stardock-node --spec-file FILE (stardock shell, whose stdin is the terminal), or
    stardock-node --task STEPFILE -- PROGRAM... (a task of an srun step from a job's script)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--task"] and args[2:3] == ["--"]:  # a task of an srun step (jobs/steps.py)
        sys.exit(run_task(Path(args[1]), args[3:], dict(os.environ)))
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
