"""The user's download cache on a node (node_storage/downloads/<sha256>): pinned --input files
kept by their digest, so that the next job on the node needs no server. Bounded by the site
(policy.inputs.cache_max): the least recently used files go first, never one a job is reading
(a shared lock while it copies) or one a running job holds (its input directory has a hard link
to it: more than one link). Everything here is best effort: a job never fails over its cache.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Callable, List, Optional

SHA256_RE = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20
STALE = 3600.0
Log = Callable[[str], None]


def _regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _own_dir(cache: Path) -> bool:
    try:
        st = os.lstat(cache)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def take(cache: Optional[Path], sha256: str, target: Path) -> bool:
    """Copy the cached file of a pinned input to target, if it is there and still has its digest
    (read under a shared lock: the bound never removes it meanwhile); its use is noted (the order
    of eviction)."""
    if cache is None or not SHA256_RE.fullmatch(sha256) or not _own_dir(cache):
        return False
    try:
        fd = os.open(cache / sha256, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    h = hashlib.sha256()
    part = target.with_name(f".{target.name}.part")
    try:
        if not _regular(fd) or os.fstat(fd).st_uid != os.getuid():
            return False
        fcntl.flock(fd, fcntl.LOCK_SH)
        out_fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "rb", closefd=False) as src, os.fdopen(out_fd, "wb") as out:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            return False
        os.utime(fd)  # used now
        os.chmod(part, 0o400)
        os.replace(part, target)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        part.unlink(missing_ok=True)


def keep(cache: Optional[Path], sha256: str, path: Path, max_bytes: int, log: Log) -> None:
    """Keep a download by its digest, then bring the cache under max_bytes (0: keep nothing)."""
    if cache is None or max_bytes <= 0 or not SHA256_RE.fullmatch(sha256):
        return
    try:
        if os.stat(path).st_size > max_bytes:
            return
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _own_dir(cache):
            return
        if not os.path.lexists(cache / sha256):
            # a name nobody can guess (the directory is the user's alone, but jobs share it)
            tmp = cache / f".{sha256}.{secrets.token_hex(8)}"
            if os.stat(path).st_dev == os.stat(cache).st_dev:
                os.link(path, tmp)
            else:
                shutil.copyfile(path, tmp, follow_symlinks=False)
                os.chmod(tmp, 0o400)
            os.replace(tmp, cache / sha256)
        for name in bound(cache, max_bytes, keep=sha256):
            log(f"removed {name[:16]}... from the download cache on this node (policy.inputs.cache_max)")
    except OSError:
        pass


def bound(cache: Path, max_bytes: int, keep: str = "") -> List[str]:
    """Remove the least recently used files until the cache holds at most max_bytes; never keep,
    a file being read (locked) or one a running job's input directory links to. The names removed."""
    entries = []
    total = 0
    for entry in os.scandir(cache):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        total += st.st_size
        # a temporary name a killed job left (one being written is younger than STALE)
        stale = entry.name.startswith(".") and time.time() - st.st_mtime > STALE
        if SHA256_RE.fullmatch(entry.name) or stale:
            entries.append((st.st_mtime_ns, entry.name))
    removed: List[str] = []
    for _when, name in sorted(entries):
        if total <= max_bytes:
            break
        if name == keep:
            continue
        freed = _remove_unused(cache, name)
        if freed is not None:
            total -= freed
            removed.append(name)
    return removed


def _remove_unused(cache: Path, name: str) -> Optional[int]:
    """Remove cache/name unless a job uses it; the bytes freed, or None."""
    try:
        fd = os.open(cache / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            return None  # a running job's input is this very file (hard-linked)
        # the name still names what was locked (another job may have replaced it meanwhile)
        if os.stat(cache / name, follow_symlinks=False).st_ino != st.st_ino:
            return None
        os.unlink(cache / name)
        return st.st_size
    except OSError:
        return None
    finally:
        os.close(fd)
