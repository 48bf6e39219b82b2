"""`stardock notebook`'s command line and where its login end listens: bad input is one clear
usage error (exit 2, no traceback) before anything is submitted, and the login socket's
directory is the user's own or nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs import notebook, notebook_login


def stardock(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stardock_hpc", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, timeout=60)


def test_its_own_options_come_out_and_the_rest_goes_to_the_submission():
    args = notebook_login.split_args(["--env", "s.yaml", "--port=9000", "--time=1:00:00", "--wait", "5", "--json",
                                "--mem", "2G"])
    assert args.argv == ["--env", "s.yaml", "--time=1:00:00", "--mem", "2G"]
    assert (args.port, args.wait, args.as_json) == (9000, 5.0, True)


@pytest.mark.parametrize("argv, message", [
    (["--port", "80"], "--port 80 is not a port from 1024 to 65535"),
    (["--port=x"], "--port 'x' is not a number"),
    (["--wait", "-1"], "--wait -1 is negative"),
    (["--wait"], "--wait needs a value"),
    (["--wrap", "true"], "--wrap is not for notebooks"),
])
def test_bad_options_are_named(argv, message):
    with pytest.raises(UsageError, match=message):
        notebook_login.split_args(argv)


@pytest.mark.parametrize("argv, message", [
    (["notebook", "--port", "22", "--image", "k"], "--port 22 is not a port"),
    (["notebook", "stop"], "stardock notebook stop: give one JOBID"),
    (["notebook", "connect", "1", "2"], "stardock notebook connect: give one JOBID"),
    (["notebook", "stop", "12; rm -rf /"], "is not a job id"),
    (["notebook", "list", "extra"], "stardock notebook list: unexpected extra"),
])
def test_the_command_says_what_is_wrong_and_exits_2(argv, message, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"engine: podman\ncache: {tmp_path / 'cache'}\nbases: {{}}\nvolumes: {{}}\n"
                    f"records: {tmp_path / 'records'}\noutputs: {tmp_path / 'out'}\n")
    out = stardock(*argv, env={"STARDOCK_SITE_CONFIG": str(site)})
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_the_login_end_listens_in_the_users_private_runtime_directory(tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    where = notebook_login.runtime_dir()
    assert where == runtime / "stardock" and oct(where.stat().st_mode & 0o777) == "0o700"


def test_a_runtime_directory_others_can_enter_is_not_used(tmp_path, monkeypatch):
    """$XDG_RUNTIME_DIR open to others (or not the user's): the login end goes to /tmp/stardock-USER,
    checked as any private directory (made 0700, or refused when someone else made it)."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o755)
    runtime.chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    seen = []
    monkeypatch.setattr("stardock_hpc.jobs.userdirs.private_dir",
                        lambda template, user, uid, what: seen.append(template) or Path(tmp_path / "fallback"))
    assert notebook_login.runtime_dir() == tmp_path / "fallback"
    assert seen == ["/tmp/stardock-{user}"]


def test_the_token_goes_to_the_server_in_a_private_config_file(tmp_path):
    import json

    directory = tmp_path / "notebook"
    directory.mkdir(mode=0o700)
    env = notebook.write_config(directory, "/data/.notebook", "t0ken")
    assert env == {"JUPYTER_CONFIG_DIR": "/data/.notebook/config"} and "t0ken" not in repr(env)
    config = directory / "config" / "jupyter_server_config.json"
    assert json.loads(config.read_text()) == {"IdentityProvider": {"token": "t0ken"}}
    assert oct(config.stat().st_mode & 0o777) == "0o600" and oct(config.parent.stat().st_mode & 0o777) == "0o700"
