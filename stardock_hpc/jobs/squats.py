"""Node-local names another user made first, as `stardock site check` and `stardock doctor` see
them on the machine they run on, with what stardock does about each (jobs/userdirs.py,
jobs/nodestore.py, engines/podman_locks.py)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Mapping, Optional

from stardock_hpc.engines import podman_locks
from stardock_hpc.jobs.userdirs import expand_template, first_taken, taken_by
from stardock_hpc.schedulers.base import Check
from stardock_hpc.site import Site

BESIDE = ("stardock does not use it: jobs here use a private directory of yours beside it (NAME-TAG, a name "
          "others cannot know before it exists) and say so in their logs; ask the site's admins to remove it")


def squat_checks(site: Site, user: str, uid: int, environ: Optional[Mapping[str, str]] = None,
                 tmp: Optional[Path] = None, shm: Path = Path("/dev/shm"),
                 run_user: Path = Path("/run/user")) -> List[Check]:
    environ = os.environ if environ is None else environ
    tmp = Path(tempfile.gettempdir()) if tmp is None else tmp
    checks: List[Check] = []
    if site.node_storage:
        found = first_taken(site.node_storage, user, uid)
        checks.append(("warn", "node storage name", f"{found[0]} is {found[1]}: {BESIDE}") if found else
                      ("ok", "node storage name", f"{Path('/', *expand_template(site.node_storage, user)[0])}: "
                       "no name of yours on it is held by another user here"))
    names = [("notebook's login end", tmp / f"stardock-{user}")]
    runtime = run_user / str(uid)
    if not (runtime.is_dir() and not runtime.is_symlink() and runtime.stat().st_uid == uid):
        names.insert(0, ("runtime directory", tmp / f"stardock-runtime-{uid}"))  # the jobs' without /run/user/UID
    for what, path in names:
        held = taken_by(path, uid)
        if held:
            checks.append(("warn", f"{what} name", f"{path} is {held}: {BESIDE}"))
    if site.engine == "podman" or shutil.which("podman"):
        checks.append(_podman_locks(shm / f"libpod_rootless_lock_{uid}", uid, environ))
    return checks


def _podman_locks(lock: Path, uid: int, environ: Mapping[str, str]) -> Check:
    held = taken_by(lock, uid, directory=False)
    why_not = podman_locks.blocked(environ)
    where = podman_locks.drop_in_path(environ)
    how = (f"file locks in Podman's own tmp dir ({where}" +
           ("" if podman_locks.in_place(environ) else ", which stardock writes before its first Podman command") +
           "): no fixed name in /dev/shm")
    if why_not:
        return ("fail" if held else "warn", "podman locks",
                (f"{lock} is {held}, and Podman's default locks would fail on it" if held else
                 f"Podman's default locks use {lock}, a name another user could make first") + f": {why_not}")
    if held:
        return ("warn", "podman locks", f"{lock} is {held}: Podman's default locks would fail here; stardock "
                f"uses {how}")
    return ("ok", "podman locks", how)
