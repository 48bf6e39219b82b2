"""`stardock site check` and `stardock doctor` name node-local names another user made first here,
with their owner and what stardock does about each (jobs/squats.py)."""
from __future__ import annotations

import dataclasses
import getpass
import os
from pathlib import Path

import pytest

from stardock_hpc.engines import podman_locks
from stardock_hpc.jobs import userdirs
from stardock_hpc.jobs.squats import squat_checks
from stardock_hpc.site import Site

ME, SQUATTER = os.getuid(), 4343
USER = getpass.getuser()


@pytest.fixture
def place(tmp_path, monkeypatch):
    for sub in ("tmp", "shm", "run"):
        (tmp_path / sub).mkdir(mode=0o1777)
        (tmp_path / sub).chmod(0o1777)
    monkeypatch.setattr(userdirs, "expand_path", lambda t, u: Path(t.replace("{uid}", str(ME))))
    return tmp_path


def checks(place: Path, environ=None) -> dict:
    site = dataclasses.replace(Site(), node_storage=f"{place}/tmp/stardock-{{uid}}", engine="podman")
    env = {"HOME": str(place / "home")} if environ is None else environ
    return {name: (status, text) for status, name, text in
            squat_checks(site, USER, ME, env, tmp=place / "tmp", shm=place / "shm", run_user=place / "run")}


def test_nothing_taken_is_all_well(place):
    found = checks(place)
    assert found["node storage name"][0] == "ok" and found["podman locks"][0] == "ok"
    assert "runtime directory name" not in found and "notebook's login end name" not in found


@pytest.mark.root  # plants another user's object (chown)
def test_each_name_another_user_made_first_is_named_with_its_owner(place):
    taken = {"node storage name": place / "tmp" / f"stardock-{ME}",
             "runtime directory name": place / "tmp" / f"stardock-runtime-{ME}",
             "notebook's login end name": place / "tmp" / f"stardock-{USER}"}
    for path in taken.values():
        if not path.exists():
            path.mkdir()
        os.lchown(path, SQUATTER, SQUATTER)
    lock = place / "shm" / f"libpod_rootless_lock_{ME}"
    lock.write_text("")
    os.lchown(lock, SQUATTER, SQUATTER)
    found = checks(place)
    for name, path in taken.items():
        status, text = found[name]
        assert status == "warn" and f"{path} is a directory of uid {SQUATTER}" in text and "beside it" in text
    status, text = found["podman locks"]
    assert status == "warn" and f"{lock} is a file of uid {SQUATTER}" in text and podman_locks.DROP_IN in text
    status, text = checks(place, {"HOME": "/nonexistent", "CONTAINERS_CONF": "/etc/x.conf"})["podman locks"]
    assert status == "fail" and "CONTAINERS_CONF" in text
