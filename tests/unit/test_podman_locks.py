"""Podman's locks as files in its own tmp dir, never under a fixed name in /dev/shm that another
user could make first: a drop-in in the user's containers.conf.d, written before stardock's first
Podman command (engines/podman_locks.py). That Podman 4.3 merges it with the user's other settings
and then runs with a squatted /dev/shm name is shown on the real cluster
(tests/integration/test_attacks_squat.py)."""
from __future__ import annotations

import pytest

from stardock_hpc import proc
from stardock_hpc.engines import podman as podman_engine
from stardock_hpc.engines import podman_locks


def test_the_drop_in_goes_where_podman_reads_the_users_drop_ins(tmp_path):
    env = {"HOME": str(tmp_path / "home")}
    assert podman_locks.ensure(env) is None
    path = tmp_path / "home" / ".config" / "containers" / "containers.conf.d" / podman_locks.DROP_IN
    assert path.read_text() == podman_locks.TEXT and 'lock_type = "file"' in path.read_text()
    assert podman_locks.in_place(env)
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    assert podman_locks.ensure(env) is None
    assert (tmp_path / "config" / "containers" / "containers.conf.d" / podman_locks.DROP_IN).is_file()


def test_a_changed_drop_in_is_written_again_and_nothing_else_is_touched(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    conf = tmp_path / "containers" / "containers.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('[engine]\nruntime = "runc"\n')
    drop_in = podman_locks.drop_in_path(env)
    assert drop_in is not None
    drop_in.parent.mkdir()
    drop_in.write_text('[engine]\nlock_type = "shm"\n')
    assert not podman_locks.in_place(env) and podman_locks.ensure(env) is None
    assert drop_in.read_text() == podman_locks.TEXT and conf.read_text() == '[engine]\nruntime = "runc"\n'


def test_with_containers_conf_podman_reads_no_drop_in_and_says_so(tmp_path):
    env = {"HOME": str(tmp_path), "CONTAINERS_CONF": "/etc/mine.conf"}
    assert "CONTAINERS_CONF" in (podman_locks.ensure(env) or "")
    assert not (tmp_path / ".config").exists()


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(podman_locks, "_ensured", False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    return tmp_path / ".config" / "containers" / "containers.conf.d" / podman_locks.DROP_IN


def test_podmans_commands_run_only_after_the_drop_in_is_there(fresh, monkeypatch):
    seen = []

    def fake_run(argv, **_kw):
        seen.append((argv[0], fresh.is_file()))
        return proc.Result(tuple(argv), 1, "", "no such image")

    monkeypatch.setattr(proc, "run", fake_run)
    assert podman_engine.PodmanEngine()._image_id("x") is None
    assert seen == [("podman", True)]


def test_building_podmans_argv_writes_nothing(fresh):
    """run_argv stays pure (tested without binaries): the argv's head comes from podman()."""
    assert podman_engine.podman("/ns")[:2] == ["podman", "--root"] and podman_engine.podman() == ["podman"]
    assert not fresh.exists()
