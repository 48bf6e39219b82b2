"""stardock sbatch on the real cluster: volumes, accounting, cancellation, arrays, dependencies,
exit codes and hostile names, with both engines (issue 5)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from clitools import own_log, remove, shared_dir, stardock, stardock_argv, stardock_json, write_spec

from slurmtools import hog, job_cgroup_tasks, mem_bytes, node_containers, node_podman_argv, sh, wait_job

pytestmark = [pytest.mark.slurm, pytest.mark.podman]
ENGINES = [pytest.param("podman", id="podman"), pytest.param("apptainer", id="apptainer",
                                                              marks=pytest.mark.apptainer)]
ARCHIVE = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed")) / "volumes" / "archive"
SCRATCH = ARCHIVE.parent / "scratch"
HOG = hog(300)  # held until the job's accounting has seen it


# Every job of this module runs on node2, then every one on node3: nothing may rely on the login
# side's /tmp, /run or environment (the nodes have their own).
NODES = ("node2", "node3")
PLACE = {"node": NODES[0]}


@pytest.fixture(scope="module", params=NODES)
def workdir(request):
    PLACE["node"] = request.param
    path = shared_dir("stardock-jobs-")
    write_spec(path, "name: jobs-test\nenv: {GREETING: hello}\n")
    yield path
    remove(path)


@pytest.fixture(autouse=True)
def _limit_started_early(request, workdir):
    """Every test of the module asks for the time-limited job first (it is submitted once per node)."""
    request.getfixturevalue("time_limited")


def script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def submit(workdir: Path, *args: str, engine: str = "podman") -> str:
    proc = stardock("sbatch", "--parsable", f"--nodelist={PLACE['node']}", "--env", "stardock.yaml",
                    "--engine", engine, *args, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def status(*jobs: str) -> list:
    return stardock_json("status", *jobs)


def finished(job: str, timeout: float = 300, ran: bool = True) -> dict:
    return wait_job(job, timeout=timeout, need_batch_step=ran)


@pytest.mark.parametrize("engine", ENGINES)
def test_reads_a_readonly_volume_and_writes_its_own_outputs(workdir, engine, tmp_path):
    job = submit(workdir, "--mount", "archive/m51", f"--output=ro-{engine}-%j.out",
                 str(script(workdir, f"ro-{engine}.sh",
                            "set -e\nwc -c < /data/archive/m51/m51-r.fits > \"$STARDOCK_OUTPUT/size.txt\"\n"
                            "if touch /data/archive/m51/new 2>/dev/null; then echo WRITABLE; else echo read-only; fi\n"
                            "mkdir -p /data/output/sub && echo made > /data/output/sub/file\n")),
                 engine=engine)
    rows = finished(job)
    out = (workdir / f"ro-{engine}-{job}.out").read_text()
    assert rows[job]["State"] == "COMPLETED", out
    assert "read-only" in out and "WRITABLE" not in out
    assert not (ARCHIVE / "m51" / "new").exists()
    [row] = status(job)
    assert row["state"] == "COMPLETED" and row["exit_code"] == "0:0" and row["engine"] == engine
    assert [m["volume"] for m in row["mounts"]] == ["archive"] and row["mounts"][0]["mode"] == "ro"
    output = Path(row["output"])
    assert (output / "size.txt").read_text().strip() == str((ARCHIVE / "m51" / "m51-r.fits").stat().st_size)
    for path in (output, output / "size.txt", output / "sub", output / "sub" / "file"):
        assert path.stat().st_uid == os.getuid(), f"{path} does not belong to the user"
    packed = stardock("outputs", job, "-o", str(tmp_path))
    assert packed.returncode == 0, packed.stderr
    with tarfile.open(packed.stdout.strip()) as tar:
        assert {f"{job}/size.txt", f"{job}/sub/file"} <= set(tar.getnames())


@pytest.mark.parametrize("engine", ENGINES)
def test_accounting_sees_the_container_and_mem_limits_it(workdir, engine):
    hog = script(workdir, f"hog-{engine}.sh", HOG + "\n")
    fits = submit(workdir, "--mem=1G", "--output=/dev/null", str(hog), engine=engine)
    over = submit(workdir, "--mem=150M", "--output=/dev/null", str(hog), engine=engine)
    rows = finished(fits)
    assert rows[fits]["State"] == "COMPLETED"
    assert mem_bytes(rows[f"{fits}.batch"]["MaxRSS"]) >= 280 * 2**20, rows
    rows = finished(over)
    assert rows[over]["State"] == "OUT_OF_MEMORY", rows
    [row] = status(over)
    assert row["state"] == "OUT_OF_MEMORY"


def _job_processes(marker: str) -> list:
    out = sh(["ps", "-u", str(os.getuid()), "-o", "pid=,args="]).stdout
    return [line for line in out.splitlines() if marker in line]


def _wait_running(job: str, marker: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _job_processes(marker):
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job} never started its container ({marker})")


def _job_environ_processes(job: str) -> list:
    """Processes of ours whose environment says they belong to the job (the wrapper, its
    cleanup, conmon...): Slurm marks the job CANCELLED before they are all gone."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"SLURM_JOB_ID={job}".encode() in environ:
            found.append(f"{entry.name} {args}")
    return found


def _leftovers(job: str, marker: str) -> list:
    found = _job_processes(marker) + _job_processes(f"stardock-{job}-") + _job_environ_processes(job)
    names = node_containers(PLACE["node"])
    return found + [f"container {n}" for n in names if n.startswith(f"stardock-{job}-")]


def _nothing_left(job: str, marker: str) -> None:
    """No process of the job (its script, the wrapper and its cleanup, conmon) and no container
    remain, and none comes back."""
    deadline = time.time() + 60
    while time.time() < deadline and (_leftovers(job, marker) or job_cgroup_tasks(PLACE["node"], job)):
        time.sleep(0.2)
    # with the job's cgroups empty, what is still found escaped them: it would stay
    assert _leftovers(job, marker) == [], "parts of the job survived it"


@pytest.mark.parametrize("engine", ENGINES)
def test_cancel_stops_the_container_and_leaves_nothing(workdir, engine):
    marker = f"sleep 31{3 if engine == 'podman' else 4}.5"
    job = submit(workdir, "--output=/dev/null", str(script(workdir, f"long-{engine}.sh", f"{marker}\n")),
                 engine=engine)
    _wait_running(job, marker)
    assert stardock("cancel", job).returncode == 0
    rows = finished(job, timeout=120)
    assert rows[job]["State"].startswith("CANCELLED")
    _nothing_left(job, marker)


def test_array_tasks_see_their_task_id_inside_the_container(workdir):
    job = submit(workdir, "--array=1-4", "--output=array-%A_%a.out",
                 str(script(workdir, "array.sh", 'echo "task=$SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID" '
                                                 '| tee "$STARDOCK_OUTPUT/task.txt"\n')))
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = [r for r in status(job) if "_" in r["job"]]
        if len(rows) == 4 and all(r["state"] == "COMPLETED" for r in rows):
            break
        time.sleep(1)
    assert sorted(r["job"] for r in rows) == [f"{job}_{i}" for i in range(1, 5)]
    for i in range(1, 5):
        assert own_log((workdir / f"array-{job}_{i}.out").read_text()).strip() == f"task={i} of {job}"
        row = next(r for r in rows if r["job"] == f"{job}_{i}")
        assert Path(row["output"], "task.txt").read_text().strip() == f"task={i} of {job}"


def test_dependency_and_exit_codes_reach_slurm_and_status(workdir):
    first = submit(workdir, "--output=/dev/null", str(script(workdir, "fails.sh", "exit 3\n")))
    second = submit(workdir, f"--dependency=afterany:{first}", "--output=dep-%j.out",
                    str(script(workdir, "after.sh", "echo after\n")))
    third = submit(workdir, f"--dependency=afterok:{first}", "--kill-on-invalid-dep=yes", "--output=/dev/null",
                   str(script(workdir, "never.sh", "echo never\n")))
    rows = finished(first)
    assert rows[first]["State"] == "FAILED" and rows[first]["ExitCode"] == "3:0"
    [row] = status(first)
    assert row["state"] == "FAILED" and row["exit_code"] == "3:0" and row["container_exit"] == 3
    after = finished(second)
    assert after[second]["State"] == "COMPLETED"
    assert own_log((workdir / f"dep-{second}.out").read_text()) == "after\n"
    never = finished(third, timeout=120, ran=False)
    assert never[third]["State"] == "CANCELLED" and f"{third}.batch" not in never, never


def test_hostile_names_in_scripts_arguments_and_mounts_run_literally(workdir):
    odd = workdir / "dir with 'quotes' $(x) \"q\""
    odd.mkdir()
    path = script(odd, "it's a $(script).sh", "printf '[%s]\\n' \"$0\" \"$@\"\n"
                  "cat '/data/archive/odd names/it'\"'\"'s $(x) \"q\"/data.txt'\n")
    args = ["plain", "two words", "it's", "$(id)", "`id`", "line1\nline2", "--mem=1G", "*", ""]
    proc = stardock("sbatch", "--parsable", f"--nodelist={PLACE['node']}", "--env", "../stardock.yaml", "--mount",
                    "archive/odd names/it's $(x) \"q\"", "--output=hostile-%j.out", str(path), *args, cwd=odd)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    rows = finished(job)
    out = (odd / f"hostile-{job}.out").read_text()
    assert rows[job]["State"] == "COMPLETED", out
    printed = out.split("]\n")
    assert [p.lstrip("[") for p in printed[1:len(args) + 1]] == args, out
    assert "odd but fine" in out


def test_wrap_runs_inside_the_container(workdir):
    proc = stardock("sbatch", "--parsable", f"--nodelist={PLACE['node']}", "--env", "stardock.yaml",
                    "--output=wrap-%j.out", "--wrap",
                    'echo "$GREETING from $(cat /etc/debian_version) as $(id -u)"', cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    assert finished(job)[job]["State"] == "COMPLETED"
    text = (workdir / f"wrap-{job}.out").read_text()
    assert text.startswith("hello from 12.") and text.strip().endswith(f"as {os.getuid()}"), text


def test_the_container_gets_a_clean_explicit_environment(workdir):
    env = {"XDG_RUNTIME_DIR": "/run/user/999999/nonexistent", "LEAKY_SECRET": "s3cret", "KEEP_ME": "kept"}
    proc = stardock("sbatch", "--parsable", f"--nodelist={PLACE['node']}", "--env", "stardock.yaml",
                    "--pass-env", "KEEP_ME",
                    "--output=env-%j.out", str(script(workdir, "env.sh", "env | sort\n")), cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    assert finished(job)[job]["State"] == "COMPLETED"
    seen = dict(line.split("=", 1) for line in (workdir / f"env-{job}.out").read_text().splitlines() if "=" in line)
    assert seen["SLURM_JOB_ID"] == job and seen["KEEP_ME"] == "kept" and seen["GREETING"] == "hello"
    assert "LEAKY_SECRET" not in seen and "XDG_RUNTIME_DIR" not in seen
    assert seen["USER"] == os.environ["USER"] and seen["HOME"] == "/tmp"


def test_logs_prints_the_job_output(workdir):
    # the job writes its second line only once `logs --follow` has shown the first: it waits for a
    # flag in a directory of the user's scratch volume mounted into its container
    name = f"followed-{time.monotonic_ns()}"
    (SCRATCH / os.environ["USER"]).mkdir(mode=0o700, exist_ok=True)  # the user's, as stardock makes it
    flags = SCRATCH / os.environ["USER"] / name
    flags.mkdir()
    try:
        body = (f'echo one; n=0; until [ -e "/data/scratch/{name}/flag" ] || [ $n -ge 600 ]; do sleep 0.1; '
                f'n=$((n + 1)); done; [ $n -lt 600 ] || echo "no flag in 60 s"; echo two\n')
        job = submit(workdir, "--mount", f"scratch/{name}", "--output=logs-%j.out",
                     str(script(workdir, "logs.sh", body)))
        follow = subprocess.Popen(stardock_argv("logs", job, "--follow"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd="/tmp")
        assert follow.stdout is not None
        first = follow.stdout.readline()
        (flags / "flag").touch()
        rest, err = follow.communicate(timeout=120)
        assert follow.returncode == 0 and own_log(first + rest) == "one\ntwo\n", first + rest + err
        assert own_log(stardock("logs", job).stdout) == "one\ntwo\n"
    finally:
        shutil.rmtree(flags)


@pytest.mark.parametrize("mount, message", [
    ("nosuch", "unknown volume 'nosuch'"),
    ("archive/../etc", "'..' is not allowed"),
    ("archive/m51:rw", "is read-only at this site"),
    ("archive/missing-dir", "does not exist"),
    ("archive/a,b", "cannot appear in a mounted path"),
])
def test_bad_mounts_are_refused_before_submission(workdir, mount, message):
    name = f"refused-{time.monotonic_ns()}"
    proc = stardock("sbatch", "--env", "stardock.yaml", f"--job-name={name}", "--mount", mount, "--wrap", "true",
                    cwd=workdir)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sh(["squeue", "-h", "-n", name, "-o", "%i"]).stdout.strip() == ""
    assert sh(["sacct", "-n", "-X", "--name", name, "-o", "JobID"]).stdout.strip() == ""


def test_a_symlink_out_of_a_volume_is_refused(workdir):
    scratch = Path(os.environ["STARDOCK_TESTBED"]) / "volumes" / "scratch" / os.environ["USER"]
    scratch.mkdir(parents=True, exist_ok=True)
    link = scratch / "escape"
    if not link.is_symlink():
        link.symlink_to("/etc")
    proc = stardock("sbatch", "--env", "stardock.yaml", "--mount", "scratch/escape", "--wrap", "true", cwd=workdir)
    assert proc.returncode == 2 and "leads outside the volume" in proc.stderr, proc.stderr


def test_dry_run_prints_the_job_script_and_submits_nothing(workdir):
    name = f"dry-{time.monotonic_ns()}"
    proc = stardock("sbatch", "--dry-run", "--env", "stardock.yaml", "--mem=1G",
                    str(script(workdir, "dry.sh", f"#SBATCH --job-name={name}\necho hi\n")), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"#!/bin/bash\n#SBATCH --job-name={name}\n") and "STARDOCK_JOB_SPEC" in proc.stdout
    assert json.loads(proc.stdout.splitlines()[-2])["script"].endswith("echo hi\n")
    assert sh(["sacct", "-n", "-X", "--name", name, "-o", "JobID"]).stdout.strip() == ""


def test_records_are_complete_json(workdir):
    job = submit(workdir, "--output=/dev/null", str(script(workdir, "rec.sh", "true\n")))
    finished(job)
    records = Path.home() / ".local" / "share" / "stardock" / "jobs" / job
    submit_rec = json.loads((records / "submit.json").read_text())
    run_rec = json.loads((records / "run.json").read_text())
    assert submit_rec["job"] == job and submit_rec["key"] == run_rec["key"]
    assert run_rec["exit_code"] == 0 and run_rec["end"] >= run_rec["start"] and run_rec["state"] == "completed"
    assert not [p for p in records.iterdir() if p.name.endswith(".part")]


def test_a_sigkilled_wrapper_leaves_a_container_that_the_next_job_removes(workdir):
    marker = "sleep 319.5"
    job = submit(workdir, "--output=/dev/null", str(script(workdir, "killed.sh", f"{marker}\n")))
    _wait_running(job, marker)
    [wrapper] = [int(p.split()[0]) for p in _job_environ_processes(job) if "stardock-node" in p]
    os.kill(wrapper, signal.SIGKILL)  # no chance to clean up, as in a node crash
    finished(job, timeout=120)

    def left() -> list:
        return [n for n in node_containers(PLACE["node"]) if n.startswith(f"stardock-{job}-")]

    assert left(), "the container should have outlived its wrapper (else this test proves nothing)"
    following = submit(workdir, "--output=/dev/null", "--wrap", "true")
    finished(following)
    assert left() == []


def test_a_container_left_by_a_dead_wrapper_is_removed_by_the_next_job(workdir):
    """A node crash or a SIGKILLed wrapper leaves its container and its mark behind; the user's
    next job on the node removes that container, and only it: not one whose wrapper still runs,
    nor the user's own containers."""
    first = submit(workdir, "--output=/dev/null", "--wrap", "true")
    finished(first)
    jobs = Path.home() / ".local" / "share" / "stardock" / "jobs"
    marks = jobs / ".running" / PLACE["node"]  # the node's own marks: the next job there cleans up
    assert not [p.name for p in marks.glob(f"stardock-{first}-*")], "a finished job must leave no mark"
    others = {p.name for p in marks.iterdir()}  # of this user's jobs still running there (the time limit's)
    dead = subprocess.Popen(["true"])
    dead.wait()
    made = {"stardock-crashed": dead.pid, "stardock-wrapper-alive": os.getpid(), "users-own": None}
    node = PLACE["node"]
    try:
        for name, wrapper in made.items():  # in the node's store, where the user's jobs keep containers
            created = sh(node_podman_argv(node, "create", "--name", name, "--rootfs", "/", "true"))
            assert created.returncode == 0, created.stderr
            if wrapper is not None:
                (marks / name).write_text(f"{wrapper} podman\n")
        job = submit(workdir, "--output=next.out", "--wrap", "true")
        finished(job)
        names = node_containers(node)
        assert "stardock-crashed" not in names
        assert "stardock-wrapper-alive" in names and "users-own" in names
        assert {p.name for p in marks.iterdir()} - others == {"stardock-wrapper-alive"}
        assert "removed stardock-crashed" in (workdir / "next.out").read_text()
    finally:
        sh(node_podman_argv(node, "rm", "--force", "--ignore", *made))
        for name in made:
            (marks / name).unlink(missing_ok=True)


@pytest.mark.parametrize("node", NODES)
def test_podman_ps_shows_nothing_left_after_jobs(node):
    # stardock-JOB-PID: none of a job that has ended (the time-limited one may still run)
    running = set(sh(["squeue", "-h", "-u", os.environ["USER"], "-o", "%A"]).stdout.split())
    names = node_containers(node)
    assert not [n for n in names if n.startswith("stardock-") and n.split("-")[1] not in running], names


def _in_terminal(argv: list, keys: bytes, cwd: Path, timeout: float = 180) -> str:
    """Run argv on a pseudo-terminal, type keys once it starts, return everything it printed."""
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(cwd)
        os.execvp(argv[0], argv)
    out, sent, deadline = b"", False, time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if not sent and b"$ " in out:  # the container's prompt
                os.write(fd, keys)
                sent = True
    finally:
        os.close(fd)
        os.waitpid(pid, 0)
    return out.decode(errors="replace")


def test_shell_opens_an_interactive_session_in_the_environment(workdir):
    from clitools import stardock_argv
    argv = stardock_argv("shell", "--env", "stardock.yaml", "--mount", "archive/m51", "-t", "5",
                         f"--nodelist={PLACE['node']}", "--",
                         "/bin/sh", "-i")
    out = _in_terminal(argv, b"echo inside-$((6*7)) $GREETING; ls /data/archive/m51; id -u; exit\n", workdir)
    assert "inside-42 hello" in out and "m51-r.fits" in out and f"\n{os.getuid()}" in out.replace("\r", ""), out


def test_shell_uses_the_sites_partition_unless_given_one(workdir, tmp_path):
    from clitools import stardock_argv
    from resttools import rest_site
    site = rest_site(tmp_path, partition="batch")
    for extra, expected in (([], "batch"), (["-p", "debug"], "debug")):
        argv = stardock_argv("shell", "--site", str(site), "--env", "stardock.yaml", "-t", "5", *extra,
                             "--", "/bin/sh", "-i")
        out = _in_terminal(argv, b"echo partition-$SLURM_JOB_PARTITION-end; exit\n", workdir)
        assert f"partition-{expected}-end" in out, out


TIME_LIMITED = "sleep 317.5"


@pytest.fixture(scope="module")
def time_limited(workdir):
    """A job with a one-minute limit, submitted as the module starts on each node: Slurm takes
    60-90 s to enforce it, which the module's other tests spend; the test below, last, checks it."""
    job = submit(workdir, "--time=1", "--output=/dev/null", str(script(workdir, "timeout.sh", f"{TIME_LIMITED}\n")))
    _wait_running(job, TIME_LIMITED)
    return job


def test_time_limit_stops_the_container_and_leaves_nothing(workdir, time_limited):
    rows = finished(time_limited, timeout=240)
    assert rows[time_limited]["State"] == "TIMEOUT"
    _nothing_left(time_limited, TIME_LIMITED)
