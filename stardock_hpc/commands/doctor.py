"""`stardock doctor`: can this user build and run here, and will Slurm account for the containers?"""
from __future__ import annotations

import getpass
import os
import resource
import shutil
import sys
from pathlib import Path
from typing import List

import click

from stardock_hpc import __version__, proc
from stardock_hpc.commands.options import common_options, state
from stardock_hpc.commands.sitecmd import Check, report_checks, run_checks
from stardock_hpc.jobs.submit import RUNTIME_SHIM
from stardock_hpc.resources import data_dir
from stardock_hpc.site import load_site


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
    return checks


def _isolation(site) -> List[Check]:
    """What stands between a job and the node, and between users, and who enforces it."""
    pids = site.policy.limits.pids
    _soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    capped = "" if hard == resource.RLIM_INFINITY or hard >= pids else f" (your hard limit {hard} is lower: it applies)"
    return [
        ("ok", "no new privileges", "Podman: --security-opt=no-new-privileges; Apptainer: always set by "
         "Apptainer itself (setuid files in images gain nothing)"),
        ("ok", "process view", "Podman: a PID namespace of its own; Apptainer: --pid (a job sees only its "
         "own processes)"),
        ("ok", "process limit", f"policy.limits.pids = {pids}{capped}, applied by stardock as RLIMIT_NPROC of "
         "the container (the kernel counts, per user namespace: Podman's is shared by the user's containers "
         "on a node, Apptainer's is the job's own); Slurm 22.05's cgroup plugins limit memory and cores, "
         "not processes"),
        ("ok", "mounts", "resolved and checked at submission, walked again without following links on the "
         "node, and proven in the container (same device and inode as checked) before the job runs"),
        ("ok", "outputs and records", "0700 directories of yours, on paths no other user can replace"),
    ]


def run_doctor() -> List[Check]:
    user = getpass.getuser()
    site = load_site(state().site)
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
    return checks


@click.command()
@click.option("--json", "as_json", is_flag=True)
@common_options
def doctor(as_json: bool) -> None:
    """Check this machine, the site config and Slurm for stardock, and say what is wrong."""
    report_checks(run_doctor(), as_json, "check")


COMMANDS = [doctor]
