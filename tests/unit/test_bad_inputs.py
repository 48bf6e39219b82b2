"""A corpus of bad specs and site configs: each gives one clear message naming the file and
the key or line, exit code 2, never a traceback, and writes nothing (issue 3)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BAD = Path(__file__).resolve().parents[1] / "bad"
SPEC_CASES = sorted(p.stem for p in (BAD / "specs").glob("*.yaml"))
SITE_CASES = sorted(p.stem for p in (BAD / "sites").glob("*.yaml"))
# the cases run in a directory whose name is itself hostile
HOSTILE_DIR = "we'ird $(dir) \"x\""


def expectation(path: Path) -> tuple:
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    expect = next(line.split(": ", 1)[1] for line in lines if line.startswith("# expect: "))
    site = next((line.split(": ", 1)[1] for line in lines if line.startswith("# site: ")), "ok")
    return expect, site


def stardock(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STARDOCK_SITE_CONFIG"}
    return subprocess.run([sys.executable, "-m", "stardock_hpc", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=60)


def snapshot(root: Path) -> set:
    return {(str(p.relative_to(root)), p.is_dir()) for p in root.rglob("*")}


def assert_one_clear_error(proc, fragment: str, named: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    first, *rest = proc.stderr.rstrip("\n").split("\n")
    assert first.startswith("stardock: error: "), proc.stderr
    assert all(line.startswith("  hint: ") for line in rest), f"more than one message: {proc.stderr}"
    assert fragment in proc.stderr, f"expected {fragment!r} in: {proc.stderr}"
    assert named in proc.stderr, f"the message does not name {named!r}: {proc.stderr}"


@pytest.mark.parametrize("case", SPEC_CASES)
def test_bad_spec_is_refused_clearly(case, tmp_path):
    source = BAD / "specs" / f"{case}.yaml"
    fragment, site = expectation(source)
    work = tmp_path / HOSTILE_DIR
    work.mkdir()
    shutil.copytree(BAD / "data", work / "data")
    (work / "escape").symlink_to("/etc/hostname")
    spec = work / "stardock.yaml"
    shutil.copyfile(source, spec)
    before = snapshot(tmp_path)
    proc = stardock("render", str(spec), "--format", "containerfile", "-o", str(work / "out" / "Containerfile"),
                    "--site", str(BAD / f"{site}-site.yaml"), cwd=work)
    assert_one_clear_error(proc, fragment, str(spec))
    assert snapshot(tmp_path) == before, "a refused spec must not write anything"


@pytest.mark.parametrize("case", SITE_CASES)
@pytest.mark.parametrize("command", [["site", "show"], ["site", "check"], ["apps"]])
def test_bad_site_config_is_refused_clearly(case, command, tmp_path):
    source = BAD / "sites" / f"{case}.yaml"
    fragment, _ = expectation(source)
    site = tmp_path / HOSTILE_DIR / "site.yaml"
    site.parent.mkdir()
    shutil.copyfile(source, site)
    before = snapshot(tmp_path)
    proc = stardock(*command, "--site", str(site), cwd=tmp_path)
    assert_one_clear_error(proc, fragment, str(site))
    assert snapshot(tmp_path) == before


def test_corpus_is_large_enough():
    assert len(SPEC_CASES) + len(SITE_CASES) >= 40


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_spec_path_that_is_not_a_file(what, tmp_path):
    spec = tmp_path / "nope.yaml"
    if what == "directory":
        spec.mkdir()
    proc = stardock("render", str(spec), "--format", "apptainer", "--site", str(BAD / "ok-site.yaml"),
                    cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(spec) in proc.stderr


def test_missing_site_file_is_named(tmp_path):
    proc = stardock("site", "show", "--site", str(tmp_path / "absent.yaml"), cwd=tmp_path)
    assert_one_clear_error(proc, "site config not found", str(tmp_path / "absent.yaml"))


def test_huge_spec_is_refused_before_parsing(tmp_path):
    spec = tmp_path / "stardock.yaml"
    spec.write_text("name: a\n" + "# padding\n" * 120_000)
    proc = stardock("render", str(spec), "--format", "apptainer", "--site", str(BAD / "ok-site.yaml"),
                    cwd=tmp_path)
    assert_one_clear_error(proc, "at most 1048576 are read", str(spec))


def test_debug_shows_the_traceback_for_bad_input(tmp_path):
    spec = tmp_path / "stardock.yaml"
    spec.write_text("name: BAD\n")
    proc = stardock("--debug", "render", str(spec), "--format", "apptainer", "--site",
                    str(BAD / "ok-site.yaml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "stardock: error:" in proc.stderr
