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


# --- names another user made first: never used, a private directory beside them instead ----------

SQUATTER = 4343
KEY = bytes(range(32))
as_root = pytest.mark.root  # plants another user's object (chown)


def plant(path: Path, kind: str, target: Path) -> None:
    """What another user (SQUATTER) makes at the user's name first."""
    if kind == "directory":
        path.mkdir()
        path.chmod(0o777)  # they let anybody write: what lands there is theirs to read
    elif kind == "link":
        path.symlink_to(target)
    else:
        path.write_text("theirs\n")
    os.lchown(path, SQUATTER, SQUATTER)


def untouched(path: Path, kind: str, target: Path) -> None:
    st = os.lstat(path)
    assert st.st_uid == SQUATTER
    if kind == "directory":
        assert list(path.iterdir()) == []
    elif kind == "link":
        assert os.readlink(path) == str(target) and list(target.iterdir()) == []
    else:
        assert path.read_text() == "theirs\n"


def beside_it(mine: Path, scope: str = "node1", warned=None, key: bytes = KEY) -> Path:
    return userdirs.own_or_beside("/tmp/{user}", getpass.getuser(), ME, "node storage", lambda: key, scope,
                                  (warned if warned is not None else []).append)


@pytest.fixture
def cleanup_beside(mine):
    yield
    if mine.is_file():
        mine.unlink()
    for p in mine.parent.glob(f"{mine.name}-*"):
        shutil.rmtree(p, ignore_errors=True)


@as_root
@pytest.mark.parametrize("kind", ["directory", "link", "file"])
def test_a_name_another_user_made_first_is_not_used_a_private_directory_beside_it_is(mine, tmp_path, kind,
                                                                                      cleanup_beside):
    target = tmp_path / "victims-home"
    target.mkdir()
    plant(mine, kind, target)
    warned: list = []
    path = beside_it(mine, warned=warned)
    assert path.parent == mine.parent and path.name.startswith(f"{mine.name}-")
    assert len(path.name) == len(mine.name) + 1 + userdirs.TAG_CHARS
    st = os.lstat(path)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == ME and stat.S_IMODE(st.st_mode) == 0o700
    assert len(warned) == 1 and str(mine) in warned[0] and f"uid {SQUATTER}" in warned[0] and str(path) in warned[0]
    (path / "state").write_text("the user's\n")
    assert beside_it(mine) == path, "every task of the user's jobs here finds the same one again"
    untouched(mine, kind, target)


@as_root
def test_the_name_beside_depends_on_the_machine_and_the_users_key(mine, tmp_path, cleanup_beside):
    plant(mine, "directory", tmp_path)
    names = {beside_it(mine, "node1"), beside_it(mine, "node2"), beside_it(mine, "node1", key=bytes(32))}
    assert len(names) == 3


@as_root
def test_a_name_beside_seen_lost_and_taken_in_turn_is_skipped(mine, tmp_path, cleanup_beside):
    plant(mine, "directory", tmp_path)
    first = beside_it(mine)
    first.rmdir()  # gone (a cleaner of old files), after others saw it on command lines
    plant(first, "directory", tmp_path)
    second = beside_it(mine)
    assert second != first and second.parent == mine.parent and os.lstat(second).st_uid == ME
    assert list(first.iterdir()) == []


def test_a_refusal_that_is_no_squat_is_not_worked_around(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # the site's directory, writable by all without the sticky bit: no place to be
    with pytest.raises(UsageError, match="can be changed by other users") as info:
        userdirs.own_or_beside(f"{open_dir}/{{user}}", getpass.getuser(), ME, "records", lambda: KEY, "n", print)
    assert not isinstance(info.value, userdirs.Taken) and [p.name for p in open_dir.iterdir()] == []


def test_the_names_key_is_made_once_private_and_kept(tmp_path):
    records = tmp_path / "records"
    records.mkdir(mode=0o700)
    key = userdirs.names_key(records)
    path = records / userdirs.KEY_FILE
    assert len(key) == userdirs.KEY_BYTES and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert userdirs.names_key(records) == key and sorted(p.name for p in records.iterdir()) == [userdirs.KEY_FILE]
    path.chmod(0o644)
    with pytest.raises(UsageError, match="not a private file of yours"):
        userdirs.names_key(records)


@as_root
def test_reports_name_what_another_user_holds(mine, tmp_path):
    assert userdirs.first_taken("/tmp/{user}/store", getpass.getuser(), ME) is None
    plant(mine, "link", tmp_path)
    held = userdirs.first_taken("/tmp/{user}/store", getpass.getuser(), ME)
    assert held == (mine, f"a symbolic link of uid {SQUATTER}")


@as_root
def test_a_notebooks_login_end_goes_beside_a_tmp_name_another_user_made_first(mine, tmp_path, monkeypatch):
    """Without a private $XDG_RUNTIME_DIR the login end listens in /tmp/stardock-USER; made first by
    another user, `stardock notebook` (and `connect`, later) take the same private one beside it."""
    from stardock_hpc.jobs import notebook_login

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    theirs = mine.parent / f"stardock-{mine.name}"  # /tmp/stardock-{user}
    plant(theirs, "directory", tmp_path)
    records = tmp_path / "records"
    records.mkdir(mode=0o700)
    warned: list = []
    try:
        where = notebook_login.runtime_dir(records, warned.append)
        assert where.parent == theirs.parent and where.name.startswith(f"{theirs.name}-")
        assert os.lstat(where).st_uid == ME and stat.S_IMODE(os.lstat(where).st_mode) == 0o700
        assert notebook_login.runtime_dir(records) == where and len(warned) == 1 and str(theirs) in warned[0]
        with pytest.raises(userdirs.Taken):
            notebook_login.runtime_dir()
        untouched(theirs, "directory", tmp_path)
    finally:
        for p in theirs.parent.glob(f"{theirs.name}*"):
            shutil.rmtree(p, ignore_errors=True)
