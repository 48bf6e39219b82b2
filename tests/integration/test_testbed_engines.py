"""Rootless Podman and Apptainer run the testbed's base image, also inside Slurm jobs (issue 2)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from slurmtools import sbatch, sh, wait_job

BASE = "localhost/debian:bookworm"
PODMAN_RUN = ["podman", "run", "--rm", "--pull=never", "--network=none"]


@pytest.mark.podman
def test_podman_runs_rootless_in_a_user_namespace():
    proc = sh([*PODMAN_RUN, BASE, "cat", "/proc/self/uid_map", "/etc/debian_version"])
    assert proc.returncode == 0, proc.stderr
    uid_map, version = proc.stdout.splitlines()[0].split(), proc.stdout.splitlines()[-1]
    # container root is the unprivileged user outside, not host root
    assert uid_map[:3] == ["0", str(os.getuid()), "1"], proc.stdout
    assert version.startswith("12.")



@pytest.mark.podman
def test_podman_keep_id_writes_files_as_the_user(tmp_path):
    proc = sh([*PODMAN_RUN, "--userns=keep-id", "-v", f"{tmp_path}:/out", BASE,
               "sh", "-c", "id -u > /out/who"])
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "who"
    assert written.read_text().strip() == str(os.getuid())
    assert written.stat().st_uid == os.getuid()


@pytest.mark.podman
@pytest.mark.slurm
def test_podman_inside_a_slurm_job(tmp_path):
    job = sbatch("--mem=500M", "--time=3", f"--chdir={tmp_path}", f"--output={tmp_path}/out",
                 "--wrap", " ".join(PODMAN_RUN + [BASE, "cat", "/etc/os-release"]))
    rows = wait_job(job)
    assert rows[job]["State"] == "COMPLETED", (rows, (tmp_path / "out").read_text())
    assert 'VERSION_CODENAME=bookworm' in (tmp_path / "out").read_text()


@pytest.fixture(scope="session")
def base_sif(tmp_path_factory):
    if not shutil.which("apptainer"):
        pytest.skip("apptainer is not installed")
    sif = tmp_path_factory.mktemp("apptainer") / "base.sif"
    proc = sh(["apptainer", "-s", "build", str(sif), f"oci-archive:{os.environ['STARDOCK_BASE_ARCHIVE']}"])
    assert proc.returncode == 0, proc.stderr
    return sif


@pytest.mark.apptainer
def test_apptainer_exec_runs_as_the_user_and_enforces_ro_binds(base_sif, tmp_path):
    (tmp_path / "in.txt").write_text("data")
    proc = sh(["apptainer", "-s", "exec", "--bind", f"{tmp_path}:/mnt:ro", str(base_sif),
               "sh", "-c", "id -u; cat /mnt/in.txt; echo; touch /mnt/new 2>&1 || echo refused"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(os.getuid())
    assert lines[1] == "data"
    assert lines[-1] == "refused" and "Read-only file system" in proc.stdout
    assert not (tmp_path / "new").exists()


@pytest.mark.apptainer
@pytest.mark.slurm
def test_apptainer_inside_a_slurm_job(base_sif, tmp_path):
    job = sbatch("--mem=500M", "--time=3", f"--chdir={tmp_path}", f"--output={tmp_path}/out",
                 "--wrap", f"apptainer -s exec {base_sif} cat /etc/os-release")
    rows = wait_job(job)
    assert rows[job]["State"] == "COMPLETED", (rows, (tmp_path / "out").read_text())
    assert 'VERSION_CODENAME=bookworm' in (tmp_path / "out").read_text()


def test_base_archive_is_an_oci_archive():
    listing = subprocess.run(["tar", "-tf", os.environ["STARDOCK_BASE_ARCHIVE"]],
                             capture_output=True, text=True, check=True).stdout.split()
    assert "index.json" in listing and "oci-layout" in listing
