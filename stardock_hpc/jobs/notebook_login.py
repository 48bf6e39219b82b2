"""`stardock notebook` on the login node: submit the notebook job, wait until its server answers
here, and keep the way in (a forwarder on a private socket, carried over an srun step by
relay.py); `notebook list | connect | stop`. The job's side and the record: notebook.py."""
from __future__ import annotations

import getpass
import http.client
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from stardock_hpc.errors import ExternalError, UsageError
from stardock_hpc.jobs.notebook import (
    APP,
    DEFAULT_PORT,
    JOB_NAME,
    LOG,
    RECORD,
    Notebook,
    job_command,
    load,
    notebooks,
    save,
)
from stardock_hpc.jobs.records import RecordStore, split_job_id
from stardock_hpc.slurm.values import TERMINAL

if TYPE_CHECKING:
    from stardock_hpc.site import Site

@dataclass
class NotebookArgs:
    argv: List[str]      # sbatch's and stardock's options, for the submission
    port: int
    wait: float
    as_json: bool


def split_args(argv: List[str]) -> NotebookArgs:
    """`stardock notebook`'s own options (--port, --wait, --json) out; no script, no --wrap."""
    rest: List[str] = []
    port, wait, as_json = DEFAULT_PORT, 300.0, False
    i = 0
    while i < len(argv):
        token = argv[i]
        word, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if word == "json" and not eq:
            as_json = True
        elif word in ("port", "wait"):
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"stardock notebook: --{word} needs a value")
                value, i = argv[i + 1], i + 1
            try:
                number = float(value) if word == "wait" else int(value)
            except ValueError:
                raise UsageError(f"stardock notebook: --{word} {value!r} is not a number") from None
            if word == "port":
                if not 1024 <= number <= 65535:
                    raise UsageError(f"stardock notebook: --port {value} is not a port from 1024 to 65535")
                port = int(number)
            else:
                if number < 0:
                    raise UsageError(f"stardock notebook: --wait {value} is negative")
                wait = float(number)
        elif token == "--wrap" or token.startswith("--wrap="):
            raise UsageError("stardock notebook: --wrap is not for notebooks (the job runs JupyterLab)")
        else:
            rest.append(token)
        i += 1
    return NotebookArgs(rest, port, wait, as_json)


def runtime_dir(records: Optional[Path] = None, warn: Optional[Callable[[str], None]] = None) -> Path:
    """Where the login node's end of a notebook listens: the user's private runtime directory, else
    /tmp/stardock-USER; where another user made that name first, the user's own directory beside
    it (jobs/userdirs.py; found again by `stardock notebook connect`, with records' names key)."""
    from stardock_hpc.fsutil import private_runtime_dir
    from stardock_hpc.jobs import userdirs

    user, uid = getpass.getuser(), os.getuid()
    runtime = private_runtime_dir(os.environ)
    if runtime:
        return userdirs.private_dir(f"{runtime}/stardock", user, uid, "runtime directory ($XDG_RUNTIME_DIR)")
    try:
        return userdirs.private_dir("/tmp/stardock-{user}", user, uid, "runtime directory (/tmp/stardock-USER)")
    except userdirs.Taken as taken:
        if records is None:
            raise
        return userdirs.beside(taken, uid, lambda: userdirs.names_key(records), userdirs.this_machine(boot=True),
                               warn or (lambda _msg: None))


def login_socket(job: str, directory: Path) -> str:
    """Where the login node's end of job's notebook listens, in directory (runtime_dir())."""
    return str(directory / f"notebook-{job}.sock")


def login_host() -> str:
    return socket.getfqdn()


def answers(path: str, token: str, timeout: float = 10.0) -> bool:
    """Whether a Jupyter server answers on the Unix socket path, with this token."""
    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)

    conn = UnixConnection("localhost", timeout=timeout)
    try:
        conn.request("GET", "/api/status", headers={"Authorization": f"token {token}"})
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def relay_step_argv(job: str, node: str, server_socket: str) -> List[str]:
    """The step that carries the connections: one task on the node the server runs on, sharing
    the job's resources (--overlap), with stardock's interpreter and the node end of the relay."""
    from stardock_hpc.resources import data_dir

    return ["srun", f"--jobid={job}", "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={node}", "--mpi=none",
            "--quiet", "--unbuffered", "--job-name=notebook-relay",
            sys.executable, str(data_dir("wrappers") / "stardock-relay"), server_socket]


def start_forwarder(records: Path, nb: Notebook, server_socket: str) -> int:
    """The login node's end, detached; returns its pid once its socket exists."""
    from stardock_hpc import proc

    assert nb.node
    listen = Path(nb.login_socket)
    if listen.exists() or listen.is_symlink():
        listen.unlink()  # in our private directory: a forwarder of ours that is gone left it
    log_path = records / nb.job / LOG
    argv = [sys.executable, "-m", "stardock_hpc.jobs.relay", "login", str(listen),
            str(RecordStore(records).run_path(nb.job)), str(log_path), "--",
            *relay_step_argv(nb.job, nb.node, server_socket)]
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        child = proc.spawn(argv, detach=True, stderr=log)
    finally:
        os.close(log)
    deadline = time.monotonic() + 10
    while not listen.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            raise ExternalError(f"the notebook's forwarder did not start; see {log_path}")
        time.sleep(0.05)
    return child.pid


def forwarder_running(nb: Notebook) -> bool:
    """Whether nb's forwarder is a live process of ours, here (its command line names its socket)."""
    if not nb.forwarder:
        return False
    try:
        if os.stat(f"/proc/{nb.forwarder}").st_uid != os.getuid():
            return False
        with open(f"/proc/{nb.forwarder}/cmdline", "rb") as fh:
            words = fh.read().split(b"\0")
    except OSError:
        return False
    return b"stardock_hpc.jobs.relay" in words and nb.login_socket.encode() in words


def stop_forwarder(nb: Notebook) -> None:
    import signal

    if forwarder_running(nb):
        assert nb.forwarder
        try:
            os.kill(nb.forwarder, signal.SIGTERM)
        except ProcessLookupError:
            pass
        for _ in range(50):
            if not forwarder_running(nb):
                break
            time.sleep(0.1)
    try:
        os.unlink(nb.login_socket)
    except FileNotFoundError:
        pass


def wait_for_server(records: Path, nb: Notebook, wait: float, state: Callable[[], str],
                    say: Callable[[str], None]) -> Tuple[bool, str]:
    """Until the job's server answers on the login node (True), the job ends (an error), or
    wait runs out (False, with the job's state)."""
    deadline = time.monotonic() + wait
    told = ""
    while True:
        run = RecordStore(records).runs(nb.job).get("")
        current = state()
        if run and run.get("state") not in (None, "running"):
            raise ExternalError(f"the notebook job {nb.job} ended ({run.get('state')}) before its server answered"
                                + (f": {run['error']}" if run.get("error") else ""),
                                hint=f"see its output: stardock logs {nb.job}")
        if current in TERMINAL:
            raise ExternalError(f"the notebook job {nb.job} ended ({current}) before its server answered",
                                hint=f"see its output: stardock logs {nb.job}")
        if run and run.get("notebook_socket") and run.get("node"):
            if not forwarder_running(nb):
                nb.node = run["node"]
                nb.forwarder = start_forwarder(records, nb, run["notebook_socket"])
                save(records, nb)
            if answers(nb.login_socket, nb.token):
                return True, "RUNNING"  # it answers: whatever the accounting says yet
        elif current != told:
            say(f"job {nb.job} is {current.lower()}; waiting for it to start")
            told = current
        if time.monotonic() >= deadline:
            return False, current
        time.sleep(1.0)


UNKNOWN = "UNKNOWN"  # Slurm does not say (yet: the accounting may lag behind a submission)


def job_state(job: str, site: Site) -> str:
    from stardock_hpc.jobs.report import job_report

    rows = job_report(job, site)
    return str(rows[0]["state"]).split()[0] if rows else UNKNOWN


def start(argv: List[str], cwd: Path, site_option: Optional[str], on_line: Optional[Callable[[str], None]],
          say: Callable[[str], None]) -> Tuple[Notebook, str, bool]:
    """Submit the notebook job and wait (--wait) until its server answers on this login node: the
    notebook, the job's state and whether it answers."""
    from stardock_hpc import proc
    from stardock_hpc.jobs.request import apply_directives, parse_command_line
    from stardock_hpc.jobs.submit import prepare, submit, user_dirs
    from stardock_hpc.schedulers import get_scheduler
    from stardock_hpc.site import load_site
    from stardock_hpc.slurm.script import wrap_script

    args = split_args(argv)
    req = apply_directives(parse_command_line([f"--job-name={JOB_NAME}", *args.argv, "--wrap", "true"], cwd))
    if req.script is None or req.script.path is not None or req.args:
        raise UsageError("stardock notebook: it takes options only (the job runs JupyterLab), no script",
                         hint="stardock notebook (--env SPEC | --image KEY) [sbatch options] [--mount ...]")
    if req.debug:
        proc.enable_debug()
    site = load_site(req.site or site_option)
    if not _has_srun():
        raise UsageError("stardock notebook needs Slurm's srun on this login node (its way in is a job step)")
    records, _outputs = user_dirs(site, getpass.getuser())
    listen_in = runtime_dir(records, lambda msg: say(f"warning: {msg}"))  # checked before anything is submitted
    token = secrets.token_hex(24)
    req = replace(req, script=wrap_script(job_command(site.mount_root)), add_apps=(APP,), notebook_token=token)
    prepared = prepare(req, site, on_line, say=say)
    scheduler, _source = get_scheduler(req.backend, site)
    submitted = submit(req, prepared, site, scheduler, cwd, dict(os.environ),
                       warn=lambda msg: say(f"warning: {msg}"))
    if not submitted.job_id:
        raise ExternalError(f"Slurm did not take the notebook job: {submitted.messages or submitted.output}")
    nb = Notebook(submitted.job_id, token, args.port, login_socket(submitted.job_id, listen_in),
                  login_host())
    save(records, nb)
    say(f"submitted notebook job {nb.job}")
    ready, state = wait_for_server(records, nb, args.wait, lambda: job_state(nb.job, site), say)
    return nb, state, ready


def _has_srun() -> bool:
    import shutil

    return shutil.which("srun") is not None


def connect(job: str, site: Site, wait: float, say: Callable[[str], None]) -> Tuple[Notebook, str, bool]:
    """The notebook's way in on this login node (its forwarder started again if it is not running
    here: after a reboot, or on another login node)."""
    from stardock_hpc.jobs.report import user_records

    records = user_records(site).root
    nb = _mine(records, job)
    if not forwarder_running(nb):
        nb.forwarder = None
        nb.login_socket = login_socket(nb.job, runtime_dir(records, lambda msg: say(f"warning: {msg}")))
        nb.login_host = login_host()
    ready, state = wait_for_server(records, nb, wait, lambda: job_state(nb.job, site), say)
    return nb, state, ready


def _mine(records: Path, job: str) -> Notebook:
    base, task = split_job_id(job)
    nb = load(records, base) if task is None else None
    if nb is None:
        raise UsageError(f"job {job} is not a notebook of yours (`stardock notebook list` shows them)")
    return nb


def listing(site: Site) -> List[Dict]:
    """The user's notebooks whose jobs have not ended, with their state and way in; the records of
    those that ended are settled (their forwarders stopped)."""
    from stardock_hpc.jobs.report import user_records

    records = user_records(site).root
    out = []
    for nb in notebooks(records):
        state = job_state(nb.job, site)
        if state in TERMINAL:
            stop_forwarder(nb)
            (records / nb.job / RECORD).unlink(missing_ok=True)
            continue
        out.append({**nb.report(state), "reachable_here": forwarder_running(nb)})
    return out


def stop(job: str, site: Site) -> Notebook:
    """Cancel the notebook's job and stop its way in on this login node."""
    from stardock_hpc.jobs.report import cancel_job, user_records

    records = user_records(site).root
    nb = _mine(records, job)
    try:
        cancel_job(nb.job, site)
    except ExternalError:
        if job_state(nb.job, site) not in TERMINAL:
            raise
    stop_forwarder(nb)
    (records / nb.job / RECORD).unlink(missing_ok=True)
    return nb
