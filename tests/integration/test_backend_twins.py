"""sbatch, REST and pyslurm: the same jobs through each backend, compared.

For each backend that does not run sbatch (rest, and pyslurm where it is installed) and each case
of the fidelity corpus (test_sbatch_fidelity.CASES): the options the backend cannot carry are
found from the option table itself (each is listed with the table's reason and must be one of
the expected exceptions below), both the sbatch backend and the other one submit the rest of the
case held, and `scontrol show job` must agree field for field, apart from the fields listed in
FIELD_EXCEPTIONS with their reasons. Then the job's environment (what sbatch sets from its
options), status of arrays, single tasks and pending arrays, cancel of jobs, tasks and arrays,
and accounting, through each backend against the sbatch backend.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from clitools import built_image, cancelled_at_exit, stardock, stardock_json
from test_pyslurm_backend import REASON as PYSLURM_REASON
from test_sbatch_fidelity import CASES, FIXTURES, Case, differences, scontrol_records

from stardock_hpc.errors import UsageError
from stardock_hpc.schedulers import job_options as jo
from stardock_hpc.slurm.options import Option, parse_options
from stardock_hpc.slurm.script import parse_script

from slurmtools import replace_job_ids, sh

pytestmark = [pytest.mark.slurm, pytest.mark.podman]
SPEC = 'name: backend-twins\nbuild: ["echo twins > /stamp"]\n'


BACKENDS = [pytest.param("rest", id="rest"),
            pytest.param("pyslurm", id="pyslurm",
                         marks=pytest.mark.skipif(PYSLURM_REASON is not None, reason=PYSLURM_REASON or ""))]

# Fields of `scontrol show job` that cannot agree, and why.
FIELD_EXCEPTIONS: Dict[str, Dict[str, str]] = {
    "rest": {"Command": "slurmrestd receives the script's text: there is no script file",
             "AllocNode:Sid": "the submission comes from slurmrestd, not from this process"},
    "pyslurm": {"NumNodes": "without --nodes pyslurm 22.5 sends the minimum as the maximum too (1-1); sbatch "
                            "sends none (1). stardock sends the task count as the maximum, so tasks may spread as "
                            "with sbatch"},
}
SCHEDULER_STATE = {"AccrueTime"}  # written by the scheduler's passes (as in test_sbatch_fidelity)
# The corpus options each backend cannot carry (the table's reasons are printed by the test).
EXPECTED_REFUSALS = {
    "rest": {"--contiguous", "--signal=B:USR1@60", "--overcommit", "--extra-node-info=1:2:1", "--export=NONE",
             "--hint=nomultithread", "--network=fidelity", "--export-file=/dev/null", "--propagate=STACK",
             "--oversubscribe", "--power=level", "--switches=1@00:10:00"},
    "pyslurm": {"--distribution=cyclic", "--signal=B:USR1@60", "--extra-node-info=1:2:1", "--export=NONE",
                "--hint=nomultithread", "--mem-bind=local", "--export-file=/dev/null", "--propagate=STACK",
                "--power=level", "--mincpus=2", "--switches=1@00:10:00"},
}


def refusal(option: Option, backend: str) -> Optional[str]:
    """Why the backend cannot carry this option (the option table's words), or None."""
    try:
        jo.describe([option], jo.Ctx("/"), backend)
        if option.name == "export":
            jo.export_environment(option.value, {})
    except UsageError as exc:
        return exc.message.split("\n", 1)[-1].strip().split(": ", 1)[-1]
    return None


def carried(case: Case, backend: str, workdir: Path, cmdline: List[str]) -> Tuple[Optional[str], List[str], Dict]:
    """The case without what the backend cannot carry: a script file (or None), the command line,
    and the refused options with their reasons."""
    refused: Dict[str, str] = {}
    script_name = None
    if case.script:
        text = (FIXTURES / case.script).read_text()
        drop = set()
        for number, options in parse_script(text, None, case.script).sbatch_lines:
            for option in options:
                why = refusal(option, backend)
                if why:
                    refused[" ".join(option.tokens)] = why
                    drop.add(number)
        kept = [line for number, line in enumerate(text.splitlines(keepends=True), 1) if number not in drop]
        script_name = f"{backend}-{case.script}"
        (workdir / script_name).write_text("".join(kept))
    kept_tokens: List[str] = []
    for option in parse_options(cmdline, "command line"):
        why = refusal(option, backend) if option.name != "wrap" else None
        if why:
            refused[" ".join(option.tokens)] = why
        else:
            kept_tokens += option.tokens
    return script_name, kept_tokens, refused


def normalise(record: Dict[str, str], backend: str) -> Dict[str, str]:
    out = replace_job_ids(record, ("JobId", "ArrayJobId", "StdOut", "StdErr", "StdIn"))
    # both backends write the job script under its own name in a private temporary directory
    out["Command"] = re.sub(r"/tmp/stardock-job-[^/ ]+/", "<TMP>/", out.get("Command", ""))
    return {k: v for k, v in out.items() if k not in FIELD_EXCEPTIONS[backend] and k not in SCHEDULER_STATE}


@pytest.fixture(scope="module")
def image_key():
    with built_image(SPEC, "stardock-twins-") as key:
        yield key


@pytest.fixture(scope="module")
def jobs():
    with cancelled_at_exit() as ids:
        yield ids


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("twins")
    for script in FIXTURES.glob("*.sh"):
        shutil.copy(script, path / script.name)
    (path / "dir with space").mkdir()
    return path


@pytest.fixture(scope="module")
def node():
    return sh(["sinfo", "-h", "-N", "-o", "%N"]).stdout.split()[0]


def submit(workdir: Path, key: str, jobs: List[str], backend: str, *args: str, env=None) -> str:
    proc = stardock("sbatch", "--backend", backend, "--image", key, "--parsable", *args, cwd=workdir, env=env,
                    timeout=180)
    match = re.fullmatch(r"([0-9]+)\n", proc.stdout)
    assert proc.returncode == 0 and match, f"{backend}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
    jobs.append(match.group(1))
    return match.group(1)


REFUSED_SEEN: Dict[str, Dict[str, str]] = {"rest": {}, "pyslurm": {}}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_fidelity_corpus_gives_slurm_the_same_job_through_each_backend(backend, case, workdir, image_key,
                                                                           jobs, node):
    held = submit(workdir, image_key, jobs, "sbatch", "--hold", "-J", "twin-anchor", "--wrap", "true")
    cmdline = [t.format(held=held, workdir=str(workdir), node=node) for t in case.cmdline]
    script, kept, refused = carried(case, backend, workdir, cmdline)
    REFUSED_SEEN[backend].update(refused)
    for spelled, why in refused.items():
        assert spelled in EXPECTED_REFUSALS[backend] and why, (spelled, why)
    tail = [script, *case.args] if script else []
    ids = {b: submit(workdir, image_key, jobs, b, "--hold", *kept, *tail) for b in ("sbatch", backend)}
    a, b = scontrol_records(ids["sbatch"]), scontrol_records(ids[backend])
    assert len(a) == len(b), (a, b)
    for plain, other in zip(a, b):
        diffs = differences(normalise(plain, backend), normalise(other, backend))
        assert not diffs, f"{case.name} through {backend}: scontrol show job differs\n" + "\n".join(diffs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_expected_refusal_was_met(backend):
    """Run after the corpus cases (file order): the exceptions listed are exactly those met."""
    if not REFUSED_SEEN[backend]:
        pytest.skip("the corpus cases did not run in this session")
    assert set(REFUSED_SEEN[backend]) == EXPECTED_REFUSALS[backend], "\n".join(
        f"{k}: {v}" for k, v in sorted(REFUSED_SEEN[backend].items()))


ENV_SCRIPT = """#!/bin/bash
env | grep -E '^(SLURM|SBATCH)_|^TWIN=' | sort
"""
# per-job and per-host values: compared by name only
VARYING = re.compile(r"^SLURM_(JOB_?ID|TASK_PID|SUBMIT_HOST|JOB_NODELIST|NODELIST|NODEID|NODE_ALIASES|TOPOLOGY_ADDR"
                     r"|STEP_.*|ARRAY_JOB_ID|GTIDS|PROCID|LOCALID|SCRIPT_CONTEXT|JOB_START_TIME|JOB_END_TIME)=")
ENV_OPTIONS = ["-J", "twin-env", "-c", "1", "-n", "1", "--ntasks-per-node=1", "--ntasks-per-core=1",
               "--threads-per-core=1", "--mem-per-cpu=100M", "--open-mode=append", "--profile=task",
               "--distribution=block:cyclic:cyclic", "--spread-job", "--export=ALL,TWIN=1", "--get-user-env",
               "--kill-on-invalid-dep=yes", "-t", "5"]
ENV_EXCEPTIONS = {"rest": {"SLURM_PROFILE": "slurmrestd 22.05 writes its own value over the job's ('kNone')"},
                  "pyslurm": {}}


def job_env(path: Path) -> Dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and re.match(r"^[A-Z_]+=", line):
            name, _, value = line.partition("=")
            out[name] = "<varies>" if VARYING.match(line) else value
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_job_sees_the_environment_sbatch_gives_it(backend, workdir, image_key, jobs):
    (workdir / "env.sh").write_text(ENV_SCRIPT)
    ids = {b: submit(workdir, image_key, jobs, b, *ENV_OPTIONS, "-o", f"env-{b}-%x.out", "env.sh")
           for b in ("sbatch", backend)}
    for job in ids.values():
        rows = wait_rows(job, lambda rs: all(r["state"] in ("COMPLETED", "FAILED") for r in rs))
        assert [r["state"] for r in rows] == ["COMPLETED"], rows
    plain, other = (job_env(workdir / f"env-{b}-twin-env.out") for b in ("sbatch", backend))
    assert plain["SLURM_JOB_NAME"] == "twin-env" and plain["TWIN"] == "1"
    for name in ENV_EXCEPTIONS[backend]:
        plain.pop(name, None), other.pop(name, None)
    assert plain == other


def status(job: str) -> List[dict]:
    return stardock_json("status", job)


def wait_rows(job: str, done, timeout: float = 180) -> List[dict]:
    deadline = time.monotonic() + timeout
    rows: List[dict] = []
    while time.monotonic() < deadline:
        rows = status(job)
        if rows and done(rows):
            return rows
        time.sleep(1)
    raise AssertionError(f"job {job}: not there within {timeout}s; last status {rows}")


def ended(rows: List[dict]) -> bool:
    return all(r["state"] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED") for r in rows)


def shape(rows: List[dict], job: str) -> List[Tuple[str, str, str]]:
    """Rows as (job id with the job's own number replaced, state, exit code)."""
    return sorted((r["job"].replace(job, "J", 1), r["state"], r["exit_code"] or "") for r in rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_arrays_pending_single_tasks_and_cancel_agree(backend, workdir, image_key, jobs):
    (workdir / "array.sh").write_text("#!/bin/bash\n#SBATCH --array=0-3%2\n#SBATCH -t 5\n"
                                      "[ \"$SLURM_ARRAY_TASK_ID\" = 3 ] && exit 3\ntrue\n")
    ids = {b: submit(workdir, image_key, jobs, b, "--hold", "-o", "/dev/null", "array.sh")
           for b in ("sbatch", backend)}
    pending = {b: shape(wait_rows(j, lambda rs: len(rs) == 1), j) for b, j in ids.items()}
    assert pending["sbatch"] == pending[backend] == [("J_[0-3%2]", "PENDING", "0:0")], pending
    for b, job in ids.items():  # one task cancelled through the job's own backend, the rest released
        proc = stardock("cancel", f"{job}_1")
        assert proc.returncode == 0, (b, proc.stderr)
        assert sh(["scontrol", "release", job]).returncode == 0
    final = {}
    for b, job in ids.items():
        rows = wait_rows(job, lambda rs: len(rs) == 3 and ended(rs))
        final[b] = shape(rows, job)
        single = status(f"{job}_3")
        assert shape(single, job) == [("J_3", "FAILED", "3:0")], (b, single)
        assert all(r["max_rss"] for r in rows), (b, rows)
    # a task cancelled while held never runs, and the accounting keeps no row of it (sacct neither)
    assert final["sbatch"] == final[backend] == [("J_0", "COMPLETED", "0:0"), ("J_2", "COMPLETED", "0:0"),
                                                 ("J_3", "FAILED", "3:0")], final


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_of_running_jobs_and_whole_arrays_agrees(backend, workdir, image_key, jobs):
    (workdir / "sleep.sh").write_text("#!/bin/bash\n#SBATCH -t 5\nsleep 300\n")
    (workdir / "sleeps.sh").write_text("#!/bin/bash\n#SBATCH -t 5\n#SBATCH --array=0-2\nsleep 300\n")
    result = {}
    for b in ("sbatch", backend):
        job = submit(workdir, image_key, jobs, b, "-o", "/dev/null", "sleep.sh")
        array = submit(workdir, image_key, jobs, b, "-o", "/dev/null", "sleeps.sh")
        wait_rows(job, lambda rs: rs[0]["state"] == "RUNNING")
        wait_rows(array, lambda rs: len(rs) == 3 and all(r["state"] == "RUNNING" for r in rs))
        for target in (job, array):
            proc = stardock("cancel", target)
            assert proc.returncode == 0 and proc.stdout.strip() == f"cancelled {target}", (b, proc.stderr)
        # the accounting records the array's tasks one by one: wait for all three
        result[b] = (shape(wait_rows(job, ended), job),
                     shape(wait_rows(array, lambda rs: ended(rs) and len(rs) == 3), array))
    assert result["sbatch"] == result[backend], result
    assert result[backend][0] == [("J", "CANCELLED", "0:0")]
