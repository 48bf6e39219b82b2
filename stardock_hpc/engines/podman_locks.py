"""Podman's locks without a fixed name in /dev/shm.

Rootless Podman's default locks live in /dev/shm/libpod_rootless_lock_UID: a name in a directory
every user of the machine can write, so anybody can make it first ("failed to open 2048 locks ...
permission denied": every Podman command of the user on that node fails). With
`lock_type = "file"` (containers.conf, [engine]) Podman keeps one lock file per container in its
tmp dir instead, which is the user's own (the runtime directory, or the node storage's; see
jobs/nodestore.py).

How it is set, seen with Podman 4.3 (tests/unit/test_podman_locks.py and the attack tests):
CONTAINERS_CONF replaces every other containers.conf (the site's and the user's, with the
runtime and cgroup settings a site needs), so it is not used. Podman merges the drop-in
directory of the user's containers.conf (`$XDG_CONFIG_HOME/containers/containers.conf.d/*.conf`,
after the system's files and the user's containers.conf, key by key): a drop-in there with only
lock_type changes that and nothing else, for every Podman command of the user (the home is shared
by the login and compute nodes), including the user's own, which then lock the same way as
stardock's on the same stores. Changing the lock type of a store that has containers needs no
migration (its lock numbers are kept; Podman makes their files as it needs them).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

DROP_IN = "50-stardock-lock-type.conf"
TEXT = ("# Written by stardock-hpc: Podman's locks as files in its own tmp dir, not under a fixed name in\n"
        "# /dev/shm that another user of a node could make first. Remove this file and stardock writes it again.\n"
        "[engine]\n"
        "lock_type = \"file\"\n")

_ensured = False


def drop_in_path(environ: Mapping[str, str]) -> Optional[Path]:
    """Where Podman reads the user's drop-ins ($XDG_CONFIG_HOME, else ~/.config, as Podman does)."""
    base = environ.get("XDG_CONFIG_HOME") or ""
    if not base.startswith("/"):
        home = environ.get("HOME") or os.path.expanduser("~")
        if not home.startswith("/"):
            return None
        base = f"{home}/.config"
    return Path(base) / "containers" / "containers.conf.d" / DROP_IN


def blocked(environ: Mapping[str, str]) -> Optional[str]:
    """Why a drop-in cannot give Podman run with environ file locks; None when it can."""
    if environ.get("CONTAINERS_CONF"):
        return (f"CONTAINERS_CONF ({environ['CONTAINERS_CONF']}) makes Podman read that file only: add "
                "lock_type = \"file\" to its [engine] table")
    if drop_in_path(environ) is None:
        return "no home directory: Podman's drop-in directory is unknown"
    return None


def in_place(environ: Mapping[str, str]) -> bool:
    path = drop_in_path(environ)
    try:
        return path is not None and path.read_text() == TEXT
    except OSError:
        return False


def ensure(environ: Mapping[str, str]) -> Optional[str]:
    """Write the drop-in where it is missing or changed; None when Podman gets file locks, else why not."""
    why_not = blocked(environ)
    path = drop_in_path(environ)
    if why_not or path is None or in_place(environ):
        return why_not
    from stardock_hpc.fsutil import write_atomic

    try:
        write_atomic(path, TEXT, 0o644)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    return None


def use_file_locks() -> None:
    """Once per process, before its first Podman command. Best effort: where the drop-in cannot be
    written, Podman runs with its default locks (stardock doctor says so)."""
    global _ensured
    if not _ensured:
        _ensured = True
        ensure(os.environ)
