"""Files in directories other users can write: reached without following links, judged on what
was opened.

The image cache, a world-writable outputs root and a volume others can write are shared with
users who may be attackers, and the kernel here does not protect against planted links
(fs.protected_symlinks is 0 on some machines). So below a trusted starting point everything is
reached by descriptor, one component at a time with O_NOFOLLOW; a file is judged by fstat of the
descriptor that is then read (no check-then-use gap), opened without blocking (a FIFO never
hangs us) and read with a bound.
"""
from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Unsafe(OSError):
    """What was found is not what may be used (a link, another user's file, a FIFO...)."""

    def __init__(self, path: object, why: str) -> None:
        super().__init__(errno.EPERM, why, str(path))
        self.why = why

    def __str__(self) -> str:
        return f"{self.filename}: {self.why}"


def is_name(name: str) -> bool:
    """A single directory entry name: not empty, no '/', not '.' or '..', no NUL."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def open_dir_at(dir_fd: Optional[int], name: str) -> int:
    """Open the directory name (in dir_fd, or a path when dir_fd is None) without following a
    link in its last component. Raises Unsafe for a link or a non-directory."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Unsafe(name, "is a symbolic link or not a directory") from None
        raise


def open_beneath(root: Path, parts: Sequence[str]) -> int:
    """A descriptor for root/parts[0]/parts[1]/..., following no link below root (root itself is
    the caller's trusted starting point, opened as given)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            if not is_name(part):
                raise Unsafe(root.joinpath(*parts), f"{part!r} is not a plain name")
            try:
                nxt = open_dir_at(fd, part)
            except Unsafe:
                raise Unsafe(root.joinpath(*parts[:i + 1]), "is a symbolic link or not a directory") from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def read_regular(dir_fd: int, name: str, max_bytes: int, owner: Optional[int] = None) -> bytes:
    """The contents of the regular file name in dir_fd: never a link, never a FIFO or device,
    owned by owner when given, at most max_bytes long."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unsafe(name, "is a symbolic link") from None
        raise
    with opened(fd):
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unsafe(name, "is not a regular file")
        if owner is not None and st.st_uid != owner:
            raise Unsafe(name, f"belongs to uid {st.st_uid}, not {owner}")
        if st.st_size > max_bytes:
            raise Unsafe(name, f"is {st.st_size} bytes; at most {max_bytes} are read")
        data = os.read(fd, max_bytes + 1)
        if len(data) > max_bytes:
            raise Unsafe(name, f"is longer than {max_bytes} bytes")
        return data


def create_exclusive(dir_fd: int, name: str, mode: int = 0o600) -> int:
    """Create name in dir_fd, failing if anything (a link included) is already there."""
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                   dir_fd=dir_fd)


def others_can_replace(st: os.stat_result, uid: int) -> bool:
    """Whether users other than uid and root can rename or remove entries of this directory:
    it is writable by group or others without the sticky bit, or it is somebody else's."""
    if st.st_uid not in (0, uid):
        return True
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) and not st.st_mode & stat.S_ISVTX


def remove_tree(path: Path) -> None:
    """Remove path (a file, a link or a directory tree) without ever following a link: a link is
    removed, never its target. Read-only directories of ours (published cache entries) are made
    writable through their own descriptors first. Missing is fine."""
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with opened(parent):
        remove_at(parent, path.name)


def remove_at(dir_fd: int, name: str) -> None:
    """remove_tree for the entry name of the directory dir_fd."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        _unlink(dir_fd, name)
        return
    try:
        fd = open_dir_at(dir_fd, name)
    except (Unsafe, FileNotFoundError):
        _unlink(dir_fd, name)  # swapped for something else since the lstat: remove that, never follow
        return
    with opened(fd):
        _make_writable(fd)
        for entry in os.listdir(fd):
            remove_at(fd, entry)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        remove_at(dir_fd, name)


def _make_writable(fd: int) -> None:
    st = os.fstat(fd)
    if st.st_mode & 0o300 != 0o300 and st.st_uid == os.geteuid():
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)


def printable(value: object, limit: int = 200) -> str:
    """Text read from files other users write (cache metadata, entry names), made safe to print:
    control, format and separator characters (newline, escape, bidi overrides...) are shown as
    Python escapes, so nothing that reaches a terminal can move the cursor, set a title or start
    a new line; at most limit characters."""
    text = str(value)
    out = "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] if c != "\\" else "\\\\" for c in text)
    return out if len(out) <= limit else out[:limit] + "..."
