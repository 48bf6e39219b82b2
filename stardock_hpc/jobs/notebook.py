"""`stardock notebook`: JupyterLab in the user's environment as a Slurm job, next to the data
(JOVIAL's notebooks; Open OnDemand's batch-connect apps), reached through the login node.

The job: the batch script runs `jupyter lab` in the container on a Unix socket in a directory of
the job's own on the node (0700, bound into the container), never on a TCP port; its kernels
talk over Unix sockets too (ipc transport) and stay in the job's cgroup. The token is made here,
kept among the user's records and handed to the server in a config file in the job's private
directory (never on a command line or in the environment, which the engines put on theirs,
where `ps` would show it to everybody on the node).

The way in (jobs/relay.py): a forwarder on the login node listens on a Unix socket in the user's
private runtime directory and carries connections over an `srun --overlap` step of the job; from
their own computer the user runs `ssh -N -L PORT:SOCKET user@login` and opens the printed URL.
"""
from __future__ import annotations

import getpass
import http.client
import json
import os
import secrets
import shlex
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from stardock_hpc.errors import ExternalError, StardockError, UsageError
from stardock_hpc.jobs.records import RecordStore, split_job_id
from stardock_hpc.slurm.values import TERMINAL

if TYPE_CHECKING:
    from stardock_hpc.site import Site

APP = "jupyterlab"                 # the catalog app a notebook needs (added to --env SPEC)
DIR_IN_CONTAINER = ".notebook"     # under the mount root: the server's socket (hidden in the lab)
SOCKET = "jupyter.sock"
RECORD = "notebook.json"           # <records>/<job>/notebook.json
JOB_NAME = "stardock-notebook"
DEFAULT_PORT = 8888
OWN_OPTIONS = ("port", "wait", "json")


def job_command(mount_root: str) -> str:
    """The batch script's command (it runs in the container)."""
    sock = f"{mount_root}/{DIR_IN_CONTAINER}/{SOCKET}"
    return ("exec jupyter lab --no-browser " + shlex.join([
        f"--sock={sock}", "--sock-mode=0600", f"--ServerApp.root_dir={mount_root}",
        "--KernelManager.transport=ipc"]))


def write_config(directory: Path, target: str, token: str) -> Dict[str, str]:
    """The server's config, with its token, in the job's private directory (target: where the
    container sees it); the environment that points the server at it. Not the token itself in the
    environment: the engines put the environment on their command lines, which `ps` shows to
    everybody on the node."""
    config = directory / "config"
    config.mkdir(mode=0o700)
    fd = os.open(config / "jupyter_server_config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"IdentityProvider": {"token": token}}, fh)
    return {"JUPYTER_CONFIG_DIR": f"{target}/config"}


# --- the login side -----------------------------------------------------------------------------

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


def runtime_dir() -> Path:
    """Where the login node's end of a notebook listens: the user's private runtime directory."""
    from stardock_hpc.jobs.userdirs import private_dir

    user, uid = getpass.getuser(), os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        try:
            st = os.lstat(runtime)
            if st.st_uid == uid and not st.st_mode & 0o077 and os.path.isdir(runtime) and not os.path.islink(runtime):
                return private_dir(f"{runtime}/stardock", user, uid, "runtime directory ($XDG_RUNTIME_DIR)")
        except OSError:
            pass
    return private_dir("/tmp/stardock-{user}", user, uid, "runtime directory (/tmp/stardock-USER)")


def login_host() -> str:
    return socket.getfqdn()


@dataclass
class Notebook:
    job: str
    token: str
    port: int
    login_socket: str
    login_host: str
    node: Optional[str] = None
    forwarder: Optional[int] = None

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/lab?token={self.token}"

    @property
    def tunnel(self) -> List[str]:
        return ["ssh", "-N", "-L", f"{self.port}:{self.login_socket}", f"{getpass.getuser()}@{self.login_host}"]

    def to_json(self) -> Dict:
        return {"job": self.job, "token": self.token, "port": self.port, "login_socket": self.login_socket,
                "login_host": self.login_host, "node": self.node, "forwarder": self.forwarder}

    @classmethod
    def from_json(cls, data: Dict) -> Notebook:
        return cls(str(data["job"]), str(data["token"]), int(data["port"]), str(data["login_socket"]),
                   str(data["login_host"]), data.get("node"), data.get("forwarder"))

    def report(self, state: str) -> Dict:
        return {**self.to_json(), "state": state, "url": self.url, "tunnel": shlex.join(self.tunnel)}


def new_notebook(job: str, port: int) -> Notebook:
    return Notebook(job, secrets.token_hex(24), port, str(runtime_dir() / f"notebook-{job}.sock"), login_host())


def save(records: Path, nb: Notebook) -> None:
    from stardock_hpc.fsutil import write_atomic

    d = records / nb.job
    d.mkdir(mode=0o700, exist_ok=True)
    write_atomic(d / RECORD, json.dumps(nb.to_json(), indent=2, sort_keys=True) + "\n", mode=0o600)


def load(records: Path, job: str) -> Optional[Notebook]:
    try:
        return Notebook.from_json(json.loads((records / job / RECORD).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StardockError(f"{records / job / RECORD}: not a notebook record ({exc})") from None


def notebooks(records: Path) -> List[Notebook]:
    found = []
    for job in RecordStore(records).jobs():
        nb = load(records, job)
        if nb is not None:
            found.append(nb)
    return found


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
    run_record = records / nb.job / "run.json"
    argv = [sys.executable, "-m", "stardock_hpc.jobs.relay", "login", str(listen), str(run_record),
            str(records / nb.job / "notebook.log"), "--", *relay_step_argv(nb.job, nb.node, server_socket)]
    child = proc.spawn(argv, detach=True, stderr=os.open(records / nb.job / "notebook.log",
                                                         os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                                                         0o600))
    deadline = time.monotonic() + 10
    while not listen.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            raise ExternalError(f"the notebook's forwarder did not start; see {records / nb.job / 'notebook.log'}")
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
    runtime_dir()  # before anything is submitted: where the login end will listen
    token = secrets.token_hex(24)
    req = replace(req, script=wrap_script(job_command(site.mount_root)), add_apps=(APP,), notebook_token=token)
    prepared = prepare(req, site, on_line, say=say)
    scheduler, _source = get_scheduler(req.backend, site)
    submitted = submit(req, prepared, site, scheduler, cwd, dict(os.environ),
                       warn=lambda msg: say(f"warning: {msg}"))
    if not submitted.job_id:
        raise ExternalError(f"Slurm did not take the notebook job: {submitted.messages or submitted.output}")
    nb = Notebook(submitted.job_id, token, args.port, str(runtime_dir() / f"notebook-{submitted.job_id}.sock"),
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
        nb.login_socket = str(runtime_dir() / f"notebook-{nb.job}.sock")
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
