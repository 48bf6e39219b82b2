"""The shared, content-addressed image cache.

Layout under the site's cache directory; the five directories are made by the cache's owner
(root, or the owner of the cache directory: `stardock images init`), 1777 when shared, like /tmp:
anybody may add, nobody but the owner of a file (or of the directory) may remove or rename it:

    entries/<key>-u<uid>[.<suffix>]   a published entry: meta.json, the artifact, the definition,
                                      the spec; read-only; a real directory whose owner is uid
    tmp/<key>-u<uid>.<random>         builds in progress (published by an atomic rename)
    locks/<key>.u<uid>.lock           a user's builds of a key build once (per user: anybody can
                                      flock a file they can open, so a shared lock is a DoS)
    used/<entry>.u<uid>               touched whenever uid uses an entry (for pruning)
    inuse/<entry>.j<job>.u<uid>       jobs that will run an entry (pruning keeps those entries)

Everything below the cache directory may have been planted by another user: nothing is followed
through a symbolic link, files and directories are judged by fstat of the descriptor then used,
metadata is read with a bound and validated, and whatever is not what stardock makes is skipped
(never fatal, never blocking). Trust: the key is computable by anyone, so an entry is used only
when its directory belongs to the user, to root, or to a builder the site trusts, and only while
its artifact (exactly the engine's artifact file, inside the entry, owned by the same user) still
matches the digest recorded when it was published.
"""
from __future__ import annotations

import fcntl
import grp
import json
import os
import pwd
import re
import secrets
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.safefs import (
    FILE_FLAGS,
    Unsafe,
    create_exclusive,
    open_dir_at,
    opened,
    printable,
    read_regular,
    remove_at,
)
from stardock_hpc.site import Trust
from stardock_hpc.spec import NAME_RE

SUBDIRS = ("entries", "tmp", "locks", "used", "inuse")
META = "meta.json"
META_MAX = 1 << 20
ARTIFACTS = {"podman": "image.oci.tar", "apptainer": "image.sif"}  # engines/*.artifact_name (unit-tested)
ENTRY_RE = re.compile(r"(?P<key>[0-9a-f]{64})-u(?P<uid>[0-9]{1,10})(?:\.(?P<suffix>[0-9a-z]{1,32}))?")
STAGE_RE = re.compile(r"(?P<key>[0-9a-f]{64})-u(?P<uid>[0-9]{1,10})\..+")
JOB_RE = re.compile(r"[0-9]{1,20}(?:[_+][0-9]{1,20})?")
TAG_RE = re.compile(rf"localhost/stardock/{NAME_RE}:[0-9a-f]{{16}}")
HEX64 = re.compile(r"[0-9a-f]{64}")
def image_tag(name: str, key: str) -> str:
    """Podman's local name for an entry's image (the name meta.json's image_tag must have)."""
    return f"localhost/stardock/{name}:{key[:16]}"


STAGE_LOCK = ".stardock-build.lock"
Say = Optional[Callable[[str], None]]


class CacheError(StardockError):
    pass


class Invalid(Exception):
    """What was found under the cache is not an entry stardock made (the reason is the message)."""


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    owner: int
    meta: Dict
    ident: Tuple[int, int] = field(default=(0, 0), compare=False)  # (st_dev, st_ino) when read

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def engine(self) -> str:
        return self.meta["engine"]

    @property
    def artifact(self) -> Path:
        return self.path / ARTIFACTS[self.meta["engine"]]

    @property
    def owner_name(self) -> str:
        return user_name(self.owner)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _token(st: os.stat_result) -> List[int]:
    """What changes whenever the file's content can have changed. ctime cannot be set back by
    a user, so a matching token spares re-hashing a large artifact on every use."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _fd_digest(fd: int) -> str:
    import hashlib  # only when a stat token does not match: jobs and hits seldom hash

    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)


def validate_meta(meta: object, key: str) -> Dict:
    """meta.json of the entry for key, or Invalid naming the first thing wrong with it."""
    if not isinstance(meta, dict):
        raise Invalid("its meta.json is not a JSON object")
    if meta.get("key") != key:
        raise Invalid("its meta.json records another key than its directory name")
    engine = meta.get("engine")
    if engine not in ARTIFACTS:
        raise Invalid(f"its engine {printable(engine, 40)} is none of {', '.join(ARTIFACTS)}")
    name = meta.get("name")
    if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
        raise Invalid(f"its name {printable(name, 60)} is not an environment name")
    if meta.get("artifact") != ARTIFACTS[engine]:
        raise Invalid(f"its artifact {printable(meta.get('artifact'), 80)} is not {ARTIFACTS[engine]} in the entry")
    if not isinstance(meta.get("artifact_sha256"), str) or not HEX64.fullmatch(meta["artifact_sha256"]):
        raise Invalid("its artifact_sha256 is not a SHA-256 digest")
    tag = meta.get("image_tag")
    if tag is not None and not (isinstance(tag, str) and TAG_RE.fullmatch(tag) and tag.endswith(":" + key[:16])):
        raise Invalid(f"its image_tag {printable(tag, 80)} is not stardock's tag for it")
    for number in ("created", "size", "build_seconds"):
        if number in meta and (not isinstance(meta[number], (int, float)) or isinstance(meta[number], bool)):
            raise Invalid(f"its {number} is not a number")
    stat_token = meta.get("artifact_stat")
    if stat_token is not None and not (isinstance(stat_token, list) and len(stat_token) == 4
                                       and all(isinstance(x, int) for x in stat_token)):
        raise Invalid("its artifact_stat is not four integers")
    if not isinstance(meta.get("apps", []), list) or not all(isinstance(a, str) for a in meta.get("apps", [])):
        raise Invalid("its apps are not a list of names")
    return meta


class Cache:
    def __init__(self, root: Path, trust: Optional[Trust] = None, uid: Optional[int] = None) -> None:
        self.root = root
        self.trust = trust or Trust()
        self.uid = os.getuid() if uid is None else uid
        self._used: Optional[Dict[str, float]] = None

    # --- layout -------------------------------------------------------------------------------
    def dir(self, name: str) -> Path:
        return self.root / name

    def _root_stat(self) -> os.stat_result:
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            raise UsageError(f"the image cache {self.root} does not exist",
                             hint="the site's admins create it (see `stardock site check`)") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"the image cache {self.root} is not a directory")
        return st

    def owner(self) -> int:
        """Who may set the cache up: the owner of its directory (root for a site's)."""
        return self._root_stat().st_uid

    def _layout_problem(self, name: str, st: os.stat_result, root: os.stat_result) -> Optional[str]:
        path = self.dir(name)
        if not stat.S_ISDIR(st.st_mode):
            return f"{path} is not a directory"
        if st.st_uid not in (0, root.st_uid):
            return (f"{path} belongs to {user_name(st.st_uid)}, not to root or the cache's owner "
                    f"({user_name(root.st_uid)}): its owner can remove or rename everybody's files in it")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return f"{path} is writable by others without the sticky bit: anybody can remove anybody's files"
        return None

    def _init_hint(self, root: os.stat_result) -> str:
        return (f"the cache's owner ({user_name(root.st_uid)}) sets it up with `stardock images init` "
                "(with the same --site)")

    @contextmanager
    def _layout(self, name: str, create: bool = False) -> Iterator[int]:
        """A descriptor for a layout directory, checked: a real directory, root's or the cache
        owner's, sticky when others can write it. create: make it when missing (owner only)."""
        root = self._root_stat()
        with opened(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as root_fd:
            try:
                fd = open_dir_at(root_fd, name)
            except Unsafe:
                raise CacheError(f"{self.dir(name)} is a symbolic link or not a directory; it is not used",
                                 hint=self._init_hint(root)) from None
            except FileNotFoundError:
                if not create:
                    raise
                fd = self._make_layout_dir(root_fd, name, root)
        with opened(fd):
            problem = self._layout_problem(name, os.fstat(fd), root)
            if problem:
                raise CacheError(problem, hint="the cache's owner must move it aside (`stardock site check` "
                                 "reports the layout); nothing in it is used meanwhile")
            yield fd

    def _make_layout_dir(self, root_fd: int, name: str, root: os.stat_result) -> int:
        if self.uid not in (0, root.st_uid) or os.geteuid() != self.uid:
            raise CacheError(f"the image cache {self.root} is not set up ({name}/ is missing), and only its "
                             f"owner may set it up", hint=self._init_hint(root))
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
        except FileExistsError:
            pass
        except PermissionError:
            raise CacheError(f"cannot create {self.dir(name)}: permission denied") from None
        fd = open_dir_at(root_fd, name)
        st = os.fstat(fd)
        if st.st_uid == os.geteuid():
            os.fchmod(fd, 0o1777 if root.st_mode & stat.S_IWOTH else 0o755)
        return fd

    def ensure_layout(self) -> None:
        """Check the layout before writing; its owner (root, or the cache directory's) makes
        what is missing, anybody else is told who must."""
        for name in SUBDIRS:
            with self._layout(name, create=True):
                pass

    def check_layout(self) -> None:
        """Refuse a layout directory that is not what `ensure_layout` checks (missing ones are fine)."""
        for name in SUBDIRS:
            try:
                with self._layout(name):
                    pass
            except FileNotFoundError:
                pass

    def init(self) -> List[str]:
        """`stardock images init`: make or repair the layout, as root or the cache's owner. Links
        and non-directories are refused before anything changes; root takes over real
        directories a user made (their owner could remove everybody's entries)."""
        root = self._root_stat()
        if self.uid not in (0, root.st_uid):
            raise CacheError(f"{self.root} belongs to {user_name(root.st_uid)}; only they or root can set it up")
        mode = 0o1777 if root.st_mode & stat.S_IWOTH else 0o755
        done = []
        with opened(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as root_fd:
            found: Dict[str, Optional[int]] = {}
            try:
                for name in SUBDIRS:
                    try:
                        found[name] = open_dir_at(root_fd, name)
                    except FileNotFoundError:
                        found[name] = None
                    except Unsafe:
                        path = self.dir(name)
                        raise CacheError(f"{path} is a symbolic link or not a directory; nothing was changed",
                                         hint=f"move it aside (e.g. mv {path} {path}.suspect), then run this again") \
                            from None
                for name, fd in found.items():
                    if fd is None:
                        found[name] = fd = self._make_layout_dir(root_fd, name, root)
                        done.append(f"created {self.dir(name)} ({mode:o})")
                    done += self._repair(name, fd, root, mode)
            finally:
                for fd in found.values():
                    if fd is not None:
                        os.close(fd)
        return done or [f"{self.root}: the layout is in order"]

    def _repair(self, name: str, fd: int, root: os.stat_result, mode: int) -> List[str]:
        path, done = self.dir(name), []
        st = os.fstat(fd)
        if st.st_uid not in (0, root.st_uid):
            if self.uid != 0:
                raise CacheError(self._layout_problem(name, st, root) or str(path),
                                 hint="root can take it over with `stardock images init`")
            os.fchown(fd, 0, 0)
            done.append(f"took over {path} from {user_name(st.st_uid)}")
            st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) != mode and st.st_uid == os.geteuid():
            os.fchmod(fd, mode)
            done.append(f"set the mode of {path} to {mode:o}")
        return done

    def layout_report(self) -> List[Tuple[str, str, str]]:
        """(status, what, detail) lines for `stardock site check`."""
        try:
            root = self._root_stat()
        except StardockError as exc:
            return [("fail", "cache layout", exc.message)]
        missing, bad = [], []
        for name in SUBDIRS:
            try:
                with self._layout(name):
                    pass
            except FileNotFoundError:
                missing.append(name)
            except CacheError as exc:
                bad.append(exc.message)
        if bad:
            return [("fail", "cache layout", problem) for problem in bad]
        if missing:
            return [("warn", "cache layout", f"{', '.join(missing)} missing in {self.root}: "
                     + self._init_hint(root))]
        return [("ok", "cache layout", f"{', '.join(SUBDIRS)}: real directories of root or the cache's owner")]

    # --- trust --------------------------------------------------------------------------------
    def trusted(self, owner: int) -> bool:
        if owner in (self.uid, 0):
            return True
        try:
            pw = pwd.getpwuid(owner)
        except KeyError:
            return False
        if pw.pw_name in self.trust.users:
            return True
        for group in self.trust.groups:
            try:
                g = grp.getgrnam(group)
            except KeyError:
                continue
            if pw.pw_name in g.gr_mem or pw.pw_gid == g.gr_gid:
                return True
        return False

    # --- reading ------------------------------------------------------------------------------
    def _read_entry(self, entries_fd: int, name: str) -> Entry:
        """The entry called name, judged on the directory opened (Invalid otherwise)."""
        m = ENTRY_RE.fullmatch(name)
        if not m:
            raise Invalid("its name is not <key>-u<uid>")
        try:
            fd = open_dir_at(entries_fd, name)
        except Unsafe:
            raise Invalid("it is a symbolic link or not a directory") from None
        except OSError as exc:
            raise Invalid(f"it cannot be opened ({exc.strerror})") from None
        with opened(fd):
            st = os.fstat(fd)
            if st.st_uid != int(m.group("uid")):
                raise Invalid(f"it is named for uid {m.group('uid')} but belongs to {user_name(st.st_uid)}")
            try:
                raw = read_regular(fd, META, META_MAX, owner=st.st_uid)
                meta = json.loads(raw.decode("utf-8"))
            except Unsafe as exc:
                raise Invalid(f"its meta.json {exc.why}") from None
            except OSError as exc:
                raise Invalid(f"its meta.json cannot be read ({exc.strerror})") from None
            except ValueError:
                raise Invalid("its meta.json is not JSON") from None
        return Entry(m.group("key"), self.dir("entries") / name, st.st_uid, validate_meta(meta, m.group("key")),
                     (st.st_dev, st.st_ino))

    def entry_at(self, path: Path) -> Optional[Entry]:
        """The valid entry at path (a directory in entries/), or None."""
        if path.parent != self.dir("entries"):
            return None
        try:
            with self._layout("entries") as fd:
                return self._read_entry(fd, path.name)
        except (Invalid, OSError, StardockError):
            return None

    def scan(self, prefix: str = "") -> Tuple[List[Entry], List[Tuple[str, str]]]:
        """Valid entries whose names start with prefix, and (name, reason) for what was skipped."""
        found, skipped = [], []
        try:
            with self._layout("entries") as fd:
                for name in sorted(n for n in os.listdir(fd) if n.startswith(prefix)):
                    try:
                        found.append(self._read_entry(fd, name))
                    except Invalid as exc:
                        skipped.append((name, str(exc)))
        except FileNotFoundError:
            pass  # not set up yet: no entries
        return found, skipped

    def entries(self) -> List[Entry]:
        return self.scan()[0]

    def candidates(self, key: str) -> List[Entry]:
        """Valid entries for key, the user's own first, then other trusted builders'."""
        if not HEX64.fullmatch(key):
            return []
        found = [e for e in self.scan(f"{key}-u")[0] if self.trusted(e.owner)]
        return sorted(found, key=lambda e: e.owner != self.uid)

    def artifact_problem(self, entry: Entry, sha256: Optional[str] = None) -> Optional[str]:
        """None when entry's artifact is a regular file of the entry's owner, inside the entry,
        matching its recorded digest (or sha256); else what is wrong."""
        want = sha256 or entry.meta.get("artifact_sha256")
        try:
            with self._layout("entries") as efd, opened(open_dir_at(efd, entry.name)) as dfd:
                if os.fstat(dfd).st_uid != entry.owner:
                    return f"{entry.name} no longer belongs to {entry.owner_name}"
                name = ARTIFACTS[entry.engine]
                try:
                    fd = os.open(name, FILE_FLAGS, dir_fd=dfd)
                except OSError as exc:
                    return f"its artifact {name} cannot be opened ({exc.strerror})"
                with opened(fd):
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode) or st.st_uid != entry.owner:
                        return f"its artifact {name} is not a regular file of {entry.owner_name}"
                    if want == entry.meta.get("artifact_sha256") and _token(st) == entry.meta.get("artifact_stat"):
                        return None  # unchanged since its (trusted) owner recorded both
                    if _fd_digest(fd) != want:
                        return f"its artifact {name} no longer matches the recorded digest"
            return None
        except (OSError, CacheError) as exc:
            return f"it cannot be checked ({getattr(exc, 'strerror', None) or exc})"

    def verify(self, entry: Entry) -> bool:
        return self.artifact_problem(entry) is None

    def lookup(self, key: str) -> Optional[Entry]:
        for entry in self.candidates(key):
            if self.verify(entry):
                return entry
        return None

    def find(self, key_prefix: str) -> Entry:
        """An entry by (a prefix of) its key, as `stardock images inspect` takes it. Only valid
        entries count; skipped ones that match are named with the reason."""
        shown = printable(key_prefix, 80)
        entries, skipped = self.scan() if not key_prefix else self.scan(key_prefix[:64])
        matches = [e for e in entries if e.name.startswith(key_prefix)]
        keys = {e.key for e in matches}
        if len(keys) > 1:
            raise UsageError(f"{shown!r} matches {len(keys)} images; give more of the key")
        if not matches:
            why = "".join(f"\n  entries/{printable(n, 90)} was skipped: {r}" for n, r in skipped[:5])
            raise UsageError(f"no image in {self.root} has a key starting with {shown!r}{why}",
                             hint="`stardock images` lists them")
        trusted = [e for e in matches if self.trusted(e.owner)]
        return sorted(trusted or matches, key=lambda e: e.owner != self.uid)[0]

    def entry_for_run(self, path: Path, owner: int, artifact_sha256: str) -> Entry:
        """The entry at path for a job about to run it: a real directory of owner (the builder
        trusted at submission), recording artifact_sha256, whose artifact still matches it."""
        if path.parent != self.dir("entries"):
            raise CacheError(f"{path} is not an entry of the image cache {self.root}")
        m = ENTRY_RE.fullmatch(path.name)
        if not m or int(m.group("uid")) != owner:
            raise CacheError(f"{printable(path)} is not the name of an entry of uid {owner}")
        try:
            with self._layout("entries") as efd:
                entry = self._read_entry(efd, path.name)
        except FileNotFoundError:
            raise CacheError(f"the image cache {self.root} has no entries directory") from None
        except Invalid as exc:
            raise CacheError(f"the image {printable(path)} is not usable: {exc}") from None
        if entry.owner != owner:
            raise CacheError(f"the image {path} now belongs to {entry.owner_name}, not to uid {owner}")
        if entry.meta["artifact_sha256"] != artifact_sha256:
            raise CacheError(f"the image {path} records another artifact than the one submitted")
        problem = self.artifact_problem(entry, artifact_sha256)
        if problem:
            raise CacheError(f"the image {path} is not usable: {problem}")
        return entry

    # --- building -----------------------------------------------------------------------------
    def lock_path(self, key: str) -> Path:
        return self.dir("locks") / f"{key}.u{self.uid}.lock"

    @contextmanager
    def lock(self, key: str, timeout: float = float("inf"), say: Say = None,
             timeout_text: str = "") -> Iterator[bool]:
        """This user's builds of key, one at a time; released by the kernel even if the process is
        killed. Waits at most timeout seconds (saying so), then CacheError. Yields False when the
        lock file is not a file of ours (planted): the build goes on without it."""
        path = self.lock_path(key)
        fd: Optional[int] = None
        with self._layout("locks") as lfd:
            try:
                fd = os.open(path.name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             0o600, dir_fd=lfd)
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != self.uid:
                    os.close(fd)
                    fd = None
                elif stat.S_IMODE(st.st_mode) != 0o600:
                    os.fchmod(fd, 0o600)
            except OSError:
                fd = None
        if fd is None:
            if say:
                say(f"warning: {path} is not a lock file of yours (somebody planted it); building without "
                    "it, so another build of yours of this image may build it too")
            yield False
            return
        try:
            self._wait_for(fd, path, key, timeout, say, timeout_text)
            yield True
        finally:
            os.close(fd)

    @staticmethod
    def _wait_for(fd: int, path: Path, key: str, timeout: float, say: Say, timeout_text: str) -> None:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                raise CacheError(f"gave up waiting for another build of image {key[:12]} by you, which holds "
                                 f"{path}, after {timeout_text or f'{timeout:g}s'}; nothing was built",
                                 hint="let that build finish (or stop it) and try again")
            if not told and say:
                say(f"waiting for another build of image {key[:12]} by you ({path}); giving up after "
                    f"{timeout_text or f'{timeout:g}s'}")
                told = True
            time.sleep(0.2)

    @contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A private directory to build in (locked while in use); removed unless published."""
        self.ensure_layout()
        self.sweep_stale(key)
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=f"{key}-u{self.uid}.", dir=self.dir("tmp")))
        lock = os.open(path / STAGE_LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield path
        finally:
            with self._layout("tmp") as tfd:
                remove_at(tfd, path.name)
            os.close(lock)

    def sweep_stale(self, key: str, min_age: float = 0.0) -> int:
        """Remove this user's leftovers of builds of key that were killed before they could clean
        up: real directories of ours whose build lock is free. Anything else is left alone."""
        return self.sweep(f"{key}-u{self.uid}.", min_age)

    def sweep(self, prefix: str = "", min_age: float = 0.0, now: Optional[float] = None) -> int:
        """Remove leftovers in tmp/ (the user's own; root: anybody's) older than min_age."""
        now = time.time() if now is None else now
        removed = 0
        with self._layout("tmp", create=False) as tfd:
            for name in os.listdir(tfd):
                m = STAGE_RE.fullmatch(name)
                if not name.startswith(prefix) or not m:
                    continue
                try:
                    st = os.lstat(name, dir_fd=tfd)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(st.st_mode) or self.uid not in (0, st.st_uid) or \
                        st.st_uid != int(m.group("uid")) or now - st.st_mtime < min_age:
                    continue
                if self._leftover_removed(tfd, name, st):
                    removed += 1
        return removed

    @staticmethod
    def _leftover_removed(tfd: int, name: str, st: os.stat_result) -> bool:
        try:
            dfd = open_dir_at(tfd, name)
        except (Unsafe, OSError):
            return False
        with opened(dfd):
            if (os.fstat(dfd).st_dev, os.fstat(dfd).st_ino) != (st.st_dev, st.st_ino):
                return False
            try:
                lock = os.open(STAGE_LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                lock = None  # no lock file (an entry moved aside, or killed at once): nobody is in it
            try:
                if lock is not None:
                    if not stat.S_ISREG(os.fstat(lock).st_mode):
                        return False
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                remove_at(tfd, name)
                return True
            except BlockingIOError:
                return False  # a build is running in it
            finally:
                if lock is not None:
                    os.close(lock)

    def publish(self, staged: Path, key: str, meta: Dict, keep: List[str]) -> Entry:
        """Make staged/<keep...> the entry for key: read-only, then one atomic rename."""
        for child in staged.iterdir():
            if child.name not in keep:
                remove_at_path(child)
        artifact = staged / meta["artifact"]
        for child in staged.iterdir():
            os.chmod(child, 0o444)
        st = os.stat(artifact)
        with open(artifact, "rb") as fh:
            digest = _fd_digest(fh.fileno())
        meta = dict(meta, artifact_sha256=digest, artifact_stat=_token(st),
                    size=sum(p.stat().st_size for p in staged.iterdir()))
        validate_meta(json.loads(json.dumps(meta)), key)
        (staged / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.chmod(staged / META, 0o444)
        os.chmod(staged, 0o755)
        plain = f"{key}-u{self.uid}"
        with self._layout("entries") as efd:
            self._clear_own_bad_entry(efd, plain)
            # An unguessable suffix when the plain name is taken: it cannot be squatted.
            for name in (plain, f"{plain}.{secrets.token_hex(8)}"):
                try:
                    os.rename(staged, name, dst_dir_fd=efd)
                    break
                except OSError as exc:
                    if name != plain:
                        raise CacheError(f"cannot publish {self.dir('entries') / name}: {exc.strerror}") from None
            with opened(open_dir_at(efd, name)) as fd:
                os.fchmod(fd, 0o555)
            return self._read_entry(efd, name)

    def _clear_own_bad_entry(self, efd: int, name: str) -> None:
        """Our own entry at name that failed verification: remove it, never overwrite in place."""
        try:
            entry = self._read_entry(efd, name)
        except Invalid:
            try:
                st = os.lstat(name, dir_fd=efd)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode) and st.st_uid == self.uid:
                self._move_aside_and_remove(efd, name, (st.st_dev, st.st_ino))
            return
        if entry.owner == self.uid and not self.verify(entry):
            self._move_aside_and_remove(efd, name, entry.ident)

    # --- bookkeeping ----------------------------------------------------------------------------
    def touch_used(self, entry: Entry) -> None:
        """Best effort: bookkeeping for pruning only, never fails a build or a job."""
        name = f"{entry.name}.u{self.uid}"
        try:
            with self._layout("used") as dfd:
                try:
                    fd = create_exclusive(dfd, name, 0o644)
                except FileExistsError:
                    fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
                with opened(fd):
                    st = os.fstat(fd)
                    if stat.S_ISREG(st.st_mode) and st.st_uid == self.uid:
                        os.utime(fd)
        except (OSError, StardockError):
            pass
        self._used = None

    def _stamps(self, directory: str) -> Iterator[Tuple[str, os.stat_result]]:
        """(name, lstat) of regular files in a layout directory whose real owner is the uid
        their name ends with (.u<uid>): other users' plants are not counted."""
        try:
            with self._layout(directory) as dfd:
                for name in os.listdir(dfd):
                    base, sep, uid = name.rpartition(".u")
                    if not sep or not uid.isdigit():
                        continue
                    try:
                        st = os.lstat(name, dir_fd=dfd)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode) and st.st_uid == int(uid):
                        yield base, st
        except (OSError, StardockError):
            return

    def last_used(self, entry: Entry) -> float:
        if self._used is None:
            self._used = {}
            for base, st in self._stamps("used"):
                entry_name = base
                self._used[entry_name] = max(self._used.get(entry_name, 0.0), st.st_mtime)
        return max(entry.meta.get("created", 0), self._used.get(entry.name, 0.0))

    def register_use(self, entry: Entry, job_id: str) -> None:
        """Record that a job will run this entry; pruning keeps it while the job is queued or
        running. Best effort: never raises (the job is already submitted)."""
        try:
            job = str(job_id)
            if not JOB_RE.fullmatch(job):
                return
            with self._layout("inuse") as dfd:
                os.close(create_exclusive(dfd, f"{entry.name}.j{job}.u{self.uid}", 0o644))
        except (OSError, StardockError, ValueError):
            pass

    def users_of(self, entry: Entry) -> List[str]:
        """Job ids recorded (by their submitters) as going to run entry."""
        jobs = set()
        for base, _st in self._stamps("inuse"):
            name, sep, job = base.rpartition(".j")
            if sep and name == entry.name and JOB_RE.fullmatch(job):
                jobs.add(job)
        return sorted(jobs)

    # --- removing -------------------------------------------------------------------------------
    def remove(self, entry: Entry) -> None:
        """Delete exactly the entry decided on: opened without following links and checked to be
        that directory, moved out of entries/ (so it never looks half there), then removed
        without following any link inside."""
        if entry.owner != self.uid and self.uid != 0:
            raise CacheError(f"{entry.name} belongs to {entry.owner_name}; only they (or root) can remove it")
        with self._layout("entries") as efd:
            self._move_aside_and_remove(efd, entry.name, entry.ident, entry.owner)

    def _move_aside_and_remove(self, efd: int, name: str, ident: Tuple[int, int],
                               owner: Optional[int] = None) -> None:
        try:
            fd = open_dir_at(efd, name)
        except (Unsafe, FileNotFoundError):
            raise CacheError(f"entries/{printable(name)} is no longer the entry chosen; nothing was removed") \
                from None
        with opened(fd):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != ident or (owner is not None and st.st_uid != owner):
                raise CacheError(f"entries/{printable(name)} changed since it was chosen; nothing was removed")
            if st.st_uid == os.geteuid():
                os.fchmod(fd, 0o755)  # moving a directory to another parent needs it writable
            with self._layout("tmp") as tfd:
                aside = f"{name}.removing.{secrets.token_hex(8)}"
                try:
                    os.rename(name, aside, src_dir_fd=efd, dst_dir_fd=tfd)
                except OSError as exc:
                    raise CacheError(f"cannot remove entries/{printable(name)}: {exc.strerror}") from None
                # The owner of the entry alone could have swapped the name meanwhile; whatever
                # was moved is theirs and inside the cache, and it goes without following links.
                remove_at(tfd, aside)


def remove_at_path(path: Path) -> None:
    """Remove path (our own staging files) without following links."""
    with opened(os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as parent:
        remove_at(parent, path.name)
