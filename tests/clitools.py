"""Run the stardock command as the test user or as the second test user (through sudo)."""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

OTHER = os.environ.get("STARDOCK_OTHER_USER", "stardock2")
# both engines, each test skipped by its engine's marker where that engine is missing
ENGINES = [pytest.param("podman", id="podman", marks=pytest.mark.podman),
           pytest.param("apptainer", id="apptainer", marks=pytest.mark.apptainer)]
PASS_THROUGH = ("PATH", "LANG", "SLURM_CONF", "STARDOCK_SITE_CONFIG", "STARDOCK_TESTBED",
                "STARDOCK_REST_URL", "STARDOCK_BASE_ARCHIVE")


def user_env(user: Optional[str]) -> Dict[str, str]:
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    pw = pwd.getpwnam(user) if user else pwd.getpwuid(os.getuid())
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name,
               XDG_RUNTIME_DIR=f"/run/user/{pw.pw_uid}")
    return env


def stardock_argv(*args: str, user: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> list:
    full = {**user_env(user), **(env or {})}
    base = [sys.executable, "-m", "stardock_hpc", *args]
    if user is None:
        return base
    return ["sudo", "-n", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in full.items()), *base]


def stardock(*args: str, user: Optional[str] = None, env: Optional[Dict[str, str]] = None,
             cwd: Optional[Path] = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    full = {**user_env(user), **(env or {})}
    return subprocess.run(stardock_argv(*args, user=user, env=env), capture_output=True, text=True,
                          env=full if user is None else None, cwd=cwd or "/tmp", timeout=timeout)


def stardock_json(*args: str, **kw) -> dict:
    proc = stardock(*args, "--json", **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


SHARED = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed")) / "shared"


def shared_dir(prefix: str = "stardock-test-") -> Path:
    """A directory both test users can read, on the storage every node shares (a job runs on a
    compute node, whose /tmp is its own)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=SHARED if SHARED.is_dir() else "/tmp"))
    path.chmod(0o755)
    return path


def write_spec(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = directory / "stardock.yaml"
    spec.write_text(text)
    for p in [directory, *directory.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return spec


def remove(path: Path) -> None:
    """path and what the user owns under it, read-only directories (published entries) included."""
    def writable_then_again(function, name, _exc):
        try:
            parent = os.path.dirname(name)
            os.chmod(parent, os.stat(parent).st_mode | 0o700)
            function(name)
        except OSError:
            pass  # not ours: what another user left is theirs to remove

    shutil.rmtree(path, onerror=writable_then_again)


@contextmanager
def built_image(spec_text: str, prefix: str) -> Iterator[str]:
    """Build a spec (in a directory both test users can read) and give its cache key."""
    directory = shared_dir(prefix)
    try:
        yield stardock_json("build", str(write_spec(directory, spec_text)))["key"]
    finally:
        remove(directory)


@contextmanager
def cancelled_at_exit() -> Iterator[List[str]]:
    """A list to put submitted job ids in; they are all cancelled at the end."""
    ids: List[str] = []
    try:
        yield ids
    finally:
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)


# What the wrapper says in a job's log of what an earlier job of the user left on the node (another
# job's containers: a task's wrapper SIGKILLed with its step, as mpirun's daemons are)
OTHER_JOBS_LEFTOVERS = re.compile(r"stardock: (removed|warning: could not remove) stardock-\S+, left on this node by "
                                  r"(a job that ended without cleaning up|an earlier job.*)")


def own_log(log: str) -> str:
    """A job's log but the wrapper's lines about other jobs' leftovers on its node."""
    lines = log.splitlines(keepends=True)
    return "".join(line for line in lines if not OTHER_JOBS_LEFTOVERS.fullmatch(line.rstrip("\n")))

