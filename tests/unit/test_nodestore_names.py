"""The user's node storage where another user made its name first, and Podman's tmp dir, which the
store's database fixed when the store was made (Podman 4.3 takes it over XDG_RUNTIME_DIR and
--tmpdir ever after): used only while it is the user's."""
from __future__ import annotations

import getpass
import os
import stat
from pathlib import Path

import pytest

from stardock_hpc.engines.podman import NODE_STORAGE
from stardock_hpc.jobs import nodestore, userdirs

ME, SQUATTER = os.getuid(), 4343
as_root = pytest.mark.root  # plants another user's object (chown)


def database(root: Path, *tmpdirs: str) -> Path:
    """The bytes Podman 4.3 writes in its bolt database's runtime-config bucket (key, then value,
    keys sorted), amid other pages."""
    db = root.joinpath(*nodestore.DATABASE)
    db.parent.mkdir(parents=True, exist_ok=True)
    body = b"".join(b"graph-driver-nameoverlaygraph-root/x/storageoslinuxrun-root/x/runstatic-dir/x/libpodtmp-dir"
                    + t.encode() + b"volume-path/x/volumes" for t in tmpdirs)
    db.write_bytes(b"\x00" * 4096 + body + b"\x00" * 64 + b'{"state":2}')
    return db


def test_the_tmp_dir_fixed_in_the_database_is_read(tmp_path):
    assert nodestore.pinned_tmpdir(database(tmp_path, "/run/user/1001/libpod/tmp")) == Path("/run/user/1001/libpod/tmp")
    assert nodestore.pinned_tmpdir(database(tmp_path, "/a/tmp", "/a/tmp")) == Path("/a/tmp")  # bolt's copies
    assert nodestore.pinned_tmpdir(database(tmp_path, "/a/tmp", "/b/tmp")) is None
    assert nodestore.pinned_tmpdir(tmp_path / "none.db") is None


def test_a_fixed_tmp_dir_of_the_users_is_kept_and_made_private(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    db = database(tmp_path / "ns", f"{runtime}/libpod/tmp")
    warned: list = []
    assert nodestore.podman_tmpdir(tmp_path / "ns", ME, warned.append) == runtime / "libpod" / "tmp"
    assert db.exists() and warned == []
    assert stat.S_IMODE((runtime / "libpod").stat().st_mode) == 0o700


@as_root
@pytest.mark.parametrize("kind", ["directory", "link"])
def test_a_fixed_tmp_dir_another_user_made_first_starts_the_database_afresh(tmp_path, kind):
    """/tmp/stardock-runtime-UID of the job that made the store, made first by someone else after a
    reboot: Podman would keep its locks, pause process pid and events there."""
    theirs, target = tmp_path / "stardock-runtime-x", tmp_path / "elsewhere"
    target.mkdir()
    if kind == "directory":
        theirs.mkdir(mode=0o777)
        theirs.chmod(0o777)
    else:
        theirs.symlink_to(target)
    os.lchown(theirs, SQUATTER, SQUATTER)
    root = tmp_path / "ns"
    db = database(root, f"{theirs}/libpod/tmp")
    (root / "podman" / "storage" / "overlay-images").mkdir()
    warned: list = []
    assert nodestore.podman_tmpdir(root, ME, warned.append) is None
    assert not db.exists() and (root / "podman" / "storage" / "overlay-images").is_dir(), "the images stay"
    assert len(warned) == 1 and str(theirs) in warned[0] and f"uid {SQUATTER}" in warned[0]
    assert list(target.iterdir()) == [] and (kind == "link" or list(theirs.iterdir()) == [])


@as_root
def test_node_storage_another_user_made_first_is_not_used(tmp_path, monkeypatch):
    name = tmp_path / "stardock-1001"
    name.mkdir(mode=0o777)
    name.chmod(0o777)
    os.lchown(name, SQUATTER, SQUATTER)
    monkeypatch.setattr(userdirs, "expand_path", lambda t, u: Path(t.replace("{uid}", "1001")))
    environ: dict = {}
    warned: list = []
    root = nodestore.setup(f"{tmp_path}/stardock-{{uid}}", getpass.getuser(), ME, environ, lambda: bytes(32),
                           warned.append)
    assert root.parent == tmp_path and root.name.startswith("stardock-1001-")
    assert environ[NODE_STORAGE] == str(root) and (root / "podman").is_dir()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and list(name.iterdir()) == []
    assert len(warned) == 1 and str(name) in warned[0]


def test_own_node_storage_with_a_mode_that_lets_others_in_is_made_private(tmp_path, monkeypatch):
    name = tmp_path / "stardock-me"
    name.mkdir()
    name.chmod(0o755)
    monkeypatch.setattr(userdirs, "expand_path", lambda t, u: Path(t.replace("{user}", "me")))
    root = nodestore.setup(f"{tmp_path}/stardock-{{user}}", getpass.getuser(), ME, {}, lambda: bytes(32))
    assert root == name and stat.S_IMODE(name.stat().st_mode) == 0o700
