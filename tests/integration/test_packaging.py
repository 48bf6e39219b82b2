"""The wheel carries definitions/, wrappers/ and the slurm/ skeleton (issue 2)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import stardock_hpc

REPO = Path(__file__).resolve().parents[2]


def shipped_files(top: Path) -> set:
    """What setup.py promises to ship of a top-level data directory."""
    if top.name == "slurm":
        return {p.name for p in top.iterdir() if p.is_file() and p.suffix in (".tmpl", ".md")}
    return {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel built from the tree, installed (not editable) into a brand-new venv."""
    work = tmp_path_factory.mktemp("wheel")
    # pip builds in the source tree; the test user may not write there, so build from a copy
    tree = work / "tree"
    # (what other users' runs left in it, caches of tools, is neither needed nor readable)
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "__pycache__",
                                                              ".*_cache", ".hypothesis"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(work / "dist"), str(tree)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (work / "dist").glob("stardock_hpc-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return venv


def test_wheel_ships_the_data_directories(installed):
    code = ("import json, stardock_hpc.resources as r, pathlib;"
            "print(json.dumps({n: str(r.data_dir(n)) for n in r.DATA_DIRS}))")
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True,
                         text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    dirs = {name: Path(path) for name, path in json.loads(out.stdout).items()}
    for name, where in dirs.items():
        # read from inside the installed package, never from the source tree
        assert "site-packages/stardock_hpc/_data" in str(where), where
        assert shipped_files(where) == shipped_files(REPO / name), name
        for rel in shipped_files(REPO / name):
            assert (where / rel).read_bytes() == (REPO / name / rel).read_bytes()
    assert not (dirs["slurm"] / "testbed").exists(), "the testbed is a developer tool, not shipped"


def test_installed_console_script_reports_version_and_help(installed):
    version = subprocess.run([str(installed / "bin" / "stardock"), "--version"],
                             capture_output=True, text=True)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"stardock, version {stardock_hpc.__version__}"
    helptext = subprocess.run([str(installed / "bin" / "stardock"), "--help"],
                              capture_output=True, text=True)
    assert helptext.returncode == 0 and "Usage: stardock" in helptext.stdout
