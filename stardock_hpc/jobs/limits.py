"""The site's policy limits (site.yaml: policy.limits) checked before a job is submitted.

Slurm enforces its own partition and QOS limits; these are the site's limits for container
jobs, refused early with a message naming the option, what was asked and what is allowed.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.sbatch_options import Option
from stardock_hpc.site import Limits

UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
TIME_RE = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def mem_mb(text: str) -> float:
    """Slurm sizes: a number with an optional K/M/G/T suffix, MB when bare."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)B?", text.strip(), re.IGNORECASE)
    if not m:
        raise UsageError(f"{text!r} is not a memory size (e.g. 500M, 4G)")
    return float(m.group(1)) * UNITS[(m.group(2) or "M").upper()]


def minutes(text: str) -> float:
    """Slurm times: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; UNLIMITED/INFINITE are unlimited."""
    if text.strip().upper() in ("UNLIMITED", "INFINITE", "-1"):
        return float("inf")
    m = TIME_RE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"{text!r} is not a time limit (e.g. 30, 2:00:00, 1-12:00)")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is not None:   # D-H[:M[:S]]
        return days * 1440 + a * 60 + (b or 0) + (c or 0) / 60
    if c is not None:      # H:M:S
        return a * 60 + b + c / 60
    if b is not None:      # M:S
        return a + b / 60
    return float(a)


def check_limits(options: List[Option], limits: Limits, source: str) -> None:
    """options: the job's sbatch options in sbatch's order of precedence (later wins)."""
    last: Dict[str, Optional[str]] = {o.name: o.value for o in options}
    cpus = int(last["cpus-per-task"]) if last.get("cpus-per-task") else 1
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
