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

try:
    from hypothesis import settings
except ImportError:  # a test dependency: the property tests then fail to import, saying so
    pass
else:
    # The same examples every run, and no example database (a .hypothesis/ directory in the tree,
    # written by whichever user ran first, that the others cannot read): a property test fails in
    # every run or in none.
    settings.register_profile("suite", derandomize=True, database=None)
    settings.load_profile("suite")


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
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("needs root (it plays another user with chown): `testbed test` runs it in its root lane")
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


# --- what a run leaves in shared places (issue 24) ---------------------------------------------
# A test removes what it made in places other tests read: the shared image cache, the homes, the
# testbed's shared directory, Slurm's queue. Checked for this lane's two users at the end of a run
# under the testbed: what is new there since the run started fails the run. Kept by design: the
# images of specs whose name is written in the tests' sources (a fixed key: a cache hit in every
# later run), and what stardock itself keeps in a home (records, outputs, configuration).
HOME_KEPT = {".local", ".config", ".cache", ".apptainer", ".ssh", "stardock", ".node-names.key"}
_BEFORE: dict = {}


def _lane_users():
    import pwd

    names = [os.environ.get("STARDOCK_TEST_USER") or pwd.getpwuid(os.getuid()).pw_name,
             os.environ.get("STARDOCK_OTHER_USER", "stardock2")]
    out = []
    for name in names:
        try:
            out.append(pwd.getpwnam(name))
        except KeyError:
            continue
    return out


def _kept_names():
    import re
    from pathlib import Path

    here = Path(__file__).resolve().parent
    names = set()
    for path in [*here.rglob("*.py"), *here.rglob("*.yaml")]:
        if "corpus" in path.parts and path.suffix == ".py":
            continue
        text = path.read_text(errors="replace").replace("\\n", "\n")  # a spec's text in a Python string
        names |= set(re.findall(r"\bname:\s*['\"]?([A-Za-z0-9][A-Za-z0-9_.-]*)(?=['\"\s\\,}]|$)", text))
    names |= {p.name for p in (here / "corpus" / "recipes").iterdir() if p.is_dir()}
    return names


def _shared_state(users):
    import json
    import subprocess
    from pathlib import Path

    state = {"entries": {}, "homes": {}, "shared": set(), "jobs": set()}
    testbed = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed"))
    uids = {u.pw_uid: u.pw_name for u in users}
    entries = testbed / "cache" / "entries"
    for entry in (entries.iterdir() if entries.is_dir() else []):
        owner = entry.name.rsplit("-u", 1)[-1].split(".")[0]
        if owner.isdigit() and int(owner) in uids:
            try:
                name = json.loads((entry / "meta.json").read_text()).get("name", "?")
            except (OSError, ValueError):
                name = "?"  # private to its owner (another lane user's), or half there
            state["entries"][entry.name] = name
    for u in users:
        try:
            state["homes"][u.pw_name] = set(os.listdir(u.pw_dir))
        except OSError:
            state["homes"][u.pw_name] = set()
    shared = testbed / "shared"
    for child in (shared.iterdir() if shared.is_dir() else []):
        try:
            if child.lstat().st_uid in uids:
                state["shared"].add(child.name)
        except OSError:
            pass
    for u in users:
        out = subprocess.run(["squeue", "-h", "-u", u.pw_name, "-o", "%i %T %j"], capture_output=True, text=True)
        state["jobs"] |= {f"{line} ({u.pw_name})" for line in out.stdout.splitlines() if line.strip()}
    return state


def _checks_leaks(session) -> bool:
    if not REQUIRED or os.environ.get("STARDOCK_NO_LEAK_CHECK") == "1":
        return False
    return any("/integration/" in str(item.fspath) or "/asroot/" in str(item.fspath) for item in session.items)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    if _checks_leaks(session):
        _BEFORE["session"] = session
        _BEFORE["users"] = _lane_users()
        _BEFORE["state"] = _shared_state(_BEFORE["users"])


def leaks(before, after, kept_names) -> list:
    new = sorted(set(after["entries"]) - set(before["entries"]))
    found = [f"cache entry {name} ({after['entries'][name]})" for name in new
             if after["entries"][name] not in kept_names]
    for user, names in after["homes"].items():
        found += [f"~{user}/{n}" for n in sorted(names - before["homes"].get(user, set()) - HOME_KEPT)]
    found += [f"{os.environ.get('STARDOCK_TESTBED', '/var/tmp/stardock-testbed')}/shared/{n}"
              for n in sorted(after["shared"] - before["shared"])
              if not n.startswith(("t-", "suite-images-"))]
    found += [f"job {j} still in Slurm's queue" for j in sorted(after["jobs"] - before["jobs"])]
    return found


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if "state" not in _BEFORE:
        return
    found = leaks(_BEFORE["state"], _shared_state(_BEFORE["users"]), _kept_names())
    if found:
        terminalreporter.section("left in shared places (issue 24): the tests that made these must remove them",
                                 red=True)
        for line in found:
            terminalreporter.line(f"  {line}")
        _BEFORE["session"].exitstatus = pytest.ExitCode.TESTS_FAILED
