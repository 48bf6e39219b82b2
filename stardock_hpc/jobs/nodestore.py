"""The user's engine state on a compute node: node-local (site key node_storage), never the home.

A job's wrapper points the engines there before it runs any: Podman with --root and --runroot
under node storage ($STARDOCK_NODE_STORAGE, read by engines/podman.py; the container database
goes with them, so nodes no longer share one in an NFS home; rootless Podman would prefer the
user's own storage.conf to $CONTAINERS_STORAGE_CONF), Apptainer through $APPTAINER_CACHEDIR and
$APPTAINER_CONFIGDIR. Images the cache holds as a squashfs are mounted,
never stored; images without one are loaded into the node's store, which is kept under the site's
bound (node_storage_max): the least recently used images no container uses go first.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Dict, List, MutableMapping

from stardock_hpc import proc
from stardock_hpc.engines.podman import NODE_STORAGE, podman
from stardock_hpc.jobs.userdirs import private_dir
from stardock_hpc.slurm.values import size_bytes

USED = "used.json"


def setup(template: str, user: str, uid: int, environ: MutableMapping[str, str]) -> Path:
    """Make the user's node storage (0700, nobody else's) and point the engines at it in environ."""
    root = private_dir(template, user, uid, "node storage (site config: node_storage)")
    for sub in ("podman", "apptainer", "apptainer/cache", "xdg-data"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    environ.update({NODE_STORAGE: str(root), "APPTAINER_CACHEDIR": str(root / "apptainer" / "cache"),
                    "APPTAINER_CONFIGDIR": str(root / "apptainer"), "XDG_DATA_HOME": str(root / "xdg-data")})
    return root


def used(root: Path, tag: str) -> None:
    """Note that tag was used now (the order of eviction)."""
    with _locked(root) as marks:
        marks[tag] = time.time()


def bound(root: Path, max_size: str, keep: str) -> List[str]:
    """Remove the least recently used images of the node's Podman store, but keep and any image a
    container uses, until the store is under max_size; the tags removed."""
    limit = size_bytes(max_size)
    removed: List[str] = []
    with _locked(root) as marks:
        for tag, _when in sorted(marks.items(), key=lambda kv: kv[1]):
            if _size(root / "podman") <= limit:
                break
            if tag == keep:
                continue
            out = proc.run([*podman(), "rmi", tag], check=False, timeout=300)  # refused while a container uses it
            if out.ok or "image not known" in out.stderr:
                del marks[tag]
                removed.append(tag)
    return removed


class _locked:
    """The node's record of when each image was last used, read and written under a lock."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> Dict[str, float]:
        self.fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            data = json.loads((self.root / USED).read_text())
            self.marks = {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError, TypeError):
            self.marks = {}
        return self.marks

    def __exit__(self, *exc) -> None:
        try:
            tmp = self.root / f".{USED}.{os.getpid()}"
            tmp.write_text(json.dumps(self.marks))
            os.replace(tmp, self.root / USED)
        finally:
            os.close(self.fd)


def _size(_path: Path) -> int:
    """The images in the node's Podman store, counted as Podman does (shared layers more than
    once: on the safe side)."""
    out = proc.run([*podman(), "images", "--format", "json"], check=False, timeout=120)
    try:
        return sum(int(i.get("Size", 0)) for i in json.loads(out.stdout or "[]")) if out.ok else 0
    except (ValueError, TypeError, AttributeError):
        return 0
