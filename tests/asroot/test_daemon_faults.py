"""Issue 15, as root: Slurm's daemons stopped, frozen (SIGSTOP) and restarted under every backend,
and a node wrapper SIGKILLed; the user's commands run as the test user.

- slurmctld frozen: a submission whose answer never comes is an unknown outcome (exit 1, "may
  exist"), never a refusal; its record and image stay, and once slurmctld resumes `stardock
  status` finds the job and records it.
- slurmctld stopped: submit and cancel fail with one clear error (exit 1, nothing recorded);
  status of a known job answers from what still answers and says which.
- slurmdbd stopped: status of a running job answers from slurmctld and says so.
- an unresolvable controller: a clear error (pyslurm used to say "Slurm refused the job: Success").
- a finished job: cancel says it had ended (exit 1), for every backend.
- the node wrapper SIGKILLed: status settles the job's record from Slurm's final state and drops
  its in-use mark; the next job on the node removes the container and the temporary directory.
Every daemon is resumed and brought back up (`testbed up`) whatever happens.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

STATE = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed"))
TESTBED = Path(__file__).resolve().parents[2] / "slurm" / "testbed" / "testbed"
USER = os.environ.get("STARDOCK_TEST_USER", "stardock")
PYTHON = STATE / "venv" / "bin" / "python"
RUN = STATE / "run"
pytestmark = pytest.mark.slurm


def _pyslurm_missing() -> bool:
    probe = subprocess.run([str(PYTHON), "-c", "import pyslurm"], capture_output=True, text=True,
                           env={**os.environ, "SLURM_CONF": str(STATE / "etc" / "slurm.conf")})
    return probe.returncode != 0


PYSLURM_MISSING = _pyslurm_missing()
BACKENDS = ["sbatch", "rest",
            pytest.param("pyslurm", marks=pytest.mark.skipif(PYSLURM_MISSING, reason=(
                "pyslurm is not installed: the testbed installs it from ../shared/vendor/pyslurm, absent here")))]
SUBMITTED: List[str] = []  # this module's jobs (cancelled at its end)
AVAILABLE = ["sbatch", "rest"] + ([] if PYSLURM_MISSING else ["pyslurm"])


def user_env(**extra: str) -> Dict[str, str]:
    uid = int(subprocess.check_output(["id", "-u", USER]))
    return {"HOME": f"/home/{USER}", "USER": USER, "LOGNAME": USER, "PATH": f"{STATE}/venv/bin:/usr/bin:/bin",
            "SLURM_CONF": str(STATE / "etc" / "slurm.conf"), "STARDOCK_SITE_CONFIG": str(STATE / "etc" / "site.yaml"),
            "XDG_RUNTIME_DIR": f"/run/user/{uid}", **extra}


def as_user(*argv: str, cwd: Path, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    env = user_env(**extra)
    return subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def stardock(*args: str, cwd: Path, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    return as_user(str(PYTHON), "-m", "stardock_hpc", *args, cwd=cwd, timeout=timeout, **extra)


def daemon_pid(name: str) -> int:
    return int((RUN / f"{name}.pid").read_text().split()[0])


def restore() -> None:
    """Resume whatever is frozen and start whatever is stopped."""
    for name in ("slurmctld", "slurmdbd", "slurmrestd"):
        try:
            os.kill(daemon_pid(name), signal.SIGCONT)
        except (OSError, ValueError):
            pass
    proc = subprocess.run([str(TESTBED), "up"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    wait("slurmctld answers", lambda: subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0)


@contextmanager
def daemon(name: str, how: str) -> Iterator[None]:
    """slurmctld/slurmdbd/slurmrestd stopped (SIGTERM) or frozen (SIGSTOP) for the block."""
    pid = daemon_pid(name)
    try:
        os.kill(pid, signal.SIGSTOP if how == "frozen" else signal.SIGTERM)
        if how == "stopped":
            wait(f"{name} exits", lambda: not Path(f"/proc/{pid}").exists(), timeout=60)
        yield
    finally:
        restore()


def wait(what: str, check, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def site_setting(name: str) -> str:
    out = stardock("site", "show", "--json", cwd=Path("/"))
    assert out.returncode == 0, out.stderr
    value = json.loads(out.stdout)["settings"][name]["value"]
    return value.replace("{user}", USER).replace("{home}", f"/home/{USER}")


def records_dir() -> Path:
    return Path(site_setting("records"))


def jobs_named(name: str) -> List[str]:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-n", name, "-o", "%A"], capture_output=True, text=True)
    return sorted(set(out.stdout.split()))


@pytest.fixture(scope="module")
def work():
    path = STATE / "shared" / f"daemon-faults-{os.getpid()}"
    path.mkdir(mode=0o755)
    subprocess.run(["chown", USER, str(path)], check=True)
    (path / "stardock.yaml").write_text('name: daemon-faults\nbuild: ["echo faults > /stamp"]\n')
    (path / "sleep.sh").write_text("#!/bin/bash\necho started\nsleep 600\n")
    (path / "quick.sh").write_text("#!/bin/bash\ncat /stamp\n")
    built = stardock("build", "stardock.yaml", "--json", cwd=path, timeout=900)
    assert built.returncode == 0, built.stderr
    yield path, json.loads(built.stdout)["key"]
    # this module's jobs only (the user may have others): those it submitted, and those its
    # frozen-controller submissions made without telling it
    queued = subprocess.run(["squeue", "-h", "-u", USER, "-o", "%i %j"], capture_output=True, text=True).stdout
    ours = [line.split()[0] for line in queued.splitlines()
            if line.split()[0] in SUBMITTED or line.split()[1:2] and line.split()[1].startswith("fault-")]
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True)
    subprocess.run(["rm", "-rf", str(path)])


def token() -> str:
    out = as_user("scontrol", "token", cwd=Path("/"))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split("=", 1)[1]


def submit(work, backend: str, *args: str, ok: bool = True, timeout: float = 300, **extra: str):
    path, key = work
    proc = stardock("sbatch", "--backend", backend, "--image", key, "--parsable", "-t", "10", "-o", "/dev/null",
                    *args, cwd=path, timeout=timeout, **extra)
    if ok:
        assert proc.returncode == 0, proc.stderr
    if proc.returncode == 0:
        SUBMITTED.append(proc.stdout.strip().split(";")[0])
    return proc


def status(work, *jobs: str) -> List[dict]:
    proc = stardock("status", "--json", *jobs, cwd=work[0])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def state_of(work, job: str) -> str:
    """The job's (first row's) state; "" until Slurm's accounting has it."""
    rows = status(work, job)
    return rows[0]["state"] if rows else ""


def at_once(calls: Dict[str, Callable[[], object]]) -> Dict[str, object]:
    """Each backend's steps at the same time (each waits out the same timeouts: once, not three
    times), their results by backend; an exception is re-raised by the test that reads it."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        out: Dict[str, object] = {}
        for name, future in futures.items():
            try:
                out[name] = future.result()
            except Exception as exc:  # noqa: BLE001 - handed to the backend's own test
                out[name] = exc
        return out


def result(results: Dict[str, object], backend: str):
    value = results[backend]
    if isinstance(value, Exception):
        raise value
    return value


class TestFrozenSlurmctld:
    """One freeze for every backend: each submits while slurmctld is frozen."""

    @pytest.fixture(scope="class")
    @classmethod
    def frozen(cls, work) -> Dict[str, object]:
        names = {b: f"fault-frozen-{b}-{uuid.uuid4().hex[:8]}" for b in AVAILABLE}
        jwt = token()  # `scontrol token` needs slurmctld too

        def one(backend: str):
            extra = {"SLURM_JWT": jwt} if backend == "rest" else {}
            proc = submit(work, backend, "-J", names[backend], "quick.sh", ok=False, timeout=600, **extra)
            pending = [json.loads(p.read_text())["job_name"] for p in (records_dir() / "pending").glob("*.json")]
            return names[backend], proc, pending

        with daemon("slurmctld", "frozen"):
            return at_once({b: (lambda b=b: one(b)) for b in AVAILABLE})

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_frozen_slurmctld_gives_an_unknown_outcome_and_status_finds_the_job(self, backend, work, frozen):
        name, proc, pending = result(frozen, backend)
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert "may exist" in proc.stderr or "outcome" in proc.stderr.lower(), proc.stderr
        assert "Traceback" not in proc.stderr and "refused" not in proc.stderr, proc.stderr
        assert name in pending, pending
        wait("slurmctld makes the job it received while frozen", lambda: jobs_named(name), timeout=120)
        [job] = jobs_named(name)
        rows = status(work)  # the listing adopts it
        assert not any(json.loads(p.read_text())["job_name"] == name
                       for p in (records_dir() / "pending").glob("*.json"))
        submit_record = json.loads((records_dir() / job / "submit.json").read_text())
        assert submit_record["adopted"] is True and submit_record["key"] == work[1]
        assert any(r["job"].split("_")[0] == job for r in rows), rows


class TestStoppedSlurmctld:
    """One stop of slurmctld for every backend."""

    @pytest.fixture(scope="class")
    @classmethod
    def stopped(cls, work) -> Dict[str, object]:
        finished = {b: submit(work, b, "quick.sh").stdout.strip() for b in AVAILABLE}
        for job in finished.values():
            wait("the job ends", lambda job=job: state_of(work, job) == "COMPLETED")

        def one(backend: str):
            proc = submit(work, backend, "-J", f"fault-stopped-{backend}", "quick.sh", ok=False)
            pending = [json.loads(p.read_text())["job_name"] for p in (records_dir() / "pending").glob("*.json")]
            rows = status(work, finished[backend])
            cancel = stardock("cancel", finished[backend], cwd=work[0])
            return proc, pending, rows, cancel

        with daemon("slurmctld", "stopped"):
            return at_once({b: (lambda b=b: one(b)) for b in AVAILABLE})

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_with_slurmctld_stopped_submit_and_cancel_fail_clearly_and_status_says_where_it_looked(
            self, backend, stopped):
        proc, pending, rows, cancel = result(stopped, backend)
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert proc.stderr.count("stardock: error:") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "AuthAltTypes" not in proc.stderr, proc.stderr
        assert f"fault-stopped-{backend}" not in pending, "a refused job is not pending"
        assert rows and rows[0]["source"] in ("accounting", "record"), rows
        assert rows[0]["state"] == "COMPLETED", rows
        assert cancel.returncode == 1 and "cancelled" not in cancel.stdout, (cancel.stdout, cancel.stderr)


class TestStoppedSlurmdbd:
    """One stop of slurmdbd for every backend."""

    @pytest.fixture(scope="class")
    @classmethod
    def stopped(cls, work) -> Dict[str, object]:
        jobs = {b: submit(work, b, "sleep.sh").stdout.strip() for b in AVAILABLE}
        for job in jobs.values():
            wait("the job runs", lambda job=job: state_of(work, job) == "RUNNING")

        def one(backend: str):
            rows = status(work, jobs[backend])
            cancel = stardock("cancel", jobs[backend], cwd=work[0])
            return jobs[backend], rows, cancel

        with daemon("slurmdbd", "stopped"):
            return at_once({b: (lambda b=b: one(b)) for b in AVAILABLE})

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_with_slurmdbd_stopped_status_of_a_running_job_answers_from_slurmctld(self, backend, work, stopped):
        job, rows, cancel = result(stopped, backend)
        assert [r["state"] for r in rows] == ["RUNNING"], rows
        assert rows[0]["source"] in ("controller", "controller+accounting"), rows
        assert cancel.returncode == 0, cancel.stderr
        wait("the job is cancelled", lambda: state_of(work, job) == "CANCELLED")


@pytest.mark.parametrize("backend", ["sbatch", BACKENDS[2]])
def test_an_unresolvable_controller_is_said_so(backend, work, tmp_path):
    conf = STATE / "shared" / f"unresolvable-{uuid.uuid4().hex[:8]}.conf"
    text = (STATE / "etc" / "slurm.conf").read_text()
    conf.write_text("\n".join("SlurmctldHost=nowhere.invalid" if line.startswith("SlurmctldHost=") else line
                              for line in text.splitlines()) + "\n")
    conf.chmod(0o644)
    try:
        path, key = work
        proc = stardock("sbatch", "--backend", backend, "--image", key, "quick.sh", cwd=path, SLURM_CONF=str(conf))
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert "Success" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert "slurmctld" in proc.stderr or "controller" in proc.stderr, proc.stderr
    finally:
        conf.unlink()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_of_a_finished_job_says_it_had_ended(backend, work):
    job = submit(work, backend, "quick.sh").stdout.strip()
    wait("the job ends", lambda: state_of(work, job) == "COMPLETED")
    proc = stardock("cancel", job, cwd=work[0])
    assert proc.returncode == 1 and "already ended (COMPLETED)" in proc.stderr, (proc.stdout, proc.stderr)


def wrapper_of(job: str) -> int:
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
            environ = (proc_dir / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"stardock-node") for part in cmdline) and f"SLURM_JOB_ID={job}".encode() in environ:
            return int(proc_dir.name)
    raise AssertionError(f"no wrapper of job {job}")


# A Podman pause process of the user on a node that is dying: killed with the job or step that
# started it, not yet reaped (init reaps orphans late here: seconds). Its number in Podman's pid file,
# a pid file the jobs' Podman must never need (the pause process is neither joinable nor alive).
DYING_PAUSE = r"""
import os, sys, time
pause = f"/run/user/{os.getuid()}/libpod/tmp/pause.pid"
child = os.fork()
if child == 0:
    os.execv("/usr/bin/catatonit", ["catatonit", "-P"])
def read(name):
    with open(f"/proc/{child}/{name}") as fh:
        return fh.read()
while read("comm").strip() != "catatonit":
    time.sleep(0.01)
os.kill(child, 9)
while read("stat").rsplit(")", 1)[1].split()[0] != "Z":
    time.sleep(0.01)
try:
    with open(pause) as fh:
        before = fh.read()
except FileNotFoundError:
    before = None
with open(pause, "w") as fh:
    fh.write(f"{child}\n")
print("dying", child, flush=True)
sys.stdin.read()
if before is None:
    os.unlink(pause)
else:
    with open(pause, "w") as fh:
        fh.write(before)
"""


@contextmanager
def dying_pause_process(node: str) -> Iterator[int]:
    """A step of the user's on node keeps its dying pause process for the block (ended by its input)."""
    env = user_env()
    step = subprocess.Popen(["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                             "srun", "-w", node, "-N1", "-n1", "-t", "5", str(PYTHON), "-c", DYING_PAUSE],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd="/")
    try:
        assert step.stdout is not None and step.stdin is not None
        line = step.stdout.readline().split()
        assert line[:1] == ["dying"], (line, step.stderr.read() if step.poll() is not None else "")
        yield int(line[1])
    finally:
        if step.stdin:
            step.stdin.close()
        try:
            step.wait(timeout=60)
        except subprocess.TimeoutExpired:
            step.kill()
            step.wait()


def test_a_killed_wrapper_is_settled_by_status_and_cleaned_by_the_next_job(work):
    """Status settles the killed job's record; the next job on the node removes what it left and
    runs, though the user's Podman pause process there is dying, as the killed job's own may be
    (the next job failed at once then: "invalid internal status ... could not find any running
    process", Podman trying the killed container's conmon instead)."""
    path, key = work
    job = submit(work, "sbatch", "-w", "node2", "sleep.sh").stdout.strip()
    wait("the job runs", lambda: state_of(work, job) == "RUNNING")
    run_record = records_dir() / job / "run.json"
    wait("the wrapper's record", lambda: run_record.exists())
    os.kill(wrapper_of(job), signal.SIGKILL)
    wait("the job ends", lambda: state_of(work, job) not in ("", "RUNNING", "COMPLETING"), timeout=120)
    record = json.loads(run_record.read_text())
    assert record["state"] == "ended" and record["slurm_state"] and record["end"], record
    inuse = list((Path(site_setting("cache")) / "inuse").glob(f"*.j{job}.u*"))
    assert inuse == [], inuse
    leftovers = subprocess.run(["srun", "-w", "node2", "-N1", "-t", "2", "sh", "-c",
                                f"ls -d /tmp/stardock-job-{job}-* 2>/dev/null || true"],
                               capture_output=True, text=True).stdout.split()
    assert leftovers, "the killed wrapper left its temporary directory (what the next job must remove)"
    with dying_pause_process("node2"):  # deterministic: the next job failed so when it found one by chance
        nxt = submit(work, "sbatch", "-w", "node2", "quick.sh").stdout.strip()
        wait("the next job ends", lambda: state_of(work, nxt) not in ("", "PENDING", "RUNNING", "COMPLETING"))
    record = records_dir() / nxt / "run.json"
    assert state_of(work, nxt) == "COMPLETED", record.read_text() if record.exists() else "no record"
    after = subprocess.run(["srun", "-w", "node2", "-N1", "-t", "2", "sh", "-c",
                            f"ls -d /tmp/stardock-job-{job}-* /tmp/stardock-job-{nxt}-* 2>/dev/null || true"],
                           capture_output=True, text=True).stdout.split()
    assert after == [], (leftovers, after)  # the killed job's, and the next job's own
