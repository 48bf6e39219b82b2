"""Bind sources held open on the node, and the container's proof that the engine bound them."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from stardock_hpc.engines.base import Mount
from stardock_hpc.jobs.binds import PREFLIGHT, BindError, Handover, Held, checked_command, open_beneath


def tree(tmp_path: Path) -> Path:
    (tmp_path / "vol" / "a" / "b").mkdir(parents=True)
    (tmp_path / "vol" / "a" / "file").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    return tmp_path / "vol"


@pytest.mark.parametrize("swap", ["a", "a/b"])
def test_a_link_anywhere_below_the_root_is_refused(tmp_path, swap):
    vol = tree(tmp_path)
    (vol / swap).rename(tmp_path / "aside")
    (vol / swap).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BindError, match="now a symbolic link"):
        open_beneath(vol, "a/b", "volume mount /data/v")


def test_the_object_held_is_the_one_at_the_path(tmp_path):
    vol = tree(tmp_path)
    for sub in ("", "a", "a/b", "a/file"):
        fd = open_beneath(vol, sub, "test")
        assert os.path.samestat(os.fstat(fd), os.stat(vol / sub if sub else vol))
        os.close(fd)


def preflight(vol, targets, env=None, command=("bash", "-c", "ls /proc/self/fd; echo RAN")):
    """Run the preflight as the container's first process would: descriptors 3.. are what the
    wrapper held (a and a/b) and the environment, targets are what the engine bound."""
    handover = Handover([Held(Mount(vol / "a", "/x", True), open_beneath(vol, "a", "t")),
                         Held(Mount(vol / "a/b", "/y", True), open_beneath(vol, "a/b", "t"))])
    try:
        assert handover.add_environment(env or {}) == 5 and handover.pass_fds == (3, 4, 5)
        argv = ["bash", "-p", "-c", PREFLIGHT, "pre", "5", *targets, "--", *command]
        return subprocess.run(argv, capture_output=True, text=True, pass_fds=handover.pass_fds,
                              preexec_fn=handover.in_child)
    finally:
        handover.close()


def test_the_preflight_runs_the_job_only_when_every_target_is_what_was_held(tmp_path):
    vol = tree(tmp_path)
    good = preflight(vol, [str(vol / "a"), str(vol / "a/b")])
    assert good.returncode == 0 and "RAN" in good.stdout
    assert set(good.stdout.split()[:-1]) <= {"0", "1", "2", "3"}, "held descriptors leaked into the job"
    swapped = preflight(vol, [str(vol / "a/b"), str(vol / "a")])  # what an engine bound instead
    assert swapped.returncode == 126 and "RAN" not in swapped.stdout
    assert "is not what was checked on the host" in swapped.stderr


def test_handover_works_whatever_the_low_descriptors_hold(tmp_path):
    vol = tree(tmp_path)
    with open(os.devnull) as busy:  # e.g. pytest's capture, or anything inherited from slurmstepd
        assert busy.fileno() >= 3
        good = preflight(vol, [str(vol / "a"), str(vol / "a/b")])
    assert good.returncode == 0 and "RAN" in good.stdout


def test_checked_command_keeps_the_command_intact_and_holds_no_variable():
    argv = checked_command([Mount(Path("/h"), "/t with 'q'", True)], 4, ["/.stardock/job/script", "a b", "$(x)"])
    assert argv[:3] == ["/bin/bash", "-p", "-c"] and argv[4:] == ["stardock-preflight", "4", "/t with 'q'", "--",
                                                                  "/.stardock/job/script", "a b", "$(x)"]
