"""The tree stays ruff-clean and mypy-clean (the style rules in DESIGN.md)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install .[test])")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install .[test])")
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", "/dev/null",
                          str(REPO / "stardock_hpc")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_test_modules_have_names_of_their_own():
    """pytest imports test modules by base name (no packages here): two test_x.py in different
    directories stop the whole run at collection."""
    names = [p.name for p in REPO.joinpath("tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
