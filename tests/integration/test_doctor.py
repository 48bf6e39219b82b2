"""stardock doctor and site check against the real testbed (and a broken site)."""
from __future__ import annotations

import pytest
from clitools import stardock, stardock_json

pytestmark = [pytest.mark.slurm, pytest.mark.podman]


def test_doctor_finds_the_testbed_healthy_and_names_the_accounting_setup():
    checks = {c["check"]: c for c in stardock_json("doctor")}
    assert all(c["status"] == "ok" for c in checks.values()), [c for c in checks.values() if c["status"] != "ok"]
    assert checks["job accounting"]["detail"].startswith("jobacct_gather/linux")
    assert "read-only cgroups" in checks["podman accounting"]["detail"]
    assert checks["proctrack"]["detail"] == "proctrack/cgroup"
    # what is enforced by whom (proven for real by tests/integration/test_attacks_jobs.py)
    assert checks["process limit"]["detail"].startswith("policy.limits.pids = 4096")
    assert "Apptainer: --pid" in checks["process view"]["detail"]
    # the testbed's mpi.conf: Slurm 22.05's tree fence would hold nobody on its 3 nodes (TreeWidth 50)
    assert checks["PMIx fences"]["detail"].startswith("PMIxCollFence=ring"), checks["PMIx fences"]


def test_site_check_fails_clearly_on_a_broken_site(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"cache: {tmp_path}/no-cache\nbases:\n  debian:bookworm: {{archive: {tmp_path}/none.tar}}\n"
                    f"volumes:\n  archive: {{path: {tmp_path}/no-archive}}\n")
    proc = stardock("site", "check", "--site", str(site))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"fail  image cache: {tmp_path}/no-cache does not exist" in proc.stdout
    assert f"fail  base debian:bookworm: archive {tmp_path}/none.tar is missing" in proc.stdout
    assert f"fail  volume archive: {tmp_path}/no-archive does not exist" in proc.stdout
    assert "stardock: error: 3 site check(s) failed" in proc.stderr
