"""Test configuration shared by every layer.

Integration tests are marked by what they need (slurm, podman, apptainer). Under the testbed
(`slurm/testbed/testbed test` sets STARDOCK_REQUIRE_TESTBED=1) Slurm and Podman must be there:
a missing one fails the test instead of skipping it, so CI cannot go green by skipping.
Apptainer may be absent on other machines; its tests then skip with the reason.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REQUIRED = os.environ.get("STARDOCK_REQUIRE_TESTBED") == "1"


def _slurm_reason():
    if not shutil.which("sbatch"):
        return "sbatch is not installed"
    if subprocess.run(["scontrol", "ping"], capture_output=True, text=True).returncode != 0:
        return "no Slurm controller answers `scontrol ping` (bring the testbed up)"
    return None


def _podman_reason():
    if not shutil.which("podman"):
        return "podman is not installed"
    if os.geteuid() == 0:
        return "podman tests run rootless; run them as the unprivileged test user"
    return None


def _apptainer_reason():
    if not shutil.which("apptainer"):
        return "apptainer is not installed (not in Debian bookworm; the testbed unpacks sid's)"
    return None


PROBES = {"slurm": _slurm_reason, "podman": _podman_reason, "apptainer": _apptainer_reason}
MUST_RUN = {"slurm", "podman"} | ({"apptainer"} if REQUIRED and shutil.which("apptainer") else set())


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="rewrite the golden (reference) files from the current renderers; "
                          "review the result with git diff")


def pytest_collection_modifyitems(config, items):
    reasons = {}
    for item in items:
        for name, probe in PROBES.items():
            if item.get_closest_marker(name) is None:
                continue
            if name not in reasons:
                reasons[name] = probe()
            reason = reasons[name]
            if reason is None:
                continue
            if REQUIRED and name in MUST_RUN:
                item.user_properties.append(("testbed_missing", reason))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_runtest_setup(item):
    for key, reason in item.user_properties:
        if key == "testbed_missing":
            pytest.fail(f"the testbed should provide this but does not: {reason}")


# --- the run's report: each test's outcome and duration, for the testbed's summary of its lanes ---
_REPORT: dict = {}


def pytest_runtest_logreport(report):
    path = os.environ.get("STARDOCK_TEST_REPORT")
    if not path:
        return
    entry = _REPORT.setdefault(report.nodeid, {"duration": 0.0, "outcome": "passed"})
    entry["duration"] += report.duration
    if report.outcome == "failed" or (report.outcome == "skipped" and entry["outcome"] == "passed"):
        entry["outcome"] = "error" if report.when != "call" and report.outcome == "failed" else report.outcome


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("STARDOCK_TEST_REPORT")
    if path:
        import json

        with open(path, "w") as fh:
            json.dump({"exitstatus": int(exitstatus), "tests": _REPORT}, fh, indent=1, sort_keys=True)
