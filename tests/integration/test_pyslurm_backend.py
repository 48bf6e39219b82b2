"""The pyslurm backend against the real cluster, where pyslurm is installed.

pyslurm must be built for the cluster's Slurm version. PyPI holds only pyslurm 25.11.x (and
17/18.x), which refuses Slurm 22.05; the testbed installs pyslurm 22.5.3 from
../shared/vendor/pyslurm (slurm/testbed/tbpython.py), and where that folder is absent these tests
skip with that reason. test_backend_twins.py compares this backend with sbatch on the fidelity
corpus, the job's environment, status, cancel and accounting; the option mapping is unit-tested
in tests/unit/test_rest_mapping.py.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clitools import built_image, cancelled_at_exit, stardock, stardock_json
from resttools import scontrol_records

from stardock_hpc.schedulers.pyslurm_backend import slurm_conf

pytestmark = [pytest.mark.slurm, pytest.mark.podman]
SPEC = 'name: pyslurm-backend\nbuild: ["echo pyslurm > /stamp"]\n'


def _pyslurm_reason():
    if slurm_conf() is None:
        return "no Slurm config ($SLURM_CONF or /etc/slurm/slurm.conf): pyslurm cannot even be imported"
    # in a child: an import against the wrong libslurm may end the process, not raise
    probe = subprocess.run([sys.executable, "-c", "import pyslurm; print(pyslurm.__version__)"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        return ("pyslurm cannot be imported here (" + last + "): the testbed installs pyslurm 22.5.3 for Slurm "
                "22.05 from ../shared/vendor/pyslurm, and that folder is absent (PyPI holds only 25.11.x)")
    return None


REASON = _pyslurm_reason()
pytestmark.append(pytest.mark.skipif(REASON is not None, reason=REASON or ""))


@pytest.fixture(scope="module")
def image_key():
    with built_image(SPEC, "stardock-pyslurm-") as key:
        yield key


@pytest.fixture
def jobs():
    with cancelled_at_exit() as ids:
        yield ids


def test_the_same_job_held_through_sbatch_and_pyslurm(image_key, jobs, tmp_path):
    script = Path(__file__).parent / "rest" / "twin.sh"
    (tmp_path / "twin.sh").write_text(script.read_text())
    ids = {}
    for backend in ("sbatch", "pyslurm"):
        proc = stardock("sbatch", "--backend", backend, "--image", image_key, "--parsable", "--hold", "twin.sh",
                        "alpha", cwd=tmp_path, timeout=180)
        assert proc.returncode == 0 and re.fullmatch(r"[0-9]+\n", proc.stdout), proc.stderr
        ids[backend] = proc.stdout.strip()
        jobs.append(ids[backend])
    fields = ("JobName", "Partition", "TimeLimit", "MinMemoryNode", "CPUs/Task", "ArrayTaskId")
    [a], [b] = scontrol_records(ids["sbatch"]), scontrol_records(ids["pyslurm"])
    assert {k: a[k] for k in fields} == {k: b[k] for k in fields}


def test_pyslurm_status_and_cancel(image_key, jobs, tmp_path):
    (tmp_path / "sleep.sh").write_text("#!/bin/bash\n#SBATCH --time=5\nsleep 300\n")
    proc = stardock("sbatch", "--backend", "pyslurm", "--image", image_key, "--parsable", "sleep.sh", cwd=tmp_path,
                    timeout=180)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    jobs.append(job)
    deadline = time.monotonic() + 120
    while stardock_json("status", job)[0]["state"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(1)
    assert stardock("cancel", job).returncode == 0
    while stardock_json("status", job)[0]["state"] != "CANCELLED":
        assert time.monotonic() < deadline
        time.sleep(1)
