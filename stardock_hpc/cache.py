"""The shared, content-addressed image cache.

Layout under the site's cache directory (each subdirectory 1777, like /tmp: anybody may add,
nobody may remove or replace what another user made):

    entries/<key>-u<uid>/   a published entry: meta.json, the artifact, the definition, the spec;
                            read-only once published; the directory's real owner is the builder
    tmp/                    builds in progress (published by an atomic rename into entries/)
    locks/<key>.lock        one flock per key: concurrent builds of a key build once
    used/<entry>.u<uid>     touched whenever a user uses an entry (for pruning)
    inuse/<entry>/<jobid>   jobs that will run an entry (pruning keeps those entries)

Trust: the key is computable by anyone, so an entry is used only when its directory belongs to
the user, to root, or to a builder the site trusts, and only while its artifact still matches
the digest recorded when it was published.
"""
from __future__ import annotations

import errno
import fcntl
import grp
import json
import os
import pwd
import re
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from stardock_hpc.cachekey import file_digest
from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.site import Trust

SUBDIRS = ("entries", "tmp", "locks", "used", "inuse")
META = "meta.json"


class CacheError(StardockError):
    pass


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    owner: int
    meta: Dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def engine(self) -> str:
        return self.meta["engine"]

    @property
    def artifact(self) -> Path:
        return self.path / self.meta["artifact"]

    @property
    def owner_name(self) -> str:
        try:
            return pwd.getpwuid(self.owner).pw_name
        except KeyError:
            return str(self.owner)


def _stat_token(path: Path) -> List[int]:
    """What changes whenever the file's content can have changed. ctime cannot be set back by
    a user, so a matching token spares re-hashing a large artifact on every use."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class Cache:
    def __init__(self, root: Path, trust: Optional[Trust] = None, uid: Optional[int] = None) -> None:
        self.root = root
        self.trust = trust or Trust()
        self.uid = os.getuid() if uid is None else uid

    # --- layout -------------------------------------------------------------------------------
    def dir(self, name: str) -> Path:
        return self.root / name

    def ensure_layout(self) -> None:
        if not self.root.is_dir():
            raise UsageError(f"the image cache {self.root} does not exist",
                             hint="the site's admins create it (see `stardock site check`)")
        for name in SUBDIRS:
            path = self.dir(name)
            try:
                path.mkdir(mode=0o1777)
                os.chmod(path, 0o1777)  # mkdir's mode is cut by the umask
            except FileExistsError:
                pass
            except PermissionError:
                raise CacheError(f"cannot create {path}: permission denied",
                                 hint="ask the site's admins to make the cache writable") from None

    # --- trust --------------------------------------------------------------------------------
    def trusted(self, owner: int) -> bool:
        if owner in (self.uid, 0):
            return True
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            return False
        if name in self.trust.users:
            return True
        for group in self.trust.groups:
            try:
                g = grp.getgrnam(group)
            except KeyError:
                continue
            if name in g.gr_mem or pwd.getpwuid(owner).pw_gid == g.gr_gid:
                return True
        return False

    # --- reading ------------------------------------------------------------------------------
    def entry_at(self, path: Path) -> Optional[Entry]:
        """The entry in directory path, as recorded (trust and digest are checked separately)."""
        try:
            owner = path.stat().st_uid
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError):
            return None
        return Entry(meta.get("key", path.name.rsplit("-u", 1)[0]), path, owner, meta)

    def entries(self) -> List[Entry]:
        found = []
        root = self.dir("entries")
        if root.is_dir():
            for path in sorted(root.iterdir()):
                entry = self.entry_at(path)
                if entry is not None:
                    found.append(entry)
        return found

    def candidates(self, key: str) -> List[Entry]:
        """Entries for key, the user's own first, then other trusted builders'."""
        root = self.dir("entries")
        out = []
        for path in sorted(root.glob(f"{key}-u*")) if root.is_dir() else []:
            entry = self.entry_at(path)
            # the name claims a builder; the directory's real owner is what counts
            if entry and entry.key == key and re.fullmatch(rf"{key}-u{entry.owner}(?:\.[0-9]+)?", path.name) \
                    and self.trusted(entry.owner):
                out.append(entry)
        return sorted(out, key=lambda e: e.owner != self.uid)

    def verify(self, entry: Entry) -> bool:
        try:
            if _stat_token(entry.artifact) == entry.meta.get("artifact_stat"):
                return True
            return file_digest(entry.artifact) == entry.meta.get("artifact_sha256")
        except OSError:
            return False

    def lookup(self, key: str) -> Optional[Entry]:
        for entry in self.candidates(key):
            if self.verify(entry):
                return entry
        return None

    def find(self, key_prefix: str) -> Entry:
        """An entry by (a prefix of) its key, as `stardock images inspect` takes it."""
        matches = [e for e in self.entries() if e.name.startswith(key_prefix) or e.key.startswith(key_prefix)]
        trusted = [e for e in matches if self.trusted(e.owner)]
        keys = {e.key for e in matches}
        if len(keys) > 1:
            raise UsageError(f"{key_prefix!r} matches {len(keys)} images; give more of the key")
        if not matches:
            raise UsageError(f"no image in {self.root} has a key starting with {key_prefix!r}",
                             hint="`stardock images` lists them")
        return sorted(trusted or matches, key=lambda e: e.owner != self.uid)[0]

    # --- writing ------------------------------------------------------------------------------
    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive per key; released by the kernel even if the process is killed."""
        path = self.dir("locks") / f"{key}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            fd = os.open(path, os.O_RDONLY)  # another user's lock file: flock works read-only
        try:
            os.fchmod(fd, 0o666)
        except PermissionError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A private directory to build in; removed unless published."""
        self.ensure_layout()
        self.sweep_stale(key)
        path = Path(tempfile.mkdtemp(prefix=f"{key}-u{self.uid}.", dir=self.dir("tmp")))
        try:
            yield path
        finally:
            if path.exists():
                remove_tree(path)

    def sweep_stale(self, key: str) -> None:
        """Builds of this key killed before they could clean up (we hold the key's lock, so
        no build of it is running)."""
        for path in self.dir("tmp").glob(f"{key}-u{self.uid}.*"):
            remove_tree(path)

    def _target(self, key: str) -> Path:
        """entries/<key>-u<uid>; if another user squats that name (they can make the directory,
        never own it as us), a numbered variant."""
        for n in range(100):
            target = self.dir("entries") / (f"{key}-u{self.uid}" + (f".{n}" if n else ""))
            try:
                if target.lstat().st_uid == self.uid:
                    return target
            except FileNotFoundError:
                return target
        raise CacheError(f"cannot find a free entry name for {key} in {self.dir('entries')}")

    def publish(self, staged: Path, key: str, meta: Dict, keep: List[str]) -> Entry:
        """Make staged/<keep...> the entry for key: read-only, then one atomic rename."""
        target = self._target(key)
        for child in staged.iterdir():
            if child.name not in keep:
                remove_tree(child)
        artifact = staged / meta["artifact"]
        for child in staged.iterdir():
            os.chmod(child, 0o444)
        meta = dict(meta, artifact_sha256=file_digest(artifact), artifact_stat=_stat_token(artifact),
                    size=sum(p.stat().st_size for p in staged.iterdir()))
        (staged / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.chmod(staged / META, 0o444)
        if target.exists():
            # an entry of ours that failed verification: remove it, never overwrite in place
            remove_tree(target)
        os.chmod(staged, 0o755)
        try:
            os.rename(staged, target)  # (moving a directory needs it writable: chmod after)
        except OSError as exc:
            raise CacheError(f"cannot publish {target}: {exc.strerror}") from None
        os.chmod(target, 0o555)
        entry = self.entry_at(target)
        assert entry is not None
        return entry

    def touch_used(self, entry: Entry) -> None:
        path = self.dir("used") / f"{entry.name}.u{self.uid}"
        try:
            path.touch()
        except OSError:
            pass  # bookkeeping for pruning only; never fail a build or a job over it

    def last_used(self, entry: Entry) -> float:
        times = [entry.meta.get("created", 0)]
        for path in self.dir("used").glob(f"{entry.name}.u*"):
            try:
                times.append(path.stat().st_mtime)
            except OSError:
                pass
        return max(times)

    def register_use(self, entry: Entry, job_id: str) -> None:
        """Record that a job will run this entry; pruning keeps it while the job is queued or running."""
        directory = self.dir("inuse") / entry.name
        try:
            directory.mkdir(mode=0o1777)
            os.chmod(directory, 0o1777)
        except FileExistsError:
            pass
        (directory / f"{job_id}.u{self.uid}").touch()

    def users_of(self, entry: Entry) -> List[str]:
        directory = self.dir("inuse") / entry.name
        if not directory.is_dir():
            return []
        return sorted({p.name.split(".u")[0] for p in directory.iterdir()})

    def remove(self, entry: Entry) -> None:
        """Delete an entry: move it out of entries/ first, so it never looks half there."""
        if entry.owner != self.uid and self.uid != 0:
            raise CacheError(f"{entry.name} belongs to {entry.owner_name}; only they (or root) can remove it")
        aside = self.dir("tmp") / f"{entry.name}.removing.{os.getpid()}.{time.monotonic_ns()}"
        try:
            os.chmod(entry.path, 0o755)  # moving a directory needs it writable
            os.rename(entry.path, aside)
        except OSError as exc:
            raise CacheError(f"cannot remove {entry.path}: {exc.strerror}") from None
        remove_tree(aside)


def remove_tree(path: Path) -> None:
    """rmtree that first makes read-only directories writable (our published entries are)."""
    def onerror(func, target, exc_info):
        err = exc_info[1]
        if isinstance(err, PermissionError) or getattr(err, "errno", None) == errno.EACCES:
            parent = os.path.dirname(target)
            os.chmod(parent, stat.S_IMODE(os.stat(parent).st_mode) | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
            func(target)
        elif not isinstance(err, FileNotFoundError):
            raise err
    if path.is_symlink() or path.is_file():
        try:
            os.chmod(path.parent, stat.S_IMODE(os.stat(path.parent).st_mode) | stat.S_IWUSR)
        except PermissionError:
            pass
        path.unlink(missing_ok=True)
        return
    try:
        os.chmod(path, 0o700)
    except FileNotFoundError:
        return
    shutil.rmtree(path, onerror=onerror)
