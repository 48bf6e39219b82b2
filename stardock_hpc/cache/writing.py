"""Writing the cache: per-user build locks, staging directories, publishing by one atomic rename,
sweeping what killed builds left, and the stamps pruning reads (used/, inuse/)."""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from stardock_hpc.cache.entries import (
    ENTRY_MODES,
    ENTRY_RE,
    JOB_RE,
    META,
    PRIVATE,
    STAGE_LOCK,
    STAGE_RE,
    CacheError,
    Entry,
    Invalid,
    Say,
    fd_digest,
    stat_token,
    validate_meta,
)
from stardock_hpc.cache.reading import Reader
from stardock_hpc.errors import StardockError
from stardock_hpc.safefs import (
    Unsafe,
    create_exclusive,
    open_dir_at,
    opened,
    remove_at,
)


class Cache(Reader):
    """The shared image cache (see the package's docstring)."""

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
        """Make staged/<keep...> the entry for key: read-only, then one atomic rename. Its modes
        are those of meta's visibility (private, when it names none) from before the rename on:
        a private entry is never readable by anybody else, not for a moment, not even in tmp/."""
        meta = dict(meta, visibility=meta.get("visibility") or PRIVATE)
        meta.setdefault("visibility_reason", "published without a decision on who may read it")
        dir_mode, file_mode = ENTRY_MODES[meta["visibility"]]
        os.chmod(staged, 0o700)  # until it is whole (mkdtemp's mode; the rename needs it writable)
        for child in staged.iterdir():
            if child.name not in keep:
                remove_at_path(child)
        artifact = staged / meta["artifact"]
        for child in staged.iterdir():
            if not child.is_symlink():
                os.chmod(child, file_mode)
        st = os.stat(artifact)
        with open(artifact, "rb") as fh:
            digest = fd_digest(fh.fileno())
        meta = dict(meta, artifact_sha256=digest, artifact_stat=stat_token(st),
                    size=sum(p.stat().st_size for p in staged.iterdir()))
        if meta.get("run_form"):
            form = staged / meta["run_form"]
            with open(form, "rb") as fh:
                meta.update(run_form_sha256=fd_digest(fh.fileno()), run_form_stat=stat_token(os.fstat(fh.fileno())))
        validate_meta(json.loads(json.dumps(meta)), key)
        with os.fdopen(os.open(staged / META, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                               0o600), "w") as fh:
            fh.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.chmod(staged / META, file_mode)
        # whole now: a public entry may be read in tmp/ too; the owner keeps u+w for the rename
        os.chmod(staged, dir_mode | 0o200)
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
                os.fchmod(fd, dir_mode)
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
        self.register_use_of(entry.name, job_id)

    def register_use_of(self, entry_name: str, job_id: str) -> None:
        """register_use by the entry's name (a record keeps the name, not the entry)."""
        try:
            job = str(job_id)
            if not JOB_RE.fullmatch(job) or not ENTRY_RE.fullmatch(entry_name):
                return
            with self._layout("inuse") as dfd:
                os.close(create_exclusive(dfd, f"{entry_name}.j{job}.u{self.uid}", 0o644))
        except (OSError, StardockError, ValueError):
            pass

    def register_pending(self, entry: Entry, stamp: str) -> None:
        """Mark entry as used by a submission whose answer was lost (its job may exist): pruning
        keeps it until `stardock status` finds the job (or gives up, after PENDING_DAYS)."""
        try:
            if stamp.isdigit():
                with self._layout("inuse") as dfd:
                    os.close(create_exclusive(dfd, f"{entry.name}.p{stamp}.u{self.uid}", 0o644))
        except (OSError, StardockError):
            pass

    def pending_of(self, entry: Entry) -> List[Tuple[str, float]]:
        """(stamp, mtime) of the marks of lost submissions of entry."""
        found = []
        for base, st in self._stamps("inuse"):
            name, sep, stamp = base.rpartition(".p")
            if sep and name == entry.name and stamp.isdigit():
                found.append((stamp, st.st_mtime))
        return found

    def forget_pending(self, entry_name: str, stamp: str) -> None:
        try:
            with self._layout("inuse") as dfd:
                os.unlink(f"{entry_name}.p{stamp}.u{self.uid}", dir_fd=dfd)
        except (OSError, StardockError):
            pass

    def forget_use(self, key_or_name: str, job_id: str) -> int:
        """Remove this user's marks that job_id uses an entry (given by key, or by entry name):
        the job has ended. Unlinked by name in the checked directory, never through a link.
        Best effort: the number removed."""
        removed = 0
        try:
            with self._layout("inuse") as dfd:
                for name in os.listdir(dfd):
                    base, sep, uid = name.rpartition(".u")
                    entry_name, jsep, job = base.rpartition(".j")
                    if sep and jsep and uid == str(self.uid) and job == str(job_id) and \
                            (entry_name == key_or_name or entry_name.startswith(f"{key_or_name}-u")):
                        try:
                            os.unlink(name, dir_fd=dfd)
                            removed += 1
                        except OSError:
                            pass
        except (OSError, StardockError):
            pass
        return removed

    def users_of(self, entry: Entry) -> List[str]:
        """Job ids recorded (by their submitters) as going to run entry."""
        jobs = set()
        for base, _st in self._stamps("inuse"):
            name, sep, job = base.rpartition(".j")
            if sep and name == entry.name and JOB_RE.fullmatch(job):
                jobs.add(job)
        return sorted(jobs)



def remove_at_path(path: Path) -> None:
    """Remove path (our own staging files) without following links."""
    with opened(os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as parent:
        remove_at(parent, path.name)
