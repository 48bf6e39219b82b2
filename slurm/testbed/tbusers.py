"""Unprivileged users, their rootless Podman configuration, and device permissions."""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
from pathlib import Path

from tbcommon import LANES, REST_USER, SCIENTISTS, TestbedError, run, runtime_dir, say, write_if_changed

SHM = Path("/dev/shm")
GROUP = "astro"  # every scientist; the testbed site trusts images its members build
# The tests act as the second scientist too (shared-cache and trust tests): each lane's test user
# may run commands as its lane's second user, and only as that user.
SUDOERS = Path("/etc/sudoers.d/stardock-testbed")
SUDOERS_TEXT = "# stardock-hpc testbed: each lane's test user may act as its lane's second test user\n" + \
    "".join(f"{user} ALL=({other}) NOPASSWD: ALL\n" for user, other in LANES)

# Podman 4.3's default runtime crun refuses hybrid cgroup v1; runc works. Without systemd there
# is no journald or systemd cgroup manager. Native overlay is far faster than the vfs default.
CONTAINERS_CONF = """\
# Written by stardock-hpc's testbed: rootless Podman without systemd.
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
STORAGE_CONF = """\
# Written by stardock-hpc's testbed.
[storage]
driver = "overlay"
"""


def ensure_user(name: str, *, system: bool = False) -> bool:
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        pass
    say(f"creating user {name}")
    if system:
        run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
    else:
        run(["useradd", "--create-home", "--shell", "/bin/bash", name])
    return True


def has_subids(name: str) -> bool:
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            return False
        if not any(line.split(":")[0] == name for line in lines):
            return False
    return True


def ensure_subids(name: str) -> bool:
    if has_subids(name):
        return False
    # useradd normally allocates these; a user created another way may lack them.
    say(f"allocating subordinate uid/gid ranges for {name}")
    base = 200000 + 65536 * (pwd.getpwnam(name).pw_uid % 1000)
    run(["usermod", "--add-subuids", f"{base}-{base + 65535}",
         "--add-subgids", f"{base}-{base + 65535}", name])
    return True


def ensure_runtime_dir(name: str) -> bool:
    """Make /run/user/UID as logind would: owned, 0700, and empty once the user has no process.

    Here /run is no tmpfs and nobody removes the directory when the user's last process ends, so
    it outlives a reboot or a restart of the machine's processes with Podman's pause-process PID
    file and "alive" marker in it. Podman then takes the old containers for running ones and
    refuses every command ("invalid internal status"). logind empties it at the user's last
    logout and also removes the user's shared memory (RemoveIPC, Podman's lock file in /dev/shm);
    so does the testbed, when no process of the user is left to use them.
    """
    pw = pwd.getpwnam(name)
    path = runtime_dir(name)
    changed = not path.is_dir()
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != pw.pw_uid or stat.S_IMODE(st.st_mode) != 0o700:
        os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(path, 0o700)
        changed = True
    leftovers = list(path.iterdir()) + [p for p in SHM.glob(f"libpod_*_{pw.pw_uid}") if p.owner() == name]
    if leftovers and not has_processes(pw.pw_uid):
        say(f"emptying {path}: no process of {name} is left to use it (a restart or reboot)")
        for child in leftovers:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        # not a change of the testbed: the user's state, left between two of their processes
    return changed


def has_processes(uid: int) -> bool:
    """Whether a live process of uid exists (a zombie uses nothing and is not counted)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
            except (OSError, IndexError):
                pass  # it ended while we looked
    return False


def ensure_podman_config(name: str) -> bool:
    pw = pwd.getpwnam(name)
    conf = Path(pw.pw_dir) / ".config" / "containers"
    changed = False
    for d in (Path(pw.pw_dir) / ".config", conf):
        if not d.is_dir():
            d.mkdir(parents=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            changed = True
    changed |= write_if_changed(conf / "containers.conf", CONTAINERS_CONF, owner=name)
    changed |= write_if_changed(conf / "storage.conf", STORAGE_CONF, owner=name)
    return changed


def ensure_devices() -> bool:
    """udev would make these 0666; without it rootless networking and FUSE fail."""
    changed = False
    for dev in ("/dev/net/tun", "/dev/fuse"):
        if not os.path.exists(dev):
            raise TestbedError(f"{dev} is missing; rootless containers need it")
        if stat.S_IMODE(os.stat(dev).st_mode) != 0o666:
            os.chmod(dev, 0o666)
            changed = True
    return changed


def ensure_group(name: str, members) -> bool:
    changed = False
    try:
        grp.getgrnam(name)
    except KeyError:
        run(["groupadd", name])
        changed = True
    for user in members:
        if user not in grp.getgrnam(name).gr_mem:
            run(["usermod", "-a", "-G", name, user])
            changed = True
    return changed


def up() -> bool:
    changed = ensure_devices()
    changed |= ensure_user(REST_USER, system=True)
    for name in SCIENTISTS:
        changed |= ensure_user(name)
        changed |= ensure_subids(name)
        changed |= ensure_runtime_dir(name)
        changed |= ensure_podman_config(name)
    changed |= ensure_group(GROUP, SCIENTISTS)
    changed |= write_if_changed(SUDOERS, SUDOERS_TEXT, mode=0o440)
    return changed
