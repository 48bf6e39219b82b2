"""slurmrestd going away mid-flight, without touching the testbed's daemon: the test runs a
slurmrestd of its own (as the unprivileged test user, rest_auth/jwt on a free port) and kills it
between submit and status, and puts a proxy in front of the testbed's slurmrestd that loses the
answer to a submit. Each time: one clear error, and never a second job (counted by a unique job
name in squeue and sacct)."""
from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import pytest
from clitools import built_image, cancelled_at_exit, stardock, stardock_json
from resttools import Proxy, free_port, jobs_named, own_slurmrestd, rest_site, stop

pytestmark = [pytest.mark.slurm, pytest.mark.podman]

SPEC = 'name: rest-backend\nbuild: ["echo rest backend > /stamp"]\n'
SCRIPT = "#!/bin/bash\n#SBATCH --time=5\n#SBATCH --output=outage-%j.out\nsleep 600\n"  # until cancelled


@pytest.fixture(scope="module")
def image_key():
    with built_image(SPEC, "stardock-rest-") as key:
        yield key


@pytest.fixture
def jobs():
    with cancelled_at_exit() as ids:
        yield ids


def one_error(proc, fragment: str) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, (proc.returncode, proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("stardock: error:")]
    assert len(errors) == 1 and fragment in proc.stderr, proc.stderr
    return errors[0]


def test_slurmrestd_killed_between_submit_and_status(image_key, jobs, tmp_path):
    if not shutil.which("slurmrestd") and not Path("/usr/sbin/slurmrestd").exists():
        pytest.skip("slurmrestd is not installed")
    (tmp_path / "job.sh").write_text(SCRIPT)
    name = f"rest-outage-{uuid.uuid4().hex[:8]}"
    port = free_port()
    # the site says sbatch: status and cancel must follow the job's record to its backend, rest
    site = rest_site(tmp_path, rest_url=f"http://127.0.0.1:{port}")
    with own_slurmrestd(port, tmp_path / "slurmrestd.log") as daemon:
        proc = stardock("sbatch", "--site", str(site), "--backend", "rest", "--image", image_key, "--parsable",
                        "-J", name, "job.sh", cwd=tmp_path, timeout=180)
        assert proc.returncode == 0 and re.fullmatch(r"[0-9]+\n", proc.stdout), proc.stderr
        job = proc.stdout.strip()
        jobs.append(job)
        assert stardock_json("status", job, "--site", str(site))[0]["state"] in ("PENDING", "RUNNING")
        stop(daemon)
        # status answers from the job's own record, and says why and where from (issue 15)
        down = stardock("status", "--json", job, "--site", str(site))
        assert down.returncode == 0 and "Traceback" not in down.stderr, down.stderr
        assert f"cannot reach slurmrestd at http://127.0.0.1:{port} (3 attempts): connection refused" in down.stderr
        assert "stardock's records" in down.stderr, down.stderr
        rows = json.loads(down.stdout)
        assert rows and all(row["source"] == "record" for row in rows), down.stdout
        one_error(stardock("cancel", job, "--site", str(site)), "cannot reach slurmrestd")
    assert jobs_named(name) == [job]
    # slurmrestd back: the same commands work again
    with own_slurmrestd(port, tmp_path / "slurmrestd.log"):
        assert stardock_json("status", job, "--site", str(site))[0]["state"] in ("PENDING", "RUNNING", "COMPLETED")
        assert stardock("cancel", job, "--site", str(site)).returncode == 0
    assert jobs_named(name) == [job]


def test_a_submit_whose_answer_is_lost_is_never_sent_twice(image_key, jobs, tmp_path):
    (tmp_path / "job.sh").write_text(SCRIPT)
    name = f"rest-lost-{uuid.uuid4().hex[:8]}"
    proxy = Proxy(6820, lose_answer_to=b"POST ")
    try:
        site = rest_site(tmp_path, rest_url=f"http://127.0.0.1:{proxy.port}")
        proc = stardock("sbatch", "--site", str(site), "--backend", "rest", "--image", image_key, "--parsable",
                        "-J", name, "job.sh", cwd=tmp_path, timeout=180)
    finally:
        proxy.close()
    one_error(proc, "may or may not have taken effect")
    assert proxy.lost == 1
    found = jobs_named(name)
    jobs.extend(found)
    assert len(found) == 1, f"expected exactly the one job named {name}, found {found}"
