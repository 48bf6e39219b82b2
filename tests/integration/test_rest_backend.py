"""The REST backend against the testbed's real slurmrestd (22.05, rest_auth/jwt).

The same job script goes through `stardock sbatch --backend sbatch` and `--backend rest`, and
Slurm's record of the two jobs (`scontrol show job -o`) must be the same field for field, apart
from what cannot be: Command (sbatch names the script file; slurmrestd receives the script's text,
there is no file), AllocNode:Sid (where the submission came from: this host, or slurmrestd) and
AccrueTime (the scheduler's, see IGNORED).
Then the REST backend's own life cycle: status until COMPLETED, accounting (MaxRSS, exit code),
cancel, each API version, and one clear error for a missing token, a bad token and a stopped
slurmrestd. Stopping a slurmrestd mid-flight is in test_rest_outage.py.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from clitools import built_image, cancelled_at_exit, own_log, stardock, stardock_json
from resttools import free_port, jobs_named, rest_site, scontrol_records

from slurmtools import hog, mem_bytes, replace_job_ids, sacct, sh

pytestmark = [pytest.mark.slurm, pytest.mark.podman]

FIXTURES = Path(__file__).parent / "rest"
SPEC = 'name: rest-backend\nbuild: ["echo rest backend > /stamp"]\n'
# AccrueTime is written by the scheduler's own passes, not by the submission (of two identical held
# jobs with --begin, one may show the begin time and the other still Unknown; as in test_sbatch_fidelity)
IGNORED = {"Command", "AllocNode:Sid", "AccrueTime"}
TIME_FIELDS = {"SubmitTime", "EligibleTime", "StartTime", "EndTime", "LastSchedEval", "Deadline",
               "SuspendTime", "PreemptEligibleTime", "ResizeTime"}
ID_FIELDS = ("JobId", "ArrayJobId", "StdOut", "StdErr", "StdIn")


@dataclass
class Case:
    name: str
    script: Optional[str]
    cmdline: List[str] = field(default_factory=list)
    args: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    expected: Dict[str, str] = field(default_factory=dict)


CASES = [
    Case("twin", "twin.sh", ["--dependency=afterok:{held}"], ["alpha", "two words"], expected={
        "JobName": "rest-twin", "Partition": "batch", "TimeLimit": "00:10:00", "MinMemoryNode": "150M",
        "CPUs/Task": "2", "NumCPUs": "2", "ArrayTaskId": "0-2%2", "Dependency": "afterok:{held}(unfulfilled)",
        "StdOut": "{workdir}/twin-rest-twin-<ARRAY_JOB_ID>_4294967294.out",
        "StdErr": "{workdir}/twin-rest-twin-<ARRAY_JOB_ID>_4294967294.err"}),
    Case("wide", "wide.sh", ["--comment=rest_wide", "--nice=10", "--wckey=rest", "--acctg-freq=task=1",
                             "--cpu-freq=high", "--spread-job", "--use-min-nodes", "--gres-flags=enforce-binding",
                             "--chdir", "{workdir}/dir with space", "--export=ALL,REST=1", "--get-user-env",
                             "--wait-all-nodes=1", "--cluster-constraint=rest", "--profile=task",
                             "--mem-bind=local", "-e", "wide-%u-%j.err", "--nodelist={node}"],
         ["alpha", "two words", "$HOME"]),
    Case("precedence", "precedence.sh", ["--job-name=from-cmdline"], env={"SBATCH_TIMELIMIT": "20"}, expected={
        "JobName": "from-cmdline", "TimeLimit": "00:20:00", "MinMemoryNode": "150M", "Partition": "debug"}),
    Case("wrap", None, ["--wrap", "echo wrapped; hostname", "--time=1", "--ntasks=1", "--requeue"]),
]


def normalise(record: Dict[str, str]) -> Dict[str, str]:
    out = replace_job_ids(record, ID_FIELDS)
    return {k: v for k, v in out.items() if k not in IGNORED}


def differences(a: Dict[str, str], b: Dict[str, str]) -> List[str]:
    diffs = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        if key in TIME_FIELDS and a.get(key) and b.get(key):
            try:
                ta, tb = (datetime.strptime(v, "%Y-%m-%dT%H:%M:%S") for v in (a[key], b[key]))
                if abs((ta - tb).total_seconds()) <= 30:
                    continue
            except ValueError:
                pass
        diffs.append(f"  {key}: sbatch={a.get(key)!r} rest={b.get(key)!r}")
    return diffs


@pytest.fixture(scope="module")
def image_key():
    with built_image(SPEC, "stardock-rest-") as key:
        yield key


@pytest.fixture(scope="module")
def jobs():
    with cancelled_at_exit() as ids:
        yield ids


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rest")
    for script in FIXTURES.glob("*.sh"):
        shutil.copy(script, path / script.name)
    (path / "dir with space").mkdir()
    return path


@pytest.fixture(scope="module")
def node():
    return sh(["sinfo", "-h", "-N", "-o", "%N"]).stdout.split()[0]


def submit(workdir: Path, key: str, jobs: List[str], backend: str, *args: str, env=None, site=None,
           ok: bool = True):
    head = ["--site", str(site)] if site else []
    proc = stardock("sbatch", *head, "--backend", backend, "--image", key, "--parsable", *args, cwd=workdir,
                    env=env, timeout=180)
    match = re.fullmatch(r"([0-9]+)\n", proc.stdout)
    if match:
        jobs.append(match.group(1))
    if ok:
        assert proc.returncode == 0 and match, f"{backend}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc, match.group(1) if match else ""


def status(job: str, site: Optional[Path] = None) -> List[dict]:
    return stardock_json("status", job, *(["--site", str(site)] if site else []))


def wait_rows(job: str, done, site=None, timeout: float = 180) -> List[dict]:
    deadline = time.monotonic() + timeout
    rows: List[dict] = []
    while time.monotonic() < deadline:
        rows = status(job, site)
        if rows and done(rows):
            return rows
        time.sleep(1)
    raise AssertionError(f"job {job}: not there within {timeout}s; last status {rows}")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_same_job_held_through_sbatch_and_rest_agrees_in_scontrol(case, workdir, image_key, jobs, node):
    held = submit(workdir, image_key, jobs, "sbatch", "--hold", "-J", "rest-anchor", "--wrap", "true")[1]
    values = {"held": held, "workdir": str(workdir), "node": node}
    cmdline = [t.format(**values) for t in case.cmdline]
    script = [case.script] if case.script else []
    plain = submit(workdir, image_key, jobs, "sbatch", "--hold", *cmdline, *script, *case.args, env=case.env)[1]
    rest = submit(workdir, image_key, jobs, "rest", "--hold", *cmdline, *script, *case.args, env=case.env)[1]
    a, b = scontrol_records(plain), scontrol_records(rest)
    assert len(a) == len(b) == 1, (a, b)
    diffs = differences(normalise(a[0]), normalise(b[0]))
    assert not diffs, f"{case.name}: scontrol show job differs\n" + "\n".join(diffs)
    for key, value in case.expected.items():
        assert normalise(b[0])[key] == value.format(**values), (key, b[0][key])


def own_lines(log: str) -> list:
    return own_log(log).splitlines()


def test_the_same_job_runs_through_sbatch_and_rest(workdir, image_key, jobs):
    first = submit(workdir, image_key, jobs, "sbatch", "-J", "rest-first", "--wrap", "true")[1]
    ids = {backend: submit(workdir, image_key, jobs, backend, f"--dependency=afterok:{first}", "twin.sh",
                           "alpha", "two words")[1] for backend in ("sbatch", "rest")}
    for backend, job in ids.items():
        rows = wait_rows(job, lambda rs: len(rs) == 3 and all(r["state"] == "COMPLETED" for r in rs))
        assert sorted(r["job"] for r in rows) == [f"{job}_{t}" for t in range(3)], backend
        for task in range(3):
            out = workdir / f"twin-rest-twin-{job}_{task}.out"
            assert out.read_text() == f"task {task} of rest-twin: alpha two words\nrest backend\n", backend
            err = (workdir / f"twin-rest-twin-{job}_{task}.err").read_text()
            assert own_lines(err) == [], backend


def test_rest_status_until_completed_with_accounting(workdir, image_key, jobs):
    # holds 100 MB until the job's accounting has seen it (it samples once a second)
    (workdir / "mem.sh").write_text(f"#!/bin/bash\n#SBATCH --mem=500M\n#SBATCH --time=5\n{hog(100)}\n")
    (workdir / "fail.sh").write_text("#!/bin/bash\n#SBATCH --time=5\necho failing\nexit 3\n")
    good = submit(workdir, image_key, jobs, "rest", "-J", "rest-mem", "mem.sh")[1]
    bad = submit(workdir, image_key, jobs, "rest", "-J", "rest-fail", "fail.sh")[1]
    seen = set()
    rows = wait_rows(good, lambda rs: seen.add(rs[0]["state"]) or (rs[0]["state"] == "COMPLETED" and rs[0]["max_rss"]))
    assert seen & {"PENDING", "RUNNING", "COMPLETED"} and rows[0]["exit_code"] == "0:0"
    batch = {r["JobID"]: r for r in sacct(good)}[f"{good}.batch"]
    # the same number as sacct's (which may print it as 192.50M: two decimals)
    assert abs(mem_bytes(rows[0]["max_rss"]) - mem_bytes(batch["MaxRSS"])) <= 16 << 10, (rows[0], batch)
    assert mem_bytes(rows[0]["max_rss"]) > 100 << 20
    assert rows[0]["container_exit"] == 0 and rows[0]["name"] == "rest-mem"
    rows = wait_rows(bad, lambda rs: rs[0]["state"] == "FAILED")
    assert rows[0]["exit_code"] == "3:0" == {r["JobID"]: r for r in sacct(bad)}[bad]["ExitCode"]
    record = json.loads(next(Path.home().glob(f".local/share/stardock/jobs/{bad}/submit.json")).read_text())
    assert record["backend"] == "rest"


def test_rest_cancel(workdir, image_key, jobs):
    (workdir / "sleep.sh").write_text("#!/bin/bash\n#SBATCH --time=5\nsleep 300\n")
    job = submit(workdir, image_key, jobs, "rest", "-J", "rest-cancel", "sleep.sh")[1]
    wait_rows(job, lambda rs: rs[0]["state"] == "RUNNING")
    proc = stardock("cancel", job)
    assert proc.returncode == 0 and proc.stdout == f"cancelled {job}\n", proc.stderr
    rows = wait_rows(job, lambda rs: rs[0]["state"] == "CANCELLED", timeout=60)
    assert rows[0]["state"] == "CANCELLED"
    assert {r["JobID"]: r for r in sacct(job)}[job]["State"].startswith("CANCELLED")


@pytest.mark.parametrize("api", ["v0.0.36", "v0.0.37", "v0.0.38"])
def test_each_api_version_submits_shows_and_cancels(api, workdir, image_key, jobs, tmp_path):
    site = rest_site(tmp_path, rest_api=api)
    proc = stardock("sbatch", "--site", str(site), "--backend", "rest", "--image", image_key, "--parsable",
                    "--hold", "--debug", "twin.sh", "x", cwd=workdir, timeout=180)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    jobs.append(job)
    assert f"backend rest (from --backend option): slurmrestd http://127.0.0.1:6820, API {api} (site config " \
           "(scheduler.rest_api))" in proc.stderr
    [record] = scontrol_records(job)
    assert {k: record[k] for k in ("JobName", "Partition", "TimeLimit", "MinMemoryNode", "CPUs/Task", "ArrayTaskId")} \
        == {"JobName": "rest-twin", "Partition": "batch", "TimeLimit": "00:10:00", "MinMemoryNode": "150M",
            "CPUs/Task": "2", "ArrayTaskId": "0-2%2"}
    rows = status(job, site)
    assert rows[0]["job"] == f"{job}_[0-2%2]" and rows[0]["state"] == "PENDING"
    assert stardock("cancel", job, "--site", str(site)).returncode == 0
    wait_rows(job, lambda rs: all(r["state"] == "CANCELLED" for r in rs), site, timeout=60)


def forged_token(user: str) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'exp': int(time.time()) + 600, 'sun': user})}.Zm9yZ2Vk"


@pytest.mark.parametrize("trouble", ["missing token", "bad token", "garbage token", "stopped slurmrestd"])
def test_each_trouble_gives_one_clear_error(trouble, workdir, image_key, jobs, tmp_path):
    name = f"rest-trouble-{uuid.uuid4().hex[:8]}"
    site, env, code, fragment = {
        "missing token": (rest_site(tmp_path, rest_token="env"), {}, 2,
                          "no token for slurmrestd: $SLURM_JWT is not set"),
        "bad token": (rest_site(tmp_path), {"SLURM_JWT": forged_token(Path.home().name)}, 1, "rejected the token"),
        "garbage token": (rest_site(tmp_path), {"SLURM_JWT": "garbage"}, 1, "rejected the token"),
        "stopped slurmrestd": (rest_site(tmp_path, rest_url=f"http://127.0.0.1:{free_port()}"), {}, 1,
                               "cannot reach slurmrestd at http://127.0.0.1:"),
    }[trouble]
    proc, _job = submit(workdir, image_key, jobs, "rest", "-J", name, "twin.sh", env=env, site=site, ok=False)
    assert proc.returncode == code and proc.stdout == "", (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("stardock: error:")]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr
    assert jobs_named(name) == []


@pytest.mark.parametrize("backend", ["sbatch", "rest"])
def test_the_sites_partition_applies_only_where_the_user_names_none(backend, workdir, image_key, jobs, tmp_path):
    """scheduler.partition is the default; an #SBATCH line, $SBATCH_PARTITION or -p wins over it
    (the testbed's Slurm default is debug, the site's is batch)."""
    site = rest_site(tmp_path, partition="batch")
    (workdir / "plain.sh").write_text("#!/bin/bash\ntrue\n")
    (workdir / "directive.sh").write_text("#!/bin/bash\n#SBATCH --partition=debug\ntrue\n")
    cases = [("plain.sh", [], None, "batch"), ("plain.sh", ["-p", "debug"], None, "debug"),
             ("directive.sh", [], None, "debug"), ("plain.sh", [], {"SBATCH_PARTITION": "debug"}, "debug")]
    for script, args, env, expected in cases:
        _proc, job = submit(workdir, image_key, jobs, backend, "--hold", *args, script, env=env, site=site)
        assert scontrol_records(job)[0]["Partition"] == expected, (script, args, env)
