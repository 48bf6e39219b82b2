"""What `stardock site check` and `stardock doctor` find: the site config against this machine,
and the machine against what stardock needs (engines, subordinate ids, cgroups, Slurm's
plugins), with what is enforced by whom. Each finding is a Check; the commands print them."""
from __future__ import annotations

import getpass
import os
import re
import resource
import shutil
import sys
from pathlib import Path
from typing import Dict, List

from stardock_hpc import __version__, proc
from stardock_hpc.cache import Cache
from stardock_hpc.catalog import load_catalog
from stardock_hpc.errors import StardockError
from stardock_hpc.jobs.mounts import check_owners
from stardock_hpc.jobs.squats import squat_checks
from stardock_hpc.jobs.submit import RUNTIME_SHIM
from stardock_hpc.resources import data_dir
from stardock_hpc.schedulers import scheduler_class
from stardock_hpc.schedulers.base import Check
from stardock_hpc.site import Site


def run_checks(site: Site) -> List[Check]:
    checks: List[Check] = [("ok", "site config", site.source)]
    engine = shutil.which(site.engine)
    checks.append(("ok", f"engine {site.engine}", engine) if engine else
                  ("fail", f"engine {site.engine}", "not found on PATH"))
    cache = site.cache
    if cache.is_dir():
        checks.append(("ok" if os.access(cache, os.W_OK | os.X_OK) else "warn", "image cache",
                       f"{cache}" + ("" if os.access(cache, os.W_OK) else " (not writable by you: "
                                     "you can use images, not publish them)")))
        checks += Cache(cache, site.trusted_builders).layout_report()
    else:
        checks.append(("fail", "image cache", f"{cache} does not exist"))
    for name, base in site.bases.items():
        if base.archive is None:
            checks.append(("ok", f"base {name}", f"registry reference {base.ref} (not contacted)"))
        elif base.archive.is_file() and os.access(base.archive, os.R_OK):
            checks.append(("ok", f"base {name}", str(base.archive)))
        else:
            checks.append(("fail", f"base {name}", f"archive {base.archive} is missing or unreadable"))
    user = getpass.getuser()
    for name, volume in site.volumes.items():
        try:
            path = volume.host_path(user)
        except KeyError as exc:
            checks.append(("fail", f"volume {name}", f"cannot expand {volume.path}: {exc}"))
            continue
        if path.is_dir():
            try:  # a per-user directory someone else made first (jobs/mounts.py refuses it)
                check_owners(volume, user, str(path))
                checks.append(("ok", f"volume {name}", f"{path} ({volume.mode})"))
            except StardockError as exc:
                checks.append(("fail", f"volume {name}", exc.message))
        else:
            checks.append(("warn" if "{" in volume.path else "fail", f"volume {name}",
                           f"{path} does not exist"))
    for cert in site.ca_certificates:
        checks.append(("ok", "CA certificate", str(cert)) if os.access(cert, os.R_OK) else
                      ("fail", "CA certificate", f"{cert} is missing or unreadable"))
    for directory in site.catalog:
        checks.append(("ok", "catalog", str(directory)) if directory.is_dir() else
                      ("fail", "catalog", f"{directory} does not exist"))
    try:
        catalog = load_catalog(site.catalog)
        checks.append(("ok", "catalog entries", f"{len(catalog.apps)} apps"))
    except StardockError as exc:
        checks.append(("fail", "catalog entries", str(exc)))
    checks += _node_start(site)
    checks += squat_checks(site, getpass.getuser(), os.getuid())  # names others made first, here
    checks += _staging(site)
    checks += scheduler_class(site.scheduler.backend).site_checks(site)
    return checks


def _staging(site: Site) -> List[Check]:
    """Where --input may fetch from and --deliver may send to (a #STARDOCK line of a script someone
    else wrote asks the same: the policy is all that stands between them and the user's files)."""
    inputs, deliveries = site.policy.inputs, site.policy.deliveries
    where = f"{', '.join(inputs.schemes)} from {', '.join(inputs.hosts) or 'any host'}"
    checks: List[Check] = [("warn" if "file" in inputs.schemes else "ok", "--input", where + (
        "; file: reads the nodes' files as the user (policy.inputs.schemes)" if "file" in inputs.schemes else ""))]
    to = ", ".join(deliveries.hosts) or "no host (volumes only)"
    checks.append(("warn" if "*" in deliveries.hosts else "ok", "--deliver",
                   f"{', '.join(deliveries.schemes)} to {to}" + ("; '*' lets a job send its outputs anywhere "
                                                              "(policy.deliveries.hosts)" if "*" in deliveries.hosts
                                                              else "")))
    return checks


def cgroup_layout() -> str:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2 (unified)"
    if Path("/sys/fs/cgroup/unified").is_dir():
        return "v1 (hybrid: v1 controllers, a v2 tree beside them)"
    return "v1 (legacy)"


def _subids(user: str) -> Check:
    missing = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            if not any(line.split(":")[0] == user for line in Path(path).read_text().splitlines()):
                missing.append(path)
        except OSError:
            missing.append(path)
    if missing:
        return ("fail", "subordinate ids", f"{user} has no range in {', '.join(missing)}: rootless engines "
                "cannot map the image's users (ask the admins: usermod --add-subuids)")
    return ("ok", "subordinate ids", f"{user} has ranges in /etc/subuid and /etc/subgid")


def _slurm_config() -> List[Check]:
    if not shutil.which("scontrol"):
        return [("fail", "slurm", "scontrol not found on PATH")]
    out = proc.run(["scontrol", "show", "config"], check=False)
    if not out.ok:
        return [("fail", "slurm", f"scontrol show config failed: {out.tail(3)}")]
    config = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    checks: List[Check] = []
    proctrack = config.get("ProctrackType", "?")
    checks.append(("ok" if proctrack == "proctrack/cgroup" else "warn", "proctrack", proctrack +
                   ("" if proctrack == "proctrack/cgroup" else ": containers may escape job cleanup")))
    task = config.get("TaskPlugin", "?")
    checks.append(("ok" if "task/cgroup" in task else "warn", "task plugin", task +
                   ("" if "task/cgroup" in task else ": --mem is not enforced on containers")))
    gather = config.get("JobAcctGatherType", "?")
    note = {"jobacct_gather/linux": "counts a task's descendants: the node wrapper keeps containers below it",
            "jobacct_gather/cgroup": "counts the job's cgroup: containers stay in it"}.get(gather, "unknown")
    checks.append(("ok" if gather in ("jobacct_gather/linux", "jobacct_gather/cgroup") else "warn",
                   "job accounting", f"{gather} ({note})"))
    return checks + _mpi(config)


PMIX_LIBS = ("/usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so", "/usr/lib/x86_64-linux-gnu/libpmix.so",
             "/usr/lib64/libpmix.so", "/usr/lib/libpmix.so")


def pmix_version(path: str) -> str:
    """PMIx_Get_version() of the library at path."""
    import ctypes

    lib = ctypes.CDLL(path)
    lib.PMIx_Get_version.restype = ctypes.c_char_p
    return (lib.PMIx_Get_version() or b"?").decode(errors="replace")


def pmix_fence_check(fence: str, tree_width: str) -> Check:
    """Whether a PMIx fence of Slurm's mpi/pmix is a barrier across the nodes of a step.

    Its tree collective (PMIxCollFence=tree, and the default "mixed" for every fence without data)
    asks Slurm's reverse_tree_info() for its parent and children, which answers "root, no children"
    on every node when TreeWidth is larger than the step's node count (Slurm 22.05 at least): each
    node then completes the fence alone. Open MPI ends MPI_Init and begins MPI_Finalize with such a
    fence as its barrier; a rank that runs ahead crashes a peer still in MPI_Init with its first
    message (seen on the testbed: a rank killed by SIGSEGV, and "failed to TCP connect" to it)."""
    if fence == "ring":
        return ("ok", "PMIx fences", "PMIxCollFence=ring: every fence is a barrier across the step's nodes")
    setting = "unset (mixed)" if fence in ("", "(null)") else fence
    return ("warn", "PMIx fences", f"PMIxCollFence is {setting}: Slurm's tree fence completes on each node alone "
            f"in steps on fewer than TreeWidth ({tree_width}) nodes, so Open MPI's barriers in MPI_Init and "
            "MPI_Finalize hold nobody and a rank that runs ahead crashes one still starting now and then: set "
            "PMIxCollFence=ring in mpi.conf (beside slurm.conf)")


def _mpi(config: Dict[str, str]) -> List[Check]:
    """MPI in jobs: Slurm's plugins, the PMIx library they need, and what an image's MPI must share."""
    out = proc.run(["srun", "--mpi=list"], check=False)
    plugins = sorted(set(re.findall(r"\b(pmix(?:_v\d+)?|pmi2|cray_shasta|none)\b", out.stdout + out.stderr)))
    checks: List[Check] = [("ok" if plugins else "warn", "MPI plugins",
                            f"{', '.join(plugins) or 'none found (srun --mpi=list)'}; "
                            f"MpiDefault={config.get('MpiDefault', 'none')}")]
    if any(p.startswith("pmix") for p in plugins):
        checks.append(pmix_fence_check(config.get("PMIxCollFence", ""), config.get("TreeWidth", "?")))
        lib = next((p for p in PMIX_LIBS if os.path.exists(p)), None)
        try:
            version = pmix_version(lib) if lib else None
        except OSError:
            version = None
        checks.append(("ok", "PMIx", f"{lib}: {version}") if version else
                      ("warn", "PMIx", "Slurm's mpi/pmix plugin opens libpmix.so, which is not on this machine "
                       "(Debian: libpmix-dev): srun --mpi=pmix fails on nodes like this one"))
    checks.append(("ok", "MPI in images", "an image's MPI must speak one of these plugins' protocols: PMIx (Open "
                   "MPI 4 and later built with an external PMIx, as Debian's openmpi app; PMIx talks across versions "
                   "from 3 on) or PMI2 (MPICH, the mpich app); with a fast network, the image also needs the "
                   "user-space drivers (UCX, libfabric, verbs) matching the nodes' kernel drivers"))
    return checks


NETWORK_FS = {0x6969: "NFS", 0xFF534D42: "CIFS", 0x0BD00BD0: "Lustre", 0x47504653: "GPFS", 0x65735546: "FUSE",
              0x013111A8: "IBRIX", 0x6B414653: "AFS", 0x00C36400: "CephFS", 0xA501FCF5: "BeeGFS"}


def filesystem_type(path: str) -> int:
    """statfs(2)'s f_type of path (0 when it cannot be read)."""
    import ctypes
    import ctypes.util

    buf = (ctypes.c_long * 32)()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.statfs(os.fsencode(path), buf) != 0:
        return 0
    return buf[0] & 0xFFFFFFFF


def _node_start(site) -> List[Check]:
    """Where images start from on the nodes, where the users' engine state goes, and the home."""
    home = os.path.expanduser("~")
    kind = NETWORK_FS.get(filesystem_type(home))
    checks: List[Check] = [
        ("ok", "home", f"{home} is on {kind}: jobs write nothing there but their records (site key records)"
         if kind else f"{home} is on a local file system"),
        ("ok", "node storage", f"{site.node_storage} (node_storage; at most {site.node_storage_max}, least "
         "recently used images first): Podman's store and runtime files, Apptainer's cache"),
    ]
    missing = [t for t in ("mksquashfs", "squashfuse") if not shutil.which(t)]
    if site.engine == "podman" or shutil.which("podman"):
        checks.append(("warn" if missing else "ok", "image start (podman)",
                       f"missing {', '.join(missing)}: images are loaded into each node's store instead "
                       "(minutes for a large image, on every node, for every user)" if missing else
                       "from the cache's squashfs of each image (made at publish, mounted with squashfuse in "
                       "the user's namespace on the node; nothing loaded or copied)"))
    if site.engine == "apptainer" or shutil.which("apptainer"):
        checks.append(("ok", "image start (apptainer)", "the cache's SIF runs in place"))
    return checks


def _node_network(site) -> Check:
    if site.policy.node_network:
        return ("ok", "network of MPI jobs", "policy.node_network: the containers of a job on several nodes or tasks, "
                "and of MPI steps, share the node's network (MPI's traffic, slurmstepd's PMIx server)")
    return ("warn", "network of MPI jobs", "policy.node_network is false: MPI across containers cannot connect")


def _isolation(site) -> List[Check]:
    """What stands between a job and the node, and between users, and who enforces it."""
    pids = site.policy.limits.pids
    _soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    capped = "" if hard == resource.RLIM_INFINITY or hard >= pids else f" (your hard limit {hard} is lower: it applies)"
    return [
        ("ok", "no new privileges", "Podman: --security-opt=no-new-privileges; Apptainer: always set by "
         "Apptainer itself (setuid files in images gain nothing)"),
        ("ok", "process view", "Podman: a PID namespace of its own; Apptainer: --pid (a job sees only its "
         "own processes; the tasks of a multi-task or MPI step share the node's, for MPI's shared memory)"),
        ("ok", "process limit", f"policy.limits.pids = {pids}{capped}, applied by stardock as RLIMIT_NPROC of "
         "the container (the kernel counts, per user namespace: Podman's is shared by the user's containers "
         "on a node, Apptainer's is the job's own); Slurm 22.05's cgroup plugins limit memory and cores, "
         "not processes"),
        ("ok", "mounts", "resolved and checked at submission, walked again without following links on the "
         "node, and proven in the container (same device and inode as checked) before the job runs"),
        ("ok", "outputs and records", "0700 directories of yours, on paths no other user can replace"),
    ]


def run_doctor(site: Site) -> List[Check]:
    """`stardock doctor`: the site check and this machine: engines, ids, cgroups, Slurm's plugins,
    and what is enforced by whom."""
    user = getpass.getuser()
    checks: List[Check] = [("ok", "stardock", f"{__version__} on Python {sys.version.split()[0]} ({sys.executable})"),
                           ("ok", "cgroups", cgroup_layout())]
    checks += run_checks(site)
    checks.append(_subids(user))
    if site.engine == "podman" or shutil.which("podman"):
        shim = data_dir("wrappers") / RUNTIME_SHIM
        runtime = os.environ.get("STARDOCK_OCI_RUNTIME", "runc")
        missing = [t for t in (runtime, "unshare", "mount") if not shutil.which(t)]
        checks.append(("fail" if missing else "ok", "podman accounting",
                       f"missing {', '.join(missing)}: jobs cannot keep containers in their cgroup" if missing else
                       f"{shim} runs {runtime} with read-only cgroups: containers stay in the job's cgroup"))
        if not os.access(shim, os.X_OK):
            checks.append(("fail", "podman accounting", f"{shim} is not executable"))
    for dev in ("/dev/fuse", "/dev/net/tun"):
        if os.path.exists(dev) and not os.access(dev, os.R_OK | os.W_OK):
            checks.append(("warn", dev, "not usable by you (FUSE mounts and rootless networking need it)"))
    checks += _isolation(site)
    checks += _slurm_config()
    checks.append(_node_network(site))
    return checks
