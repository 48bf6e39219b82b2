"""The user's engine state on a compute node: node-local (site key node_storage), never the home.

A job's wrapper points the engines there before it runs any: Podman with --root and --runroot
under node storage ($STARDOCK_NODE_STORAGE, read by engines/podman.py; the container database
goes with them, so nodes no longer share one in an NFS home; rootless Podman would prefer the
user's own storage.conf to $CONTAINERS_STORAGE_CONF), Apptainer through $APPTAINER_CACHEDIR and
$APPTAINER_CONFIGDIR. Images the cache holds as a squashfs are mounted,
never stored; images without one are loaded into the node's store, which is kept under the site's
bound (node_storage_max): the least recently used images no container uses go first.

Node storage is a node-local name anybody can make first (/var/tmp/stardock-UID): taken by another
user, a private directory beside it is used instead (jobs/userdirs.py), never the taken one.
Podman fixes the directory of its lock files, pause-process pid and events (its "tmp dir") in the
store's database when the store is made, and Podman 4.3 takes the database's over XDG_RUNTIME_DIR
and --tmpdir ever after: podman_tmpdir() checks that it is still the user's before Podman runs.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import time
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, List, MutableMapping, Optional

from stardock_hpc import proc
from stardock_hpc.engines.podman import NODE_STORAGE, podman
from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.userdirs import own_or_beside, own_path, this_machine
from stardock_hpc.slurm.values import size_bytes

USED = "used.json"
WHAT = "node storage (site config: node_storage)"
DATABASE = ("podman", "storage", "libpod", "bolt_state.db")
# Podman 4.3's database (bolt) keeps its runtime-config bucket's keys sorted, each value right after
# its key: "tmp-dir" is followed by "volume-path"
PINNED_TMP = re.compile(rb"tmp-dir(/[^\x00-\x1f]{0,4000}?)volume-path")
MAX_DB_READ = 256 << 20


def setup(template: str, user: str, uid: int, environ: MutableMapping[str, str],
          key: Optional[Callable[[], bytes]] = None, warn: Callable[[str], None] = lambda _msg: None) -> Path:
    """Make the user's node storage (0700, nobody else's; beside the site's name where another user
    took that, when key gives the user's names key) and point the engines at it in environ."""
    if key is None:
        from stardock_hpc.jobs.userdirs import private_dir
        root = private_dir(template, user, uid, WHAT)
    else:
        root = own_or_beside(template, user, uid, WHAT, key, this_machine(), warn)
    os.chmod(root, 0o700)  # the user's own (checked): a mode that lets others in is fixed, not refused
    for sub in ("podman", "apptainer", "apptainer/cache", "xdg-data"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    environ.update({NODE_STORAGE: str(root), "APPTAINER_CACHEDIR": str(root / "apptainer" / "cache"),
                    "APPTAINER_CONFIGDIR": str(root / "apptainer"), "XDG_DATA_HOME": str(root / "xdg-data")})
    return root


def pinned_tmpdir(database: Path) -> Optional[PurePosixPath]:
    """The tmp dir Podman fixed in this store's database when it made it; None without a database,
    or where it cannot be read (another database format: Podman decides alone)."""
    try:
        fd = os.open(database, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_DB_READ)
    found = {PurePosixPath(os.fsdecode(m)) for m in PINNED_TMP.findall(data)}
    if len(found) != 1:
        return None
    pinned = found.pop()
    return pinned if pinned.is_absolute() and ".." not in pinned.parts else None


def podman_tmpdir(root: Path, uid: int, warn: Callable[[str], None]) -> Optional[Path]:
    """The directory the node storage's Podman store keeps its lock files, pause-process pid and
    events in, checked to be the user's (missing parts made 0700) before Podman uses it.

    The store's database fixed it when the store was made: the runtime directory of that job
    (/tmp/stardock-runtime-UID where /run/user/UID is missing). After a reboot another user may
    make that name first, and Podman would use their directory. Then the database is started
    afresh (under the node storage's lock; the images stay, they are not in it), and the next
    Podman command fixes this job's runtime directory in its new database. None: no database yet
    (or one read no more)."""
    database = root.joinpath(*DATABASE)
    pinned = pinned_tmpdir(database)
    if pinned is None:
        return None
    try:
        return own_path(pinned, uid, "Podman's directory of lock files, fixed in the node storage's database")
    except UsageError as exc:
        with _locked(root):
            if pinned_tmpdir(database) == pinned:
                database.unlink()
        warn(f"{exc.message}; Podman's list of containers on this node is started afresh (the images stay)")
        return None


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
