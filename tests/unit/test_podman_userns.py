"""A process's own user namespace for its Podman commands (engines/podman_userns.py): mapped as
Podman maps the user's, entered by descriptor, gone with the process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stardock_hpc.engines import podman as podman_engine
from stardock_hpc.engines import podman_userns

ROOT = Path(__file__).resolve().parents[2]


def test_subordinate_ranges_are_the_users_by_name_or_number_lowest_first(tmp_path):
    subuid = tmp_path / "subuid"
    subuid.write_text("other:100000:65536\n"
                      "alice:300000:1000\n"
                      "# a comment\n"
                      "1234:200000:65536\n"
                      "alice:bad:1\n"
                      "alice:5:0\n"
                      "alicia:400000:10\n")
    assert podman_userns.subordinate(subuid, "alice", 1234) == [(200000, 65536), (300000, 1000)]
    assert podman_userns.subordinate(subuid, "bob", 99) == []
    assert podman_userns.subordinate(tmp_path / "missing", "alice", 1234) == []


def test_the_ranges_follow_the_user_as_podman_maps_them():
    """0 is the user, the subordinate ids follow from 1, range after range."""
    assert podman_userns.id_map(1001, [(100000, 65536), (300000, 10)]) == [
        "0", "1001", "1", "1", "100000", "65536", "65537", "300000", "10"]


def test_podman_runs_as_it_did_until_a_namespace_is_made(monkeypatch):
    monkeypatch.setattr(podman_userns, "_held", None)
    assert podman_engine.podman() == ["podman"]
    assert podman_engine.podman("/ns")[:2] == ["podman", "--root"]


def test_every_podman_command_enters_the_processs_own_namespace(monkeypatch):
    monkeypatch.setattr(podman_userns, "_held", (5, 6))
    argv = podman_engine.podman("/ns")
    me = os.getpid()
    assert argv[:3] == ["nsenter", f"--user=/proc/{me}/fd/5", f"--mount=/proc/{me}/fd/6"]
    assert "_CONTAINERS_USERNS_CONFIGURED=done" in argv and argv[argv.index("podman") + 1] == "--root"
    assert not [a for a in argv if a.startswith("--target")], "never another process's namespaces"


PROBE = """
import os, subprocess, sys
from stardock_hpc.engines import podman_userns as u
mine = os.readlink("/proc/self/ns/user")
u.enter()
u.enter()  # once
out = subprocess.run([*u.nsenter(), "sh", "-c", "readlink /proc/self/ns/user; id -u; cat /proc/self/uid_map"],
                     capture_output=True, text=True, check=True).stdout.split("\\n")
print(mine != out[0], out[1], " ".join(out[2].split()), sep="|")
"""


def test_a_namespace_of_its_own_mapped_and_entered(tmp_path):
    """Made with unshare and entered through the maker's descriptors: another user namespace than
    the maker's, where the maker is root (the user's own id mapped to 0)."""
    if subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode != 0:
        pytest.skip("user namespaces are not available here")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    other, uid, first = out.stdout.strip().split("|")
    assert other == "True" and uid == "0" and first.startswith(f"0 {os.getuid()} 1")


def test_a_program_runs_in_a_namespace_of_its_own():
    """python -m stardock_hpc.engines.podman_userns PROGRAM...: as the node's wrappers run Podman
    (the tests' look at a node's store does it too)."""
    if subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode != 0:
        pytest.skip("user namespaces are not available here")
    out = subprocess.run([sys.executable, "-m", "stardock_hpc.engines.podman_userns", "sh", "-c",
                          'readlink /proc/self/ns/user; echo "$_CONTAINERS_USERNS_CONFIGURED"; id -u'],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    ns, configured, uid = out.stdout.split()
    assert ns != os.readlink("/proc/self/ns/user") and configured == "done" and uid == "0"
