"""The testbed is idempotent, reports status, and stops only the daemons it started (issue 2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTBED_DIR = Path(__file__).resolve().parents[2] / "slurm" / "testbed"
TESTBED = TESTBED_DIR / "testbed"
STATE = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed"))
DAEMONS = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmrestd"]

sys.path.insert(0, str(TESTBED_DIR))
import tbcommon  # noqa: E402


def run_testbed(*args):
    return subprocess.run([str(TESTBED), *args], capture_output=True, text=True, timeout=900)


def pids():
    return {d: (STATE / "run" / f"{d}.pid").read_text().strip() for d in DAEMONS}


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
    for d in DAEMONS:
        assert "running, pid" in lines[d], out.stdout
    assert ": idle" in out.stdout or ": mixed" in out.stdout


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
    assert status.stdout.count("stopped") == len(DAEMONS)
    up = run_testbed("up")
    assert up.returncode == 0, up.stderr
    assert run_testbed("status").returncode == 0
    job = subprocess.run(["srun", "-t", "1", "true"], capture_output=True, text=True,
                         env={**os.environ, "SLURM_CONF": str(STATE / "etc" / "slurm.conf")})
    assert job.returncode == 0, job.stderr
