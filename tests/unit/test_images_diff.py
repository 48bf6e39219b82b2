"""`stardock images diff` (issue 16) between entries made before locks existed: their versions
come from meta.json, which its builder wrote; what reaches the terminal is escaped."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from stardock_hpc.cache import Cache

REPO = Path(__file__).resolve().parents[2]


def entry(cache: Cache, key: str, versions: dict) -> None:
    path = cache.dir("entries") / f"{key}-u{os.getuid()}"
    path.mkdir()
    data = b"not really an OCI archive"
    (path / "image.oci.tar").write_bytes(data)
    meta = {"key": key, "engine": "podman", "name": "old", "artifact": "image.oci.tar", "created": 1.0,
            "size": len(data), "artifact_sha256": hashlib.sha256(data).hexdigest(), "versions": versions,
            "image_tag": f"localhost/stardock/old:{key[:16]}"}
    (path / "meta.json").write_text(json.dumps(meta))


def test_diff_of_entries_without_locks_uses_their_versions_and_escapes_them(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    cache = Cache(root)
    cache.ensure_layout()
    entry(cache, "a" * 64, {"apt": {"jq": "1.6", "evil\x1b]0;owned\x07": "1"}, "pip": {"six": "1.16.0"}})
    entry(cache, "b" * 64, {"apt": {"jq": "1.7"}, "pip": {"six": "1.16.0"}})
    site = tmp_path / "site.yaml"
    site.write_text(f"cache: {root}\noutputs: {tmp_path}/out\nrecords: {tmp_path}/records\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "STARDOCK_SITE_CONFIG": str(site)}
    out = subprocess.run([sys.executable, "-m", "stardock_hpc", "images", "diff", "aaaa", "bbbb"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "apt evil\\x1b]0;owned\\x07: 1 (image aaaaaaaaaaaa), - (image bbbbbbbbbbbb)",
        "apt jq: 1.6 (image aaaaaaaaaaaa), 1.7 (image bbbbbbbbbbbb)"]
    missing = subprocess.run([sys.executable, "-m", "stardock_hpc", "images", "diff", "aaaa", "12345"],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr


def test_an_entrys_lock_is_read_only_as_its_builder_recorded_it(tmp_path):
    """The attacker's steps on an entry: its stardock.lock replaced by a link to another file,
    then by other text; neither is read as the lock (the digest in meta.json decides)."""
    import pytest

    from stardock_hpc.cache import ENTRY_LOCK, CacheError

    root = tmp_path / "cache"
    root.mkdir()
    cache = Cache(root)
    cache.ensure_layout()
    key = "c" * 64
    entry(cache, key, {})
    path = cache.dir("entries") / f"{key}-u{os.getuid()}"
    text = '{"format": "stardock-lock/1"}\n'
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "lock_sha256": hashlib.sha256(text.encode()).hexdigest()}))
    (path / ENTRY_LOCK).write_text(text)
    assert cache.read_lock(cache.lookup(key)) == text
    elsewhere = tmp_path / "planted"
    elsewhere.write_text(text)
    (path / ENTRY_LOCK).unlink()
    (path / ENTRY_LOCK).symlink_to(elsewhere)
    with pytest.raises(CacheError, match="stardock.lock"):
        cache.read_lock(cache.lookup(key))
    (path / ENTRY_LOCK).unlink()
    (path / ENTRY_LOCK).write_text(text.replace("1", "2"))
    with pytest.raises(CacheError, match="no longer matches the recorded digest"):
        cache.read_lock(cache.lookup(key))
