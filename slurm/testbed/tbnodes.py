"""The testbed's compute nodes: each a slurmd in namespaces of its own, on one machine.

A node is a network namespace joined to the controller by a veth pair on a bridge (its own
address), a UTS namespace (its own host name), a mount namespace (its own /tmp, /var/tmp, /run
and /dev/shm, fresh at every start as after a reboot, with the testbed's shared state bound back
in as a parallel filesystem would be, and the homes shared as over NFS) and a cgroup namespace
rooted in a subtree of its own, so that Slurm's cgroup limits, accounting and cleanup work per
node. Why namespaces and not rootful containers as hosts: no image to build, no engine under
the engines being tested, one slurmd binary and config for all, and a node crash is a SIGKILL
of the processes of one cgroup subtree.

    10.66.0.1    the controller and login side (the bridge sdbr0, in the machine's namespace)
    10.66.0.1N   nodeN (namespace sdnodeN, veth sdvethN)
"""
from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from tbcommon import (
    ETC,
    LOG,
    RUN,
    SCIENTISTS,
    STATE,
    TestbedError,
    pid_alive,
    run,
    say,
    stop_pidfile,
    wait_for,
    write_if_changed,
)

BRIDGE = "sdbr0"
NET = "10.66.0"
CONTROLLER_ADDR = f"{NET}.1"
NODES_FILE = ETC / "nodes"
HOSTS = ETC / "hosts"
DEFAULT_NODES = 3
INIT = Path(__file__).resolve().parent / "node-init.sh"
CGROUP = Path("/sys/fs/cgroup")
SLURM_ENV = {"SLURM_CONF": str(ETC / "slurm.conf")}


NODE_DISKS = Path("/var/tmp/stardock-testbed-nodes")  # outside STATE: the nodes see STATE in their /var/tmp


def local_disk(name: str) -> Path:
    return NODE_DISKS / name / "var-tmp"


def count() -> int:
    try:
        return max(1, int(NODES_FILE.read_text().strip()))
    except (OSError, ValueError):
        return DEFAULT_NODES


def set_count(n: int) -> bool:
    return write_if_changed(NODES_FILE, f"{n}\n")


def names() -> List[str]:
    return [f"node{i}" for i in range(1, count() + 1)]


def number(name: str) -> int:
    if not name.startswith("node") or not name[4:].isdigit() or not 1 <= int(name[4:]) <= count():
        raise TestbedError(f"no node {name!r}; nodes: {', '.join(names())}")
    return int(name[4:])


def addr(name: str) -> str:
    return f"{NET}.{10 + number(name)}"


def netns(name: str) -> str:
    return f"sd{name}"


# --- network -------------------------------------------------------------------------------

def _link_exists(dev: str, ns: Optional[str] = None) -> bool:
    argv = ["ip"] + (["-n", ns] if ns else []) + ["link", "show", dev]
    return run(argv, check=False, capture=True).returncode == 0


def ensure_network() -> bool:
    changed = False
    if not _link_exists(BRIDGE):
        say(f"making the nodes' network: bridge {BRIDGE} {CONTROLLER_ADDR}/24")
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        changed = True
    if CONTROLLER_ADDR not in run(["ip", "-4", "addr", "show", BRIDGE], capture=True).stdout:
        run(["ip", "addr", "add", f"{CONTROLLER_ADDR}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    present = set(run(["ip", "netns", "list"], capture=True).stdout.split())
    for name in names():
        ns, veth = netns(name), f"sdveth{number(name)}"
        if ns not in present:
            run(["ip", "netns", "add", ns])
            changed = True
        if not _link_exists(veth):
            run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            changed = True
        run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
        if addr(name) not in run(["ip", "-n", ns, "-4", "addr", "show", "eth0"], capture=True).stdout:
            run(["ip", "-n", ns, "addr", "add", f"{addr(name)}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
    return changed


def hosts_text() -> str:
    from socket import gethostname
    login = gethostname().split(".")[0]
    lines = ["127.0.0.1 localhost", f"{CONTROLLER_ADDR} {login}"]
    lines += [f"{addr(n)} {n}" for n in names()]
    return "# the testbed's hosts (written by `testbed up`), seen by every node\n" + "\n".join(lines) + "\n"


# --- cgroups -------------------------------------------------------------------------------

def hierarchies() -> List[Dict[str, str]]:
    """The machine's cgroup hierarchies as (mount point, type, options) from /proc/mounts."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, point, fstype, options = line.split()[:4]
        if fstype in ("cgroup", "cgroup2") and point.startswith(str(CGROUP)):
            opts = [o for o in options.split(",") if o not in ("rw", "ro", "relatime", "nosuid", "nodev",
                                                                  "noexec", "nsdelegate", "memory_recursiveprot")]
            found.append({"point": point, "type": fstype, "options": ",".join(opts) or "none"})
    return found


def node_cgroups(name: str) -> List[Path]:
    """The node's own subtree in every hierarchy (its cgroup namespace's root)."""
    return [Path(h["point"]) / f"sd{name}" for h in hierarchies()]


def ensure_cgroups(name: str) -> None:
    for path in node_cgroups(name):
        parent = path.parent
        if (parent / "cgroup.subtree_control").exists():  # v2: hand the controllers down first
            wanted = (parent / "cgroup.controllers").read_text().split()
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        path.mkdir(exist_ok=True)
        for f in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset has none: the node gets the machine's
            if (path / f).exists() and not (path / f).read_text().strip():
                (path / f).write_text((parent / f).read_text())


def pids_of(name: str) -> List[int]:
    """Every process of the node (its cgroup subtree, in any hierarchy)."""
    pids = set()
    for root in node_cgroups(name):
        for procs in root.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except (OSError, ValueError):
                pass
    return sorted(pids)


# --- the node's slurmd ---------------------------------------------------------------------

def pidfile(name: str) -> Path:
    return RUN / f"slurmd-{name}.pid"


def running(name: str) -> Optional[int]:
    return pid_alive(pidfile(name), "/usr/sbin/slurmd")


def start(name: str) -> bool:
    if running(name):
        return False
    ensure_cgroups(name)
    (STATE / "slurmd" / name).mkdir(parents=True, exist_ok=True)
    # the node's /var/tmp: its own local disk, kept across a crash as a disk is (a tmpfs would
    # charge what jobs keep there, such as the users' node storage, to their memory)
    disk = local_disk(name)
    disk.mkdir(parents=True, exist_ok=True)
    disk.chmod(0o1777)
    say(f"starting {name} ({addr(name)})")
    mounts = [f"{h['point']}:{h['type']}:{h['options']}" for h in hierarchies()]
    procs = " ".join(str(p / "cgroup.procs") for p in node_cgroups(name))
    # The shell moves itself into the node's cgroups, then every step execs the next, so the
    # PID recorded is slurmd's own.
    script = (f'for f in {procs}; do echo $$ > "$f"; done; '
              f'exec ip netns exec {netns(name)} unshare --uts --mount --cgroup --propagation private '
              f'-- /bin/sh {INIT} {name} {STATE} {HOSTS} {disk} {" ".join(mounts)}')
    log = open(LOG / f"slurmd-{name}.out", "ab")
    # the scientists' /run/user/UID, as logind makes it at a first login on a node
    users = " ".join(f"{pw.pw_uid}:{pw.pw_gid}" for pw in map(pwd.getpwnam, SCIENTISTS))
    proc = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **SLURM_ENV,
                                 "NODE_USERS": users},
                            start_new_session=True, cwd="/")
    log.close()
    pidfile(name).write_text(f"{proc.pid}\n")

    def up() -> bool:
        if proc.poll() is not None:
            raise TestbedError(f"{name}'s slurmd exited with {proc.returncode}; see {LOG}/slurmd-{name}.out")
        return state(name) in ("idle", "mixed", "allocated", "completing")

    wait_for(f"{name}", up, timeout=60)
    return True


def state(name: str) -> str:
    out = run(["sinfo", "-h", "-n", name, "-o", "%T"], check=False, capture=True, env=SLURM_ENV).stdout
    return out.strip().split("\n")[0].rstrip("*~#$@^-") if out.strip() else "unknown"


def stop(name: str) -> bool:
    return stop_pidfile(pidfile(name), "/usr/sbin/slurmd", name)


def crash(name: str) -> int:
    """Kill the node as a crash does: its slurmd and every process of its jobs, SIGKILL, at once."""
    killed = 0
    for _ in range(50):
        pids = [p for p in pids_of(name) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    pidfile(name).unlink(missing_ok=True)
    return killed


def up(n: Optional[int] = None) -> bool:
    changed = set_count(n) if n else False
    changed |= ensure_network()
    changed |= write_if_changed(HOSTS, hosts_text())
    return changed


def start_all() -> bool:
    started = False
    for name in names():
        started |= start(name)
    return started


def stop_all() -> None:
    for name in names():
        stop(name)
