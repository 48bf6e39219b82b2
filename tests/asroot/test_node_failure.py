"""Issue 12, as root: a compute node crashes under a stardock job (`testbed node-down`, every
process of the node SIGKILLed at once): the job ends NODE_FAIL (or is requeued under --requeue),
`stardock status` says so, and after `testbed node-up` the node is idle again and the next job
there removes what the dead job left behind."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from slurmtools import node_podman_argv

STATE = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed"))
TESTBED = Path(__file__).resolve().parents[2] / "slurm" / "testbed" / "testbed"
USER = os.environ.get("STARDOCK_TEST_USER", "stardock")
PYTHON = STATE / "venv" / "bin" / "python"
pytestmark = pytest.mark.slurm


def as_user(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"HOME": f"/home/{USER}", "USER": USER, "LOGNAME": USER, "PATH": f"{STATE}/venv/bin:/usr/bin:/bin",
           "SLURM_CONF": str(STATE / "etc" / "slurm.conf"), "STARDOCK_SITE_CONFIG": str(STATE / "etc" / "site.yaml"),
           "XDG_RUNTIME_DIR": f"/run/user/{int(subprocess.check_output(['id', '-u', USER]))}"}
    return subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
                          capture_output=True, text=True, cwd=cwd, timeout=900)


def stardock(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return as_user(str(PYTHON), "-m", "stardock_hpc", *args, cwd=cwd)


def scontrol_state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return next((t.split("=", 1)[1] for t in out.split() if t.startswith("JobState=")), "")


def wait(what: str, check, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def run_testbed(*args: str) -> None:
    proc = subprocess.run([str(TESTBED), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def node_state(name: str) -> str:
    return subprocess.run(["sinfo", "-h", "-n", name, "-o", "%T"], capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def work():
    path = STATE / "shared" / f"node-failure-{os.getpid()}"
    path.mkdir(mode=0o755)
    subprocess.run(["chown", USER, str(path)], check=True)
    (path / "stardock.yaml").write_text("name: node-failure\n")
    (path / "long.sh").write_text("#!/bin/bash\necho started\nsleep 600\n")
    yield path
    subprocess.run(["rm", "-rf", str(path)])


CASES = {"fails": ["--no-requeue"], "requeued": ["--requeue"]}  # Slurm requeues batch jobs by default


@pytest.fixture(scope="module")
def crash(work):
    """One crash of the node under a job of each kind (waiting out Slurm's node timeout once), the
    node back, the requeued job cancelled, and the next job on the node: what each case checks."""
    node = "node2"
    jobs = {}
    for case, extra in CASES.items():
        proc = stardock("sbatch", "--parsable", f"--nodelist={node}", *extra, f"--output=long-{case}-%j.out",
                        "--env", "stardock.yaml", "long.sh", cwd=work)
        assert proc.returncode == 0, proc.stderr
        jobs[case] = proc.stdout.strip()
    seen = {}
    try:
        for case, job in jobs.items():
            out = work / f"long-{case}-{job}.out"
            wait(f"the {case} job's container to start", lambda out=out: out.exists() and "started" in out.read_text())
        run_testbed("node-down", node)
        requeued = ("PENDING", "REQUEUED", "CONFIGURING")
        wait("the job to be requeued", lambda: scontrol_state(jobs["requeued"]) in requeued)
        seen["requeued"] = scontrol_state(jobs["requeued"])
        # cancelled before the node is back: started again there, its wrapper would remove what the
        # dead jobs left before the next job can show that it does
        subprocess.run(["scancel", jobs["requeued"]])
        wait("the job to end NODE_FAIL", lambda: scontrol_state(jobs["fails"]) == "NODE_FAIL")
        seen["fails"] = json.loads(stardock("status", jobs["fails"], "--json", cwd=work).stdout)
        run_testbed("node-up", node)
        wait(f"{node} to be back", lambda: node_state(node) in ("idle", "mixed", "allocated"))
    finally:
        subprocess.run(["scancel", *jobs.values()])
    # the next job on the node removes the dead jobs' containers (their wrappers never cleaned up)
    proc = stardock("sbatch", "--parsable", f"--nodelist={node}", "--output=next-%j.out", "--env", "stardock.yaml",
                    "--wrap", "true", cwd=work)
    assert proc.returncode == 0, proc.stderr
    following = proc.stdout.strip()
    wait("the next job to finish", lambda: scontrol_state(following) in ("COMPLETED", "FAILED"))
    listed = as_user(*node_podman_argv(node, "ps", "-a", "--format", "{{.Names}}"), cwd=work)
    return {"node": node, "jobs": jobs, "seen": seen, "next": following,
            "next_state": scontrol_state(following), "next_out": (work / f"next-{following}.out").read_text(),
            "listed": listed}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_node_crash_under_a_job_ends_it_and_the_node_comes_back_clean(crash, case):
    job = crash["jobs"][case]
    if case == "requeued":
        assert crash["seen"]["requeued"] in ("PENDING", "REQUEUED", "CONFIGURING"), crash["seen"]
    else:
        rows = crash["seen"]["fails"]
        assert rows[0]["state"] == "NODE_FAIL", rows
    assert crash["next_state"] == "COMPLETED", crash["next_out"]
    assert f"removed stardock-{job}-" in crash["next_out"], crash["next_out"]
    listed = crash["listed"]
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    assert not [n for n in names if n.startswith(f"stardock-{job}-")], names
