"""The download cache of --input on a node (jobs/downloads.py): bounded by policy.inputs.cache_max,
least recently used first, never a file a job is reading or a running job holds."""
from __future__ import annotations

import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import List

from stardock_hpc.jobs import downloads


def put(cache: Path, data: bytes, age: float) -> str:
    """A cached file as a job leaves it, last used age seconds ago."""
    sha = hashlib.sha256(data).hexdigest()
    path = cache / sha
    path.write_bytes(data)
    path.chmod(0o400)
    when = time.time() - age
    os.utime(path, (when, when))
    return sha


def test_the_cache_stays_under_its_bound_least_recently_used_first(tmp_path):
    cache = tmp_path / "downloads"
    cache.mkdir(mode=0o700)
    old, mid, new = (put(cache, bytes([i]) * 1000, age) for i, age in ((1, 300), (2, 200), (3, 100)))
    assert downloads.bound(cache, 2000) == [old]
    assert sorted(os.listdir(cache)) == sorted([mid, new])
    assert downloads.bound(cache, 2000) == []  # under the bound: nothing more


def test_a_file_in_use_is_never_removed(tmp_path):
    cache = tmp_path / "downloads"
    cache.mkdir(mode=0o700)
    reading, held, free, kept = (put(cache, bytes([i]) * 1000, 400 - i) for i in range(4))
    job_input = tmp_path / "job-input"
    os.link(cache / held, job_input)  # a running job's input directory links to it
    fd = os.open(cache / reading, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a job copying it out (downloads.take)
    try:
        assert downloads.bound(cache, 0, keep=kept) == [free]
    finally:
        os.close(fd)
    assert sorted(os.listdir(cache)) == sorted([reading, held, kept])
    os.unlink(job_input)  # that job ended: its file is just another cached one now
    assert sorted(downloads.bound(cache, 0, keep=kept)) == sorted([reading, held])


def test_a_use_makes_a_file_recent_and_a_new_download_brings_the_cache_under_its_bound(tmp_path):
    cache = tmp_path / "downloads"
    cache.mkdir(mode=0o700)
    first, second = put(cache, b"a" * 1000, 300), put(cache, b"b" * 1000, 200)
    target = tmp_path / "in" / "a"
    target.parent.mkdir()
    assert downloads.take(cache, first, target) and target.read_bytes() == b"a" * 1000
    new = tmp_path / "new"
    new.write_bytes(b"c" * 1000)
    logs: List[str] = []
    sha = hashlib.sha256(b"c" * 1000).hexdigest()
    downloads.keep(cache, sha, new, 2500, logs.append)
    # the one used least recently went, not the oldest download
    assert sorted(os.listdir(cache)) == sorted([first, sha]) and second[:16] in logs[0]
    downloads.keep(cache, hashlib.sha256(b"big").hexdigest(), _file(tmp_path / "big", b"x" * 3000), 2500,
                   logs.append)
    assert sorted(os.listdir(cache)) == sorted([first, sha])  # larger than the bound: never kept
    downloads.keep(cache, hashlib.sha256(b"z").hexdigest(), _file(tmp_path / "z", b"z"), 0, logs.append)
    assert len(os.listdir(cache)) == 2  # cache_max 0: nothing kept


def test_a_temporary_file_a_killed_job_left_goes_too(tmp_path):
    cache = tmp_path / "downloads"
    cache.mkdir(mode=0o700)
    stale = cache / f".{'0' * 64}.deadbeefdeadbeef"
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = cache / f".{'1' * 64}.0123456789abcdef"
    fresh.write_bytes(b"y" * 1000)  # another job writing it now
    assert downloads.bound(cache, 1000) == [stale.name]
    assert fresh.exists()


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
