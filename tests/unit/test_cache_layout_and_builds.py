"""The cache's layout belongs to its owner; build locks are per user and bounded; a stopped or
timed-out build stops its whole process tree (issue 9)."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

from stardock_hpc import proc, proctree
from stardock_hpc.cache import SUBDIRS, Cache, CacheError

KEY = "c" * 64


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "cache"
    path.mkdir()
    path.chmod(0o1777)
    return path


def test_the_owner_sets_the_layout_up_sticky_and_others_are_told_who_must(root):
    other = Cache(root, uid=os.getuid() + 1)
    with pytest.raises(CacheError) as err:
        other.ensure_layout()
    assert "stardock images init" in str(err.value) and not list(root.iterdir())
    Cache(root).ensure_layout()
    for name in SUBDIRS:
        st = (root / name).lstat()
        assert st.st_uid == os.getuid() and (st.st_mode & 0o7777) == 0o1777
    assert Cache(root).layout_report()[0][0] == "ok"


def test_a_layout_dir_that_is_a_link_or_open_to_all_without_the_sticky_bit_is_refused(root, tmp_path):
    Cache(root).ensure_layout()
    os.rmdir(root / "entries")
    (root / "entries").symlink_to(tmp_path)
    with pytest.raises(CacheError, match="symbolic link"):
        Cache(root).entries()
    assert Cache(root).layout_report()[0][0] == "fail"
    os.unlink(root / "entries")
    (root / "entries").mkdir()
    (root / "entries").chmod(0o777)
    with pytest.raises(CacheError, match="sticky"):
        Cache(root).ensure_layout()


def test_init_repairs_modes_and_refuses_links_before_changing_anything(root, tmp_path):
    (root / "entries").mkdir()
    (root / "entries").chmod(0o700)
    (root / "tmp").symlink_to(tmp_path)
    with pytest.raises(CacheError, match="nothing was changed"):
        Cache(root).init()
    assert ((root / "entries").stat().st_mode & 0o7777) == 0o700 and not (root / "locks").exists()
    os.unlink(root / "tmp")
    done = Cache(root).init()
    assert any("set the mode" in line for line in done)
    assert Cache(root).init() == [f"{root}: the layout is in order"]


def test_build_locks_are_per_user_and_a_wait_is_said_and_bounded(root):
    cache = Cache(root)
    cache.ensure_layout()
    assert cache.lock_path(KEY).name == f"{KEY}.u{os.getuid()}.lock"
    said = []
    with cache.lock(KEY) as held:
        assert held and (cache.lock_path(KEY).stat().st_mode & 0o777) == 0o600
        t0 = time.monotonic()
        with pytest.raises(CacheError, match="gave up waiting"):
            with cache.lock(KEY, timeout=0.5, say=said.append, timeout_text="policy.build_timeout (0:01)"):
                pass
        assert time.monotonic() - t0 < 5 and "waiting" in said[0]


def test_a_planted_lock_is_not_followed_and_does_not_block(root, tmp_path):
    cache = Cache(root)
    cache.ensure_layout()
    precious = tmp_path / "precious"
    precious.write_text("x")
    precious.chmod(0o600)
    cache.lock_path(KEY).symlink_to(precious)
    holder = os.open(precious, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    said = []
    try:
        with cache.lock(KEY, timeout=0.5, say=said.append) as held:
            assert held is False and "not a lock file of yours" in said[0]
    finally:
        os.close(holder)
    assert (precious.stat().st_mode & 0o777) == 0o600


def test_sweep_removes_only_our_unlocked_leftovers(root, tmp_path):
    cache = Cache(root)
    cache.ensure_layout()
    with cache.staging(KEY) as live:
        dead = root / "tmp" / f"{KEY}-u{os.getuid()}.dead"
        dead.mkdir()
        (dead / "f").write_text("")
        (root / "tmp" / f"{KEY}-u{os.getuid()}.link").symlink_to(tmp_path)
        (root / "tmp" / f"{KEY}-u{os.getuid() + 1}.other").mkdir()
        assert cache.sweep_stale(KEY) == 1
        assert live.exists() and not dead.exists() and tmp_path.exists()
        assert (root / "tmp" / f"{KEY}-u{os.getuid() + 1}.other").exists()
    assert not live.exists()


def test_a_streamed_run_times_out_even_when_silent():
    t0 = time.monotonic()
    with pytest.raises(proc.TimedOut):
        proc.run(["sh", "-c", "sleep 30"], on_line=lambda _line: None, timeout=0.5)
    assert time.monotonic() - t0 < 10


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_failed_stoppable_block_stops_processes_in_other_sessions():
    script = "setsid sh -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo $!'"   # detached, like a RUN step
    with pytest.raises(RuntimeError):
        with proctree.stoppable():
            out = subprocess.run(["sh", "-c", script], stdout=subprocess.PIPE, text=True, timeout=10)
            pid = int(out.stdout.split()[0])
            assert _alive(pid)
            raise RuntimeError("the build failed")
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_sigterm_in_a_stoppable_block_raises_interrupted():
    with pytest.raises(proctree.Interrupted) as err:
        with proctree.stoppable():
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before the next line
            pytest.fail("the signal did not interrupt the block")
    assert err.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler) or \
        callable(signal.getsignal(signal.SIGTERM))
    assert sys.exc_info() == (None, None, None)
