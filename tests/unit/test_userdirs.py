"""The user's outputs and records directories: private where made, refused where another user
could read or redirect them (the uid argument stands for the user; other owners are simulated
with a uid that owns nothing)."""
from __future__ import annotations

import getpass
import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest

import stardock_hpc.jobs.userdirs as userdirs
from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.userdirs import private_dir

ME, NOBODY = os.getuid(), 4242424


@pytest.fixture
def mine(monkeypatch):
    """/tmp/{user}: /tmp is root's, world-writable and sticky (like /lustre/scratch); {user}
    stands for a fresh name, so every directory above it is root's whoever runs the tests."""
    name = f"stardock-userdirs-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(userdirs, "expand_path", lambda t, u: Path(t.replace("{user}", name)))
    yield Path("/tmp") / name
    if (Path("/tmp") / name).is_symlink():
        (Path("/tmp") / name).unlink()
    shutil.rmtree(Path("/tmp") / name, ignore_errors=True)


def test_missing_directories_are_made_private(mine):
    path = private_dir("/tmp/{user}/stardock-outputs", getpass.getuser(), ME, "outputs")
    assert path == mine / "stardock-outputs"
    for p in (path, path.parent):
        st = p.lstat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == ME


def test_an_existing_directory_of_the_user_is_used_as_it_is(mine):
    mine.mkdir(mode=0o750)
    assert private_dir("/tmp/{user}", getpass.getuser(), ME, "outputs") == mine
    assert stat.S_IMODE(mine.stat().st_mode) == 0o750


def test_a_user_directory_made_by_somebody_else_is_refused(mine):
    mine.mkdir()  # made by "another user": the owner is not NOBODY
    with pytest.raises(UsageError, match=rf"{mine.name} \(outputs\) belongs to .*not to you"):
        private_dir("/tmp/{user}/out", getpass.getuser(), NOBODY, "outputs")


def test_a_link_planted_by_somebody_else_is_never_followed(mine, tmp_path):
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    mine.symlink_to(elsewhere)
    if ME == 0:
        os.lchown(mine, 4343, 4343)  # root's own links are trusted: plant another user's
    with pytest.raises(UsageError, match="is a symbolic link made by"):
        private_dir("/tmp/{user}/out", getpass.getuser(), NOBODY, "outputs")
    assert not (elsewhere / "out").exists()


def test_a_link_of_the_users_own_is_followed_and_judged_where_it_leads(mine, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    mine.symlink_to(real)
    assert private_dir("/tmp/{user}/out", getpass.getuser(), ME, "outputs") == real / "out"


def test_a_directory_others_may_rename_entries_of_is_refused(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # no sticky bit: anybody could swap what we make in it
    with pytest.raises(UsageError, match="can be changed by other users"):
        private_dir(f"{open_dir}/{{user}}", getpass.getuser(), ME, "records")


def test_the_final_directory_must_be_the_users_even_without_a_placeholder():
    with pytest.raises(UsageError, match="belongs to .*not to you"):
        private_dir("/tmp", getpass.getuser(), NOBODY, "outputs")


def test_home_placeholder_makes_only_the_home_and_below_personal(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(userdirs, "expand_path", lambda t, u: Path(t.replace("{home}", str(home))))
    path = private_dir("{home}/.local/share/stardock/jobs", getpass.getuser(), ME, "records")
    assert path == home / ".local/share/stardock/jobs" and stat.S_IMODE(path.stat().st_mode) == 0o700
