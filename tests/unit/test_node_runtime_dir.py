"""The wrapper's own runtime directory never carries Podman state across a reboot."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from stardock_hpc.jobs import node, userdirs


def boot(tmp_path, monkeypatch, ident):
    boot_id = tmp_path / "boot_id"
    boot_id.write_text(ident + "\n")
    monkeypatch.setattr(node, "BOOT_ID", boot_id)


def test_a_directory_from_an_earlier_boot_is_emptied(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    (runtime / "libpod" / "tmp").mkdir(parents=True)
    (runtime / "libpod" / "tmp" / "pause.pid").write_text("4242\n")
    (runtime / node.BOOT_STAMP).write_text("earlier\n")
    boot(tmp_path, monkeypatch, "this")
    node.forget_earlier_boots(runtime)
    assert sorted(p.name for p in runtime.iterdir()) == sorted([node.BOOT_STAMP, node.LOCK])
    assert (runtime / node.BOOT_STAMP).read_text() == "this\n"


def test_a_directory_without_a_stamp_is_emptied_once(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "alive").write_text("")
    boot(tmp_path, monkeypatch, "this")
    node.forget_earlier_boots(runtime)
    assert not (runtime / "alive").exists()
    (runtime / "alive").write_text("")  # this boot's Podman state
    node.forget_earlier_boots(runtime)
    assert (runtime / "alive").exists(), "state of the current boot must be kept"


def test_podmans_state_of_this_boot_is_left_to_podman(tmp_path, monkeypatch):
    """A job's Podman runs in a namespace of the job's own (engines/podman_userns.py) and never
    looks at the user's pause process: its pid file and Podman's "alive" marker stay as they are,
    whatever became of that process. (Removing the marker made the next Podman command reset the
    state of every container of the user on the node, those of running jobs too.)"""
    uid = os.getuid()
    monkeypatch.setattr(node, "RUN_USER", tmp_path / "no-run-user")  # a node without /run/user/UID
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()
    boot(tmp_path, monkeypatch, "this")
    monkeypatch.setattr(node.tempfile, "gettempdir", lambda: str(tmp_path))
    runtime = tmp_path / f"stardock-runtime-{uid}"
    tmp = runtime / "libpod" / "tmp"
    tmp.mkdir(parents=True)
    (runtime / node.BOOT_STAMP).write_text("this\n")
    (tmp / "alive").write_text("")
    (tmp / "pause.pid").write_text(f"{dead.pid}\n")
    assert node.runtime_dir(uid) == str(runtime)
    assert (tmp / "alive").exists() and (tmp / "pause.pid").read_text() == f"{dead.pid}\n"


# --- /tmp/stardock-runtime-UID made first by another user ---------------------------------------

SQUATTER = 4343


@pytest.mark.root  # plants another user's object (chown)
@pytest.mark.parametrize("kind", ["directory", "link"])
def test_a_runtime_name_another_user_made_first_is_not_used(tmp_path, monkeypatch, kind):
    """Without /run/user/UID the jobs' runtime directory is /tmp/stardock-runtime-UID: made first
    by another user, every task of the user's jobs on the node takes the same private directory
    beside it, and nothing goes into theirs."""
    uid = os.getuid()
    monkeypatch.setattr(node, "RUN_USER", tmp_path / "no-run-user")  # a node without /run/user/UID
    boot(tmp_path, monkeypatch, "this")
    monkeypatch.setattr(userdirs, "BOOT_ID", tmp_path / "boot_id")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    monkeypatch.setattr(node.tempfile, "gettempdir", lambda: str(tmp))
    theirs, target = tmp / f"stardock-runtime-{uid}", tmp_path / "elsewhere"
    target.mkdir()
    if kind == "directory":
        theirs.mkdir(mode=0o777)
        theirs.chmod(0o777)
    else:
        theirs.symlink_to(target)
    os.lchown(theirs, SQUATTER, SQUATTER)
    warned: list = []
    runtime = Path(node.runtime_dir(uid, lambda: bytes(32), warned.append))
    assert runtime.parent == tmp and runtime.name.startswith(theirs.name + "-")
    st = os.lstat(runtime)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700
    assert len(warned) == 1 and str(theirs) in warned[0] and f"uid {SQUATTER}" in warned[0]
    assert node.runtime_dir(uid, lambda: bytes(32), warned.append) == str(runtime), "found again by the next task"
    assert os.lstat(theirs).st_uid == SQUATTER and list(target.iterdir()) == []
    if kind == "directory":
        assert list(theirs.iterdir()) == []
    boot(tmp_path, monkeypatch, "next")  # after a reboot: another name (this one was on command lines)
    assert node.runtime_dir(uid, lambda: bytes(32), warned.append) != str(runtime)


def test_without_the_users_key_a_taken_runtime_name_is_still_refused(tmp_path, monkeypatch):
    uid = os.getuid()
    monkeypatch.setattr(node, "RUN_USER", tmp_path / "no-run-user")  # a node without /run/user/UID
    monkeypatch.setattr(node.tempfile, "gettempdir", lambda: str(tmp_path))
    (tmp_path / f"stardock-runtime-{uid}").write_text("not a directory\n")
    with pytest.raises(userdirs.Taken, match="is not a directory"):
        node.runtime_dir(uid)


def test_what_a_job_found_on_a_node_is_said_once(tmp_path):
    """The batch script and each step's tasks set up alike; the job's log gets the warning once per node."""
    assert node.first_to_say(tmp_path, "77") and not node.first_to_say(tmp_path, "77")
    assert node.first_to_say(tmp_path, "78")
    assert node.first_to_say(tmp_path, None) and node.first_to_say(tmp_path, None), "stardock exec here: always"
    old = tmp_path / f"{node.SAID}1"
    old.write_text("")
    os.utime(old, (1, 1))
    node.first_to_say(tmp_path, "79")
    assert not old.exists(), "marks of jobs long gone are swept"
