"""The site's policy limits (site.yaml: policy.limits) checked before a job is submitted.

Slurm enforces its own partition and QOS limits; these are the site's limits for container
jobs, refused early with a message naming the option, what was asked and what is allowed.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from stardock_hpc.errors import UsageError
from stardock_hpc.site import Limits
from stardock_hpc.slurm.options import Option
from stardock_hpc.slurm.values import mem_mb, minutes


def check_limits(options: List[Option], limits: Limits, source: str) -> None:
    """options: the job's sbatch options in sbatch's order of precedence (later wins)."""
    last: Dict[str, Optional[str]] = {o.name: o.value for o in options}
    cpus_text = last.get("cpus-per-task")
    cpus = int(cpus_text) if cpus_text else 1
    if limits.cpus is not None and cpus > limits.cpus:
        raise UsageError(f"--cpus-per-task={cpus} is more than this site allows for container jobs "
                         f"({limits.cpus}, policy.limits.cpus in {source})")
    if limits.mem is not None:
        allowed = mem_mb(limits.mem)
        asked = None
        if last.get("mem"):
            asked, what = mem_mb(last["mem"] or "0"), f"--mem={last['mem']}"
        elif last.get("mem-per-cpu"):
            asked, what = mem_mb(last["mem-per-cpu"] or "0") * cpus, f"--mem-per-cpu={last['mem-per-cpu']} x {cpus}"
        if asked is not None and asked > allowed:
            raise UsageError(f"{what} is more memory than this site allows for container jobs "
                             f"({limits.mem}, policy.limits.mem in {source})")
    if limits.time is not None and last.get("time"):
        if minutes(last["time"] or "0") > minutes(limits.time):
            raise UsageError(f"--time={last['time']} is longer than this site allows for container jobs "
                             f"({limits.time}, policy.limits.time in {source})")
