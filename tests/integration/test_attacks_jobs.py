"""Another user attacks your jobs: mounts, outputs, records, and what a job may do on the node
(issue 9). Each test is the attacker's steps (the second test user, through sudo) against the
victim (the test user), on the real cluster with both engines."""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import List

import pytest
import yaml
from clitools import OTHER, own_log, remove, shared_dir, stardock, stardock_json, write_spec

from stardock_hpc.engines import get_engine
from stardock_hpc.engines.base import RunOptions
from stardock_hpc.jobs.binds import Handover, checked_command, hold_path

from slurmtools import sh, wait_job

pytestmark = [pytest.mark.slurm, pytest.mark.podman]
ENGINES = [pytest.param("podman", id="podman"), pytest.param("apptainer", id="apptainer",
                                                              marks=pytest.mark.apptainer)]
ME = os.environ.get("USER", "stardock")


def as_attacker(*argv: str) -> subprocess.CompletedProcess:
    proc = sh(["sudo", "-n", "-u", OTHER, "--", *argv])
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def place():
    """A directory both users reach, with a world-writable sticky corner (a shared filesystem)."""
    path = shared_dir("stardock-attack-")
    (path / "shared").mkdir()
    (path / "shared").chmod(0o1777)
    yield path
    sh(["sudo", "-n", "-u", OTHER, "--", "rm", "-rf", str(path / "shared")])
    remove(path)


def site_file(place: Path, **changes) -> Path:
    """The testbed's site config with some keys changed (a private one per test)."""
    data = yaml.safe_load(Path(os.environ["STARDOCK_SITE_CONFIG"]).read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = place / f"site-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o644)
    return path


def spec(place: Path) -> Path:
    return write_spec(place / "env", "name: attacks-test\n")


def script(place: Path, body: str) -> Path:
    path = place / f"job-{uuid.uuid4().hex[:6]}.sh"
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def sbatch(place: Path, site: Path, engine: str, *args: str) -> subprocess.CompletedProcess:
    return stardock("sbatch", "--site", str(site), "--parsable", "--env", str(spec(place)), "--engine", engine,
                    *args, cwd=place)


def submitted(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def jobs_named(name: str) -> List[str]:
    return sh(["squeue", "-h", "-n", name, "-o", "%i"]).stdout.split() + \
        sh(["sacct", "-n", "-X", "--name", name, "-o", "JobID"]).stdout.split()


# --- mounts -------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_a_link_to_a_path_with_a_comma_cannot_make_the_engine_bind_another_path(place, engine):
    """The attacker makes shared/a,/<secret path> and a link shared/in -> it: Apptainer's --bind
    would split at the comma and bind <secret path> itself at the victim's mount point."""
    secret = place / "secret"
    secret.mkdir(mode=0o700)
    (secret / "data.txt").write_text("the victim's restricted data\n")
    as_attacker("mkdir", "-p", f"{place}/shared/a,{secret}")
    as_attacker("ln", "-s", f"a,{secret}", f"{place}/shared/in")
    site = site_file(place, volumes={"shared": {"path": str(place / "shared"), "mode": "rw"}})
    name = f"comma-{uuid.uuid4().hex[:6]}"
    proc = sbatch(place, site, engine, f"--job-name={name}", "--mount", "shared/in", "--wrap", "ls /data/shared/in")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "holds ','" in proc.stderr and "Traceback" not in proc.stderr
    assert jobs_named(name) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_sub_path_swapped_for_a_link_after_submission_is_refused_not_followed(place, engine):
    """The victim mounts the attacker's project directory rw; while the job is held, the attacker
    swaps it for a link to the victim's private directory: the job must neither list nor write it."""
    private = place / "private"
    private.mkdir(mode=0o700)
    (private / "secret.txt").write_text("s3cret\n")
    as_attacker("mkdir", "-m", "0777", f"{place}/shared/project")
    site = site_file(place, volumes={"shared": {"path": str(place / "shared"), "mode": "rw"}})
    body = "ls /data/shared/project\necho planted > /data/shared/project/planted\n"
    job = submitted(sbatch(place, site, engine, "--hold", "--output=swap-%j.out", "--mount", "shared/project:rw",
                           str(script(place, body))))
    try:
        as_attacker("mv", f"{place}/shared/project", f"{place}/shared/project-old")
        as_attacker("ln", "-s", str(private), f"{place}/shared/project")
        sh(["scontrol", "release", job], check=True)
        rows = wait_job(job)
    finally:
        sh(["scancel", job])
    out = (place / f"swap-{job}.out").read_text()
    assert rows[job]["State"] == "FAILED", out
    assert "is now a symbolic link" in out and "s3cret" not in out and "secret.txt" not in out, out
    assert sorted(p.name for p in private.iterdir()) == ["secret.txt"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bind_swapped_between_the_nodes_check_and_the_engines_mount_is_refused_in_the_container(place, engine):
    """The race the node cannot close by itself: the directory is real when the wrapper checks it
    and something else when the engine mounts it. The container's first process finds out."""
    built = stardock_json("build", str(spec(place)), "--engine", engine)
    eng = get_engine(engine)
    image = eng.image_for(Path(built["artifact"]), f"localhost/stardock/attacks-test:{built['key'][:16]}")
    checked, other = place / "shared" / "checked", place / "other"
    for d in (checked, other):
        d.mkdir()
        (d / "who").write_text(d.name + "\n")
    handover = Handover([hold_path(checked, "/data/in", True, "test mount")])
    # the attacker's move, between the wrapper's check and the engine's bind
    checked.rename(place / "shared" / "checked-away")
    checked.symlink_to(other)
    command = checked_command(handover.mounts, handover.add_environment({}), ["cat", "/data/in/who"])
    argv = eng.run_argv(image, command, handover.mounts, None,
                        RunOptions(uid=os.getuid(), gid=os.getgid(), preserve_fds=len(handover.pass_fds)))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, pass_fds=handover.pass_fds,
                              preexec_fn=handover.in_child, timeout=120)
    finally:
        handover.close()
    assert proc.returncode == 126 and "other" not in proc.stdout, proc.stdout + proc.stderr
    assert "is not what was checked on the host" in proc.stderr


# --- outputs and records ------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_outputs_are_the_users_alone(place, engine):
    site = site_file(place)
    job = submitted(sbatch(place, site, engine, "--output=/dev/null", "--wrap",
                           'echo private > "$STARDOCK_OUTPUT/result.txt"'))
    assert wait_job(job)[job]["State"] == "COMPLETED"
    [row] = stardock_json("status", job, "--site", str(site))
    output = Path(row["output"])
    assert (output / "result.txt").read_text() == "private\n"
    for path in (output, output.parent):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is open to others: {oct(path.stat().st_mode)}"
    spy = sh(["sudo", "-n", "-u", OTHER, "--", "cat", str(output / "result.txt")])
    assert spy.returncode != 0 and "private" not in spy.stdout


@pytest.mark.parametrize("planted", ["directory", "link"])
def test_a_user_directory_planted_by_another_user_is_refused_before_submission(place, planted):
    """Under a world-writable outputs root, the attacker makes <root>/<victim> first (or a link
    there to a directory of theirs), to receive the victim's outputs."""
    root = place / "shared"
    catcher = root / "catcher"
    as_attacker("mkdir", "-m", "0777", str(catcher))
    if planted == "directory":
        as_attacker("mkdir", "-m", "0777", str(root / ME))
    else:
        as_attacker("ln", "-s", str(catcher), str(root / ME))
    site = site_file(place, outputs=f"{root}/{{user}}/stardock-outputs")
    name = f"planted-{uuid.uuid4().hex[:6]}"
    proc = sbatch(place, site, "podman", f"--job-name={name}", "--wrap", "true")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (f"made by user {OTHER}" if planted == "link" else f"belongs to user {OTHER}") in proc.stderr
    assert jobs_named(name) == [] and list(catcher.iterdir()) == []


def test_records_that_cannot_be_written_stop_the_submission_before_slurm_sees_it(place):
    records = place / "records"
    records.mkdir(mode=0o500)  # the user's own, but not writable (as on a full or read-only disk)
    site = site_file(place, records=str(records))
    name = f"norecords-{uuid.uuid4().hex[:6]}"
    try:
        proc = sbatch(place, site, "podman", f"--job-name={name}", "--wrap", "true")
    finally:
        records.chmod(0o700)
    assert proc.returncode == 2 and "cannot write job records" in proc.stderr and "Traceback" not in proc.stderr
    assert jobs_named(name) == []


# --- what a job may do on the node --------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_jobs_run_without_new_privileges_and_see_only_their_own_processes(place, engine):
    site = site_file(place)
    job = submitted(sbatch(place, site, engine, "--output=iso-%j.out", str(script(
        place, "grep NoNewPrivs /proc/self/status\n"
               "for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done | sort -u | tr '\\n' ' '\n"))))
    assert wait_job(job)[job]["State"] == "COMPLETED"
    out = (place / f"iso-{job}.out").read_text()
    assert "NoNewPrivs:\t1" in out, out
    seen = set(out.splitlines()[-1].split())
    assert not seen & {"slurmd", "slurmctld", "slurmstepd", "munged", "mariadbd", "sshd", "pytest"}, seen


@pytest.mark.parametrize("engine", ENGINES)
def test_a_fork_loop_stops_at_the_process_limit_and_the_node_stays_usable(place, engine):
    site = site_file(place, policy={"limits": {"pids": 64}})
    bomb = ("perl -e 'my @kids; while (1) { my $p = fork(); if (!defined $p) { print \"stopped at \", "
            "scalar(@kids), \"\\n\"; last } if ($p == 0) { sleep 60; exit 0 } push @kids, $p } "
            "kill \"TERM\", @kids; waitpid($_, 0) for @kids'\n")
    job = submitted(sbatch(place, site, engine, "--output=bomb-%j.out", "--time=2", str(script(place, bomb))))
    rows = wait_job(job, timeout=240)
    out = (place / f"bomb-{job}.out").read_text()
    assert rows[job]["State"] == "COMPLETED", out
    assert "stopped at" in out, out
    stopped = int(out.split("stopped at")[1].split()[0])
    assert 0 < stopped < 64, out
    after = submitted(sbatch(place, site, engine, "--output=after-%j.out", "--wrap", "echo still fine"))
    assert wait_job(after)[after]["State"] == "COMPLETED"
    assert own_log((place / f"after-{after}.out").read_text()) == "still fine\n"


READ_COMMAND_LINES = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null"


def test_the_containers_environment_is_on_no_command_line_the_attacker_reads(place):
    """The attacker reads every command line on the node while the victim's job runs (they can:
    /proc/PID/cmdline is everybody's to read). A variable the job passes to its container (a
    token, with --pass-env) must not be there: the container gets its environment by descriptor
    (jobs/binds.py). Both engines, all backends and the login node: test_attacks_cmdline.py."""
    site = site_file(place)
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    marker = f"{uuid.uuid4().int % 1000 + 7000}.{uuid.uuid4().int % 10 ** 6:06d}"
    job = submitted(stardock("sbatch", "--site", str(site), "--parsable", "--env", str(spec(place)),
                             "--engine", "podman", "--pass-env", "SECRET", "--output=env-%j.out", "--time=3",
                             "--wrap", f'test "$SECRET" = {secret} && echo passed; sleep {marker}',
                             env={"SECRET": secret}, cwd=place))
    try:
        node, seen = None, ""
        for _ in range(120):
            node = sh(["squeue", "-h", "-j", job, "-o", "%N"]).stdout.strip()
            if node:
                seen = as_attacker("env", f"SLURM_CONF={os.environ['SLURM_CONF']}", "srun", "-w", node, "-N1",
                                   "-n1", "-t", "2", "sh", "-c", READ_COMMAND_LINES).stdout
                if f"sleep {marker}" in seen:
                    break
            time.sleep(1)
        assert f"sleep {marker}" in seen, "the attacker sees the job's processes"
        assert secret not in seen
    finally:
        stardock("cancel", job)
    wait_job(job, timeout=120)
    assert (place / f"env-{job}.out").read_text().startswith("passed"), "the container got the value"
