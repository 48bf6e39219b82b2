"""The command's surface: version, help, usage errors (exit 2, one line, no traceback)."""
from __future__ import annotations

import subprocess
import sys

import stardock_hpc


def stardock(*args):
    return subprocess.run([sys.executable, "-m", "stardock_hpc", *args], capture_output=True, text=True)


def test_version():
    out = stardock("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"stardock, version {stardock_hpc.__version__}"


def test_help_lists_usage():
    out = stardock("--help")
    assert out.returncode == 0
    assert out.stdout.startswith("Usage: stardock [OPTIONS] COMMAND [ARGS]...")


def test_unknown_command_is_a_usage_error_without_traceback():
    out = stardock("frobnicate")
    assert out.returncode == 2
    assert "No such command 'frobnicate'" in out.stderr
    assert "Traceback" not in out.stderr
