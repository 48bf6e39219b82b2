"""`stardock notebook`: JupyterLab in the user's environment as a Slurm job, next to the data
(JOVIAL's notebooks; Open OnDemand's batch-connect apps), reached through the login node.

This module is the job's side and the notebook's record. The job: the batch script runs `jupyter
lab` in the container on a Unix socket in a directory of the job's own on the node (0700, bound
into the container), never on a TCP port; its kernels talk over Unix sockets too (ipc
transport) and stay in the job's cgroup. The token is made at submission, kept among the user's
records and handed to the server in a config file in the job's private directory (never on a
command line or in the environment, which the engines put on theirs, where `ps` would show it to
everybody on the node).

The login node's side (notebook_login.py) submits the job and makes the way in: a forwarder
listening on a Unix socket in the user's private runtime directory carries connections over an
`srun --overlap` step of the job (relay.py); from their own computer the user runs `ssh -N -L
PORT:SOCKET user@login` and opens the printed URL.
"""
from __future__ import annotations

import getpass
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from stardock_hpc.errors import StardockError
from stardock_hpc.jobs.records import RecordStore

APP = "jupyterlab"                 # the catalog app a notebook needs (added to --env SPEC)
DIR_IN_CONTAINER = ".notebook"     # under the mount root: the server's socket (hidden in the lab)
SOCKET = "jupyter.sock"
RECORD = "notebook.json"           # <records>/<job>/notebook.json
LOG = "notebook.log"               # <records>/<job>/notebook.log: the login node's forwarder
JOB_NAME = "stardock-notebook"
DEFAULT_PORT = 8888


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


# --- the notebook's record (<records>/<job>/notebook.json) ------------------------------------

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
