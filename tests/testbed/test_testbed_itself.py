"""The testbed is idempotent, reports status, and stops only the daemons it started (issue 2)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTBED_DIR = Path(__file__).resolve().parents[2] / "slurm" / "testbed"
TESTBED = TESTBED_DIR / "testbed"
STATE = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed"))
NODES = ["node1", "node2", "node3"]
DAEMONS = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmrestd", "sshd"]
PIDFILES = DAEMONS + [f"slurmd-{n}" for n in NODES]   # each node's slurmd

sys.path.insert(0, str(TESTBED_DIR))
import tbcommon  # noqa: E402


def run_testbed(*args):
    return subprocess.run([str(TESTBED), *args], capture_output=True, text=True, timeout=900)


def pids():
    return {d: (STATE / "run" / f"{d}.pid").read_text().strip() for d in PIDFILES}


def config_stamps():
    return {p.name: p.stat().st_mtime_ns for p in (STATE / "etc").iterdir()}


def test_second_up_changes_nothing():
    first = run_testbed("up")
    assert first.returncode == 0, first.stderr
    before_pids, before_conf = pids(), config_stamps()
    second = run_testbed("up")
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stderr, second.stderr
    assert pids() == before_pids
    assert config_stamps() == before_conf


def test_status_reports_every_daemon_running():
    out = run_testbed("status")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    for d in DAEMONS + [f"slurmd@{n}" for n in NODES]:
        assert "running, pid" in lines[d], out.stdout
    for n in NODES:
        assert any(line.startswith(f"node {n}: 10.66.0.") and line.split(", ")[-1] in ("idle", "mixed", "allocated")
                   for line in out.stdout.splitlines()), out.stdout


def test_stop_by_pidfile_spares_a_process_that_is_not_the_daemon(tmp_path):
    decoy = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = tmp_path / "slurmd.pid"
        pidfile.write_text(f"{decoy.pid}\n")
        assert tbcommon.stop_pidfile(pidfile, "/usr/sbin/slurmd", "slurmd") is False
        assert decoy.poll() is None, "a PID file naming another program must not get it killed"
    finally:
        decoy.kill()
        decoy.wait()


@pytest.mark.slurm
def test_down_stops_the_daemons_and_up_brings_them_back():
    down = run_testbed("down")
    assert down.returncode == 0, down.stderr
    status = run_testbed("status")
    assert status.returncode == 1
    assert status.stdout.count("stopped") == len(DAEMONS) + len(NODES)
    up = run_testbed("up")
    assert up.returncode == 0, up.stderr
    assert run_testbed("status").returncode == 0
    job = subprocess.run(["srun", "-t", "1", "true"], capture_output=True, text=True,
                         env={**os.environ, "SLURM_CONF": str(STATE / "etc" / "slurm.conf")})
    assert job.returncode == 0, job.stderr


def as_other(*argv):
    return tbcommon.run(argv, user=tbcommon.OTHER_USER, capture=True, check=False, timeout=300)


def kill_every_process_of(user):
    subprocess.run(["pkill", "-KILL", "-u", user], check=False)
    for _ in range(100):
        if subprocess.run(["pgrep", "-u", user], capture_output=True).returncode != 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of {user} outlived SIGKILL")


def test_up_repairs_podman_state_that_outlived_its_processes():
    """A restart leaves /run/user/UID behind here (no tmpfs, no logind): `up` empties it."""
    archive = STATE / "images" / "debian-bookworm.oci.tar"
    assert as_other("podman", "load", "-q", "-i", str(archive)).returncode == 0
    as_other("podman", "rm", "--force", "--ignore", "outlived")
    started = as_other("podman", "run", "-d", "--name", "outlived", "--network", "none",
                       "localhost/debian:bookworm", "sleep", "600")
    assert started.returncode == 0, started.stderr
    try:
        kill_every_process_of(tbcommon.OTHER_USER)  # what a restart of the machine does
        broken = as_other("podman", "ps", "-a")
        assert broken.returncode != 0 and "invalid internal status" in broken.stderr, broken.stderr
        up = run_testbed("up")
        assert up.returncode == 0, up.stderr
        assert f"emptying {tbcommon.runtime_dir(tbcommon.OTHER_USER)}" in up.stderr
        listed = as_other("podman", "ps", "-a", "--format", "{{.Names}} {{.Status}}")
        assert listed.returncode == 0, listed.stderr
        assert "outlived" in listed.stdout and "Up" not in listed.stdout
    finally:
        removed = as_other("podman", "rm", "--force", "--ignore", "outlived")
    assert removed.returncode == 0, removed.stderr
