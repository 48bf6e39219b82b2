"""The testbed's Slurm cluster really runs jobs with limits, accounting and REST (issue 2)."""
from __future__ import annotations

import os
import subprocess

import pytest
import requests

from slurmtools import mem_bytes, sbatch, sh, wait_job

pytestmark = pytest.mark.slurm

# holds mb MiB until the job's accounting has seen it (it samples every second), a minute at most
ALLOC = """import os, subprocess, time
x = bytearray({mb} * 1024 * 1024)
x[::4096] = b"x" * len(x[::4096])
step = os.environ["SLURM_JOB_ID"] + ".batch"
for _ in range(600):
    out = subprocess.run(["sstat", "-n", "-P", "--noconvert", "-j", step, "-o", "MaxRSS"],
                         capture_output=True, text=True).stdout.split()
    if out and out[0].isdigit() and int(out[0]) >= {mb} * 1024 * 1024 * 9 // 10:
        break
    time.sleep(0.1)
"""


def alloc(directory, mb: int):
    path = directory / f"alloc-{mb}.py"
    path.write_text(ALLOC.format(mb=mb))
    return path


def test_job_with_mem_time_cpus_completes_with_maxrss(tmp_path):
    job = sbatch("--mem=300M", "--time=2", "--cpus-per-task=2", f"--chdir={tmp_path}",
                 f"--output={tmp_path}/out-%j.txt",
                 "--wrap", f"python3 {alloc(tmp_path, 120)}; nproc")
    rows = wait_job(job)
    main, batch = rows[job], rows[f"{job}.batch"]
    assert main["State"] == "COMPLETED", rows
    assert main["ExitCode"] == "0:0"
    assert main["Timelimit"] == "00:02:00"
    assert main["AllocCPUS"] == "2"
    assert main["ReqMem"] in ("300M", "300Mn")
    assert mem_bytes(batch["MaxRSS"]) >= 100 * 2**20, batch
    # task/cgroup confines the job to the two CPUs it asked for
    assert (tmp_path / f"out-{job}.txt").read_text().strip() == "2"


def test_job_over_its_memory_ends_out_of_memory(tmp_path):
    job = sbatch("--mem=100M", "--time=2", f"--chdir={tmp_path}", "--output=/dev/null",
                 "--wrap", f"python3 {alloc(tmp_path, 400)}")
    rows = wait_job(job)
    assert rows[job]["State"] == "OUT_OF_MEMORY", rows
    assert rows[job]["ExitCode"] == "0:125"


def _token() -> str:
    out = sh(["scontrol", "token", "lifespan=300"])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split("=", 1)[1]


def test_slurmrestd_answers_an_authenticated_ping_and_job_list():
    url = os.environ["STARDOCK_REST_URL"]
    headers = {"X-SLURM-USER-NAME": os.environ["USER"], "X-SLURM-USER-TOKEN": _token()}
    ping = requests.get(f"{url}/slurm/v0.0.38/ping", headers=headers, timeout=10)
    assert ping.status_code == 200, ping.text
    assert [p["ping"] for p in ping.json()["pings"]] == ["UP"]
    jobs = requests.get(f"{url}/slurm/v0.0.38/jobs", headers=headers, timeout=10)
    assert jobs.status_code == 200, jobs.text
    assert isinstance(jobs.json()["jobs"], list)


@pytest.mark.parametrize("headers", [
    {},
    {"X-SLURM-USER-NAME": "stardock"},
    {"X-SLURM-USER-NAME": "stardock", "X-SLURM-USER-TOKEN": "not.a.token"},
], ids=["no-headers", "no-token", "bad-token"])
def test_slurmrestd_rejects_requests_without_a_valid_token(headers):
    resp = requests.get(f"{os.environ['STARDOCK_REST_URL']}/slurm/v0.0.38/ping",
                        headers=headers, timeout=10)
    assert resp.status_code >= 400, (resp.status_code, resp.text)
    assert "pings" not in resp.text


def test_accounting_lists_the_test_user_under_the_science_account():
    out = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={os.environ['USER']}",
                          "format=cluster,account,user"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"stardock|science|{os.environ['USER']}"]
