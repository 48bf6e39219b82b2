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
"""
from __future__ import annotations

import os
import pwd
import re
import stat
from pathlib import Path, PurePosixPath
from typing import List, Optional

from stardock_hpc.errors import UsageError
from stardock_hpc.safefs import others_can_replace
from stardock_hpc.site import expand_path

MAX_LINKS = 40  # as the kernel's limit on links followed in one lookup
PERSONAL = re.compile(r"\{(?:user|uid|home)\}")


def private_dir(template: str, user: str, uid: int, what: str) -> Path:
    """The directory template names for user, checked and made (0700) where missing. what names
    the site key in messages (e.g. "outputs directory")."""
    parts: List[str] = []
    own_from: Optional[int] = None
    for piece in template.split("/"):
        expanded = str(expand_path(piece, user)) if piece else ""
        parts += [p for p in expanded.split("/") if p]
        if own_from is None and PERSONAL.search(piece):
            own_from = len(parts) - 1
    return _walk(parts, len(parts) - 1 if own_from is None else own_from, uid, what)


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
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, uid):
                raise _refuse(what, current, f"is a symbolic link made by {_owner(st.st_uid)}")
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
            raise _refuse(what, current, "is not a directory")
        if (must_own or not todo) and st.st_uid != uid:
            raise _refuse(what, current, f"belongs to {_owner(st.st_uid)}, not to you: it was not made by "
                          "you, so it is not used (remove it, or ask the site's admins)")
        if todo and others_can_replace(st, uid):
            raise _refuse(what, current, "can be changed by other users (writable by them without the "
                          "sticky bit, or theirs), so what lies below it could be replaced")
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
