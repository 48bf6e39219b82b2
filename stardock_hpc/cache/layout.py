"""The cache's layout: its directory and the five directories below it, which must be root's or
the cache owner's (whoever owns a sticky directory can remove everybody's files in it)."""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from stardock_hpc.cache.entries import (
    SUBDIRS,
    CacheError,
    user_name,
)
from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.safefs import (
    Unsafe,
    open_dir_at,
    opened,
)
from stardock_hpc.site import Trust


class Layout:
    """The cache directory and its five layout directories, checked on every use."""

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
