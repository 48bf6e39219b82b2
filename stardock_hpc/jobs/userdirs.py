"""The user's own directories from site path templates (outputs, records): private, and on a path
nobody else can redirect.

A template such as `/lustre/scratch/{user}/stardock-outputs` may sit under a world-writable root
where anybody could have made `<root>/<victim>` (or a link there) first, to receive the victim's
outputs. So the path is walked component by component before use:
  * an existing directory must be root's or the user's, and writable by nobody else unless it is
    sticky (then only root and the owner of an entry can replace that entry);
  * from the first component that holds a placeholder on, directories must be the user's own;
  * a symbolic link is followed only when root or the user owns it (the kernel's own rule for
    sticky directories, which this machine does not enforce: fs.protected_symlinks may be 0);
  * missing directories are made by the user, 0700.
When the walk passes, no other user can replace any directory on the path, so the path may be
used afterwards without a check-then-use gap.

Node-local names (node storage, runtime directories in /tmp, /var/tmp) can be made first by any
user of the node, and a refusal there would stop every job of the victim on that node until an
admin cleans up. Such a name taken by someone else (Taken) is never used, followed or required:
own_or_beside() makes a private directory beside it instead, under a name only the user can
compute (a keyed hash of the taken path and the machine, with a key kept in the user's private
records directory): every task of every job of the user on that node finds the same one again
(no lock, no search), and nobody can make that name first without the key. A name the user has
been seen using (command lines are public) and that later disappears could be taken in turn: then
the next name of the sequence is used.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import re
import secrets
import socket
import stat
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable, List, Optional, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.safefs import others_can_replace
from stardock_hpc.site import expand_path

MAX_LINKS = 40  # as the kernel's limit on links followed in one lookup
PERSONAL = re.compile(r"\{(?:user|uid|home)\}")
TRIES = 16          # names beside a taken one; each can only be lost after it was seen in use
TAG_CHARS = 12      # 60 bits; short, as Podman refuses a run root (node storage/podman/run) over 50 characters
KEY_FILE = ".node-names.key"
KEY_BYTES = 32
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class Taken(UsageError):
    """A name that should be the user's own directory is another user's object (a directory, a
    link, a file) or not a directory: somebody made it first. parent passed the walk (root's or
    the user's, entries not replaceable by others): a directory may be made there instead."""

    def __init__(self, path: PurePosixPath, what: str, why: str, parent: PurePosixPath) -> None:
        super().__init__(f"{path} ({what}) {why}: it was not made by you, so it is not used (remove it, or ask "
                         "the site's admins)",
                         hint="stardock keeps your job's files only where no other user can read or redirect them")
        self.path, self.what, self.why, self.parent = path, what, why, parent


def private_dir(template: str, user: str, uid: int, what: str) -> Path:
    """The directory template names for user, checked and made (0700) where missing. what names
    the site key in messages (e.g. "outputs directory")."""
    parts, own_from = expand_template(template, user)
    return _walk(parts, own_from, uid, what)


def expand_template(template: str, user: str) -> Tuple[List[str], int]:
    """template's path for user as components, and the index of the first that is the user's own
    (the one holding a placeholder; without one, the last)."""
    parts: List[str] = []
    own_from: Optional[int] = None
    for piece in template.split("/"):
        expanded = str(expand_path(piece, user)) if piece else ""
        parts += [p for p in expanded.split("/") if p]
        if own_from is None and PERSONAL.search(piece):
            own_from = len(parts) - 1
    return parts, len(parts) - 1 if own_from is None else own_from


def own_path(path: PurePosixPath, uid: int, what: str) -> Path:
    """A literal absolute path (no placeholders) walked as private_dir walks: every directory on it
    root's or the user's and not replaceable by others, the last one the user's; missing ones made
    0700."""
    parts = [p for p in path.parts if p != "/"]
    return _walk(parts, len(parts) - 1, uid, what)


def own_or_beside(template: str, user: str, uid: int, what: str, key: Callable[[], bytes], scope: str,
                  warn: Callable[[str], None]) -> Path:
    """private_dir(template), or where another user took the name first, the user's own directory
    beside it (see beside())."""
    try:
        return private_dir(template, user, uid, what)
    except Taken as taken:
        return beside(taken, uid, key, scope, warn)


def beside(taken: Taken, uid: int, key: Callable[[], bytes], scope: str, warn: Callable[[str], None]) -> Path:
    """The user's private directory in the taken name's directory, named NAME-TAG where TAG is a
    keyed hash of the taken path, scope (the machine, and its boot for names in memory) and a
    counter: the same for every process of the user here, unknown to others until it exists.
    warn gets what happened, naming the taken path and its owner."""
    secret = key()
    for n in range(TRIES):
        digest = hmac.new(secret, f"{scope}\0{taken.path}\0{n}".encode(), hashlib.sha256).digest()
        tag = base64.b32encode(digest).decode().lower()[:TAG_CHARS]
        try:
            path = own_path(taken.parent / f"{taken.path.name}-{tag}", uid, taken.what)
        except Taken:
            continue  # seen in use, lost, then made by someone else: the next name
        os.chmod(path, 0o700)
        warn(f"{taken.path} ({taken.what}) {taken.why}; it is not used: {path}, a private directory of "
             f"yours beside it, is used instead (ask the site's admins to remove {taken.path})")
        return path
    raise taken


def names_key(records: Path) -> bytes:
    """The user's key for names beside taken ones, kept in the user's private records directory
    (records: private_dir'ed, shared by the nodes); made once, atomically (link(2) of a complete
    file: concurrent first jobs agree on one key)."""
    path = records / KEY_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            _make_key(records, path)
            continue
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read(4 * KEY_BYTES)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise UsageError(f"{path} is not a private file of yours; remove it (stardock makes a new one)")
        try:
            secret = bytes.fromhex(data.decode())
        except ValueError:
            secret = b""
        if len(secret) != KEY_BYTES:
            raise UsageError(f"{path} is not a key stardock made; remove it (stardock makes a new one)")
        return secret
    raise UsageError(f"cannot make {path}")


def _make_key(records: Path, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=records)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(KEY_BYTES))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another job's, complete: used by all
    finally:
        os.unlink(tmp)


def this_machine(boot: bool = False) -> str:
    """The scope of names beside taken ones: this machine, and its boot for names in memory (/tmp,
    /run), which disappear at a reboot and could be made again by someone who saw them."""
    host = socket.gethostname()
    if not boot:
        return host
    try:
        return f"{host} {BOOT_ID.read_text().strip()}"
    except OSError:
        return host


def taken_by(path: Path, uid: int, directory: bool = True) -> Optional[str]:
    """What another user (or something of the wrong kind) holds at path, for reports: None when the
    name is free or uid's own directory (own regular file, with directory False)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    wanted = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if wanted and st.st_uid == uid:
        return None
    kind = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode)
            else "a file" if stat.S_ISREG(st.st_mode) else "a special file")
    return f"{kind} of {_owner(st.st_uid)}"


def first_taken(template: str, user: str, uid: int) -> Optional[Tuple[Path, str]]:
    """For reports: the first of the user's own names on template's path (from its placeholder on)
    that another user holds here, with what it is; None when none is (or a link of the user's own
    leads on: the jobs judge where it leads)."""
    parts, own_from = expand_template(template, user)
    for i in range(own_from, len(parts)):
        path = Path("/", *parts[: i + 1])
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode) and st.st_uid == uid:
            return None
        held = taken_by(path, uid)
        if held:
            return path, held
    return None


def _walk(parts: List[str], own_from: int, uid: int, what: str) -> Path:
    """Walk /parts[0]/parts[1]/...; components from index own_from on (and whatever links there
    lead to) must be the user's."""
    todo = [(name, i >= own_from) for i, name in enumerate(parts)]
    done = PurePosixPath("/")
    links = 0
    while todo:
        name, must_own = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            done = done.parent
            continue
        current = done / name
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            _make(current, what)
            st = os.lstat(current)
        taken = must_own or not todo  # the user's own name: made first by someone else, it is taken
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, uid):
                why = f"is a symbolic link made by {_owner(st.st_uid)}"
                raise Taken(current, what, why, done) if taken else _refuse(what, current, why)
            links += 1
            if links > MAX_LINKS:
                raise _refuse(what, current, "leads through too many symbolic links")
            target = PurePosixPath(os.readlink(current))
            if target.is_absolute():
                done = PurePosixPath("/")
            # where the link leads is judged as the path's own: only its last directory must be the user's
            names = [p for p in target.parts if p != "/"]
            todo = [(p, must_own and i == len(names) - 1) for i, p in enumerate(names)] + todo
            continue
        if not stat.S_ISDIR(st.st_mode):
            why = f"is not a directory (a file of {_owner(st.st_uid)})"
            raise Taken(current, what, why, done) if taken else _refuse(what, current, why)
        if taken and st.st_uid != uid:
            raise Taken(current, what, f"belongs to {_owner(st.st_uid)}, not to you", done)
        if todo and others_can_replace(st, uid):
            whose = f"belongs to {_owner(st.st_uid)}" if st.st_uid not in (0, uid) else \
                "can be changed by other users (writable by them without the sticky bit)"
            raise _refuse(what, current, f"{whose}, so what lies below it could be replaced")
        done = current
    return Path(done)


def _make(path: PurePosixPath, what: str) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass  # made meanwhile: judged like any existing directory
    except OSError as exc:
        raise UsageError(f"cannot create {path} for the {what}: {exc.strerror}") from None


def _owner(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def _refuse(what: str, path: PurePosixPath, why: str) -> UsageError:
    return UsageError(f"{path} ({what}) {why}",
                      hint="stardock keeps your job's files only where no other user can read or redirect them")
