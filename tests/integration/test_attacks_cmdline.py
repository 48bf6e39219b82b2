"""Another user reads every command line (issue 23, item 1): /proc/PID/cmdline is everybody's to
read, on the login node and on a compute node. The attacker (the second test user) polls all of
them on the login node while the victim builds and submits, and on the node (a plain `srun -w
NODE` job of theirs) while the victim's job runs, for both engines and all three backends. The
victim's session holds a real Slurm token (SLURM_JWT), passes secrets with --pass-env (named like
registry passwords, API keys and a proxy with user:password@) and with an #SBATCH --export, and
the image sets a variable of its own: none of their values may be seen. The container gets what
is named, exactly (hostile values included), not the token, and the image's BASH_ENV is sourced by
neither stardock's preflight nor the bash job script."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from clitools import ENGINES, OTHER, cancelled_at_exit, remove, shared_dir, stardock, write_spec
from resttools import rest_site

from stardock_hpc.schedulers.pyslurm_backend import slurm_conf

from slurmtools import sh, wait_job

pytestmark = [pytest.mark.slurm]

RUN = uuid.uuid4().hex[:12]  # this session's: one image per engine, built (and watched) once per session
IMAGE_SECRET = f"image-s3cret-{RUN}"
HOOK = '[ -n "$STARDOCK_OUTPUT" ] && echo "sourced by $0" >> "$STARDOCK_OUTPUT/hook"; true'
SPEC = f"""name: attacks-cmdline
env:
  IMAGE_SECRET: {IMAGE_SECRET}
  BASH_ENV: /opt/stardock-test/hook.sh
  ENV: /opt/stardock-test/hook.sh
build:
  - mkdir -p /opt/stardock-test
  - printf '%s\\n' '{HOOK}' > /opt/stardock-test/hook.sh
"""
HOSTILE = "it's \"quoted\" $HOME `id` $(id)\nsecond line  two  spaces ünïcödé ☃"
# the attacker's spy on the login node: every command line it can read, until told to stop
SPY = r"""
import os, sys, time
out, ready, stop = sys.argv[1:4]
seen = set()
open(ready, "w").close()
deadline = time.monotonic() + 1200
while not os.path.exists(stop) and time.monotonic() < deadline:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    seen.add(fh.read())
            except OSError:
                pass
    time.sleep(0.002)
with open(out + ".part", "wb") as fh:
    fh.write(b"\n".join(seen))
os.rename(out + ".part", out)
"""
REPORT = 'env -0; printf "TEST_HOOK=%s\\0" "$(cat "$STARDOCK_OUTPUT/hook" 2>/dev/null)"'
# the victim's own look at the environments of its job's processes on the node (the job's, not the login's)
JOB_ENVIRONS = r"""for d in /proc/[0-9]*; do
    tr '\0' '\n' < $d/environ 2>/dev/null | grep -qx "SLURM_JOB_ID=$0" || continue
    tokens=$(tr '\0' '\n' < $d/environ | grep -c '^SLURM_JWT=')
    printf '%s %s\n' "$(tr '\0\n' '  ' < $d/cmdline | cut -c1-300)" "$tokens"
done"""
READ_COMMAND_LINES = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null"


def _pyslurm_reason():
    if slurm_conf() is None:
        return "no Slurm config: pyslurm cannot even be imported"
    probe = subprocess.run([sys.executable, "-c", "import pyslurm"], capture_output=True, text=True, timeout=60)
    return None if probe.returncode == 0 else "pyslurm cannot be imported here (see test_pyslurm_backend.py)"


PYSLURM = _pyslurm_reason()
BACKENDS = ["sbatch", "rest", pytest.param("pyslurm", marks=pytest.mark.skipif(PYSLURM is not None,
                                                                                reason=PYSLURM or ""))]


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    path = shared_dir("stardock-cmdline-")
    (path / "spy").mkdir()
    (path / "spy").chmod(0o1777)  # the attacker writes what it saw there
    write_spec(path / "env", SPEC)
    yield path
    sh(["sudo", "-n", "-u", OTHER, "--", "rm", "-rf", str(path / "spy")])
    remove(path)


@pytest.fixture(scope="module")
def token() -> str:
    """The victim's real Slurm token, as the REST backend's documentation has users set it."""
    out = sh(["scontrol", "token", "lifespan=3600"])
    assert out.returncode == 0 and out.stdout.startswith("SLURM_JWT="), out.stderr
    return out.stdout.strip().split("=", 1)[1]


@contextmanager
def login_spy(place: Path) -> Iterator[List[bytes]]:
    """The attacker polls every command line on this (the login) node while the block runs."""
    name = uuid.uuid4().hex[:8]
    out, ready, stop = (place / "spy" / f"{name}.{what}" for what in ("seen", "ready", "stop"))
    spy = subprocess.Popen(["sudo", "-n", "-u", OTHER, "--", sys.executable, "-c", SPY, str(out), str(ready),
                            str(stop)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: List[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert spy.poll() is None and time.monotonic() < deadline, spy.stderr.read() if spy.stderr else ""
            time.sleep(0.05)
        yield seen
    finally:
        stop.write_text("")
        spy.wait(timeout=120)
    seen.extend(out.read_bytes().split(b"\n"))


def node_command_lines(job: str, marker: str) -> str:
    """The attacker's own job on the victim's node reads every command line there, once the
    victim's job is at its marker (its container is up)."""
    seen = ""
    for _ in range(180):
        node = sh(["squeue", "-h", "-j", job, "-o", "%N"]).stdout.strip()
        if node:
            proc = sh(["sudo", "-n", "-u", OTHER, "--", "env", f"SLURM_CONF={os.environ['SLURM_CONF']}", "srun",
                       "-w", node, "-N1", "-n1", "-t", "2", "sh", "-c", READ_COMMAND_LINES])
            seen = proc.stdout
            if marker in seen:
                return seen
        state = sh(["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip()
        assert state in ("PENDING", "CONFIGURING", "RUNNING", ""), f"job {job} is {state}"
        time.sleep(1)
    raise AssertionError(f"the attacker never saw the victim's job {job} on its node")


def container_env(stdout) -> Dict[str, str]:
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    return dict(r.split("=", 1) for r in text.split("\0") if "=" in r)


def secrets_seen(seen: bytes, secrets: Dict[str, str]) -> List[str]:
    return [name for name, value in secrets.items() if value.encode() in seen]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_no_secret_of_the_victim_is_on_any_command_line_and_the_container_gets_what_is_named(
        place, token, engine, backend):
    unique = uuid.uuid4().hex
    secrets = {"SLURM_JWT": token, "PASSED_SECRET": f"passed-{unique}", "EXPORTED_SECRET": f"exported-{unique}",
               "DOCKER_PASSWORD": f"docker-{unique}", "GOOGLE_API_KEY": f"google-{unique}",
               "https_proxy": f"proxypw-{unique}", "NOT_NAMED": f"notnamed-{unique}", "IMAGE_SECRET": IMAGE_SECRET}
    session = {"SLURM_JWT": token, "PASSED_SECRET": f"{secrets['PASSED_SECRET']} {HOSTILE}",
               "DOCKER_PASSWORD": secrets["DOCKER_PASSWORD"], "GOOGLE_API_KEY": secrets["GOOGLE_API_KEY"],
               "https_proxy": f"http://victim:{secrets['https_proxy']}@proxy.invalid:3128",
               "NOT_NAMED": secrets["NOT_NAMED"]}
    marker = f"{uuid.uuid4().int % 1000 + 7000}.{uuid.uuid4().int % 10 ** 6:06d}"
    script = place / f"job-{unique[:8]}.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --export=ALL,EXPORTED_SECRET={secrets['EXPORTED_SECRET']}\n"
                      f"{REPORT}\nprintf 'STEP\\0'\nsrun -n1 /usr/bin/env -0\nsleep {marker}\n")
    script.chmod(0o755)
    site = rest_site(place)
    with cancelled_at_exit() as jobs:
        with login_spy(place) as on_login:
            proc = stardock("sbatch", "--site", str(site), "--backend", backend, "--engine", engine, "--parsable",
                            "--env", str(place / "env" / "stardock.yaml"),
                            "--pass-env", "PASSED_SECRET,DOCKER_PASSWORD,GOOGLE_API_KEY,https_proxy",
                            "--time=5", f"--output={place}/out-%j.bin", f"--error={place}/err-%j.txt", str(script),
                            env=session, cwd=place)
            assert proc.returncode == 0, proc.stderr
            job = proc.stdout.strip().split(";")[0]
            jobs.append(job)
        assert any(b"stardock_hpc" in line and b"sbatch" in line for line in on_login), "the spy saw the submission"
        assert secrets_seen(b"\n".join(on_login), secrets) == [], "read on the login node"
        try:
            on_node = node_command_lines(job, f"sleep {marker}")
            environs = sh(["srun", f"--jobid={job}", "--overlap", "-N1", "-n1", "-t", "1", "sh", "-c", JOB_ENVIRONS,
                           job]).stdout
        finally:
            stardock("cancel", job, "--site", str(site))
        assert secrets_seen(on_node.encode(), secrets) == [], "read on the job's node"
        wait_job(job, timeout=120)
    batch, _, step = (place / f"out-{job}.bin").read_bytes().partition(b"\0STEP\0")
    env, task = container_env(batch), container_env(step)  # the batch script's, and an srun task's
    err = (place / f"err-{job}.txt").read_text()
    expected = {"PASSED_SECRET": session["PASSED_SECRET"], "EXPORTED_SECRET": secrets["EXPORTED_SECRET"],
                "DOCKER_PASSWORD": session["DOCKER_PASSWORD"], "GOOGLE_API_KEY": session["GOOGLE_API_KEY"],
                "https_proxy": session["https_proxy"], "IMAGE_SECRET": IMAGE_SECRET, "TEST_HOOK": ""}
    assert {k: env.get(k) for k in expected} == expected, err
    assert not {"SLURM_JWT", "NOT_NAMED", "BASH_ENV", "ENV"} & env.keys(), err
    assert env.get("SLURM_JOB_ID") == job
    assert "stardock-node" in environs, environs  # the job's wrapper, whose environment is the job's
    if backend != "sbatch":  # sbatch sends its own environment (it authenticates with the token)
        assert not [line for line in environs.splitlines() if not line.endswith(" 0")], environs
    assert task.get("PASSED_SECRET") == session["PASSED_SECRET"] and task.get("SLURM_STEP_ID") == "0", err
    assert not {"SLURM_JWT", "NOT_NAMED", "BASH_ENV", "ENV"} & task.keys(), err


@pytest.mark.parametrize("engine", ENGINES)
def test_stardock_exec_on_the_login_node_shows_no_secret(place, token, engine):
    """The same run on the login node: the session's Slurm variables (its token among them) and
    the image's own variables, while another user reads every command line there."""
    marker = f"marker-{uuid.uuid4().hex}"
    unique = f"slurm-{uuid.uuid4().hex}"
    with login_spy(place) as seen:
        proc = stardock("exec", "--engine", engine, "--env", str(place / "env" / "stardock.yaml"), "--",
                        "/bin/bash", "-c", REPORT, marker, cwd=place,
                        env={"SLURM_JWT": token, "SLURM_STARDOCK_TEST": f"{unique} {HOSTILE}"})
        assert proc.returncode == 0, proc.stderr
    assert any(marker.encode() in line for line in seen), "the spy saw the container's engine"
    assert secrets_seen(b"\n".join(seen), {"SLURM_JWT": token, "IMAGE_SECRET": IMAGE_SECRET,
                                           "SLURM_STARDOCK_TEST": unique}) == []
    env = container_env(proc.stdout)
    assert env.get("SLURM_STARDOCK_TEST") == f"{unique} {HOSTILE}" and env.get("IMAGE_SECRET") == IMAGE_SECRET
    assert "SLURM_JWT" not in env and "BASH_ENV" not in env and env.get("TEST_HOOK") == "", proc.stderr
