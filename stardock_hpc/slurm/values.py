"""Slurm's values, parsed and printed in one place: times, sizes and job states.

Times are read as Slurm's time_str2mins reads them (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S;
-1/INFINITE/UNLIMITED are unlimited) into seconds; Slurm itself keeps whole minutes, rounded up.
Memory sizes are read as Slurm's str_to_mbytes reads them (whole numbers, MB unless K/M/G/T).
sacct prints sizes with a unit letter and maybe a fraction (60720K, 1.5G): those, and sizes a
user gives stardock itself (prune's budget), are read into bytes.
"""
from __future__ import annotations

import re
from typing import List, Optional, Union

from stardock_hpc.errors import UsageError

UNLIMITED = "UNLIMITED"
_TIME = re.compile(r"(?:([0-9]+)-([0-9]+)(?::([0-9]+)(?::([0-9]+))?)?)|([0-9]+)(?::([0-9]+)(?::([0-9]+))?)?")
_MEM = re.compile(r"([0-9]+)([KkMmGgTt]?)")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KkMmGgTt]?)(?:[iI]?[Bb])?")
_UNIT_SHIFT = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}

# Job states (sacct/scontrol names): a job that will not change any more, and one that may still run.
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                      "BOOT_FAIL", "DEADLINE"})
ACTIVE = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
                    "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"})


# --- times ----------------------------------------------------------------------------------------
def time_seconds(text: str) -> Optional[int]:
    """A Slurm time in seconds; None for unlimited."""
    v = text.strip()
    if v.upper() in ("-1", "INFINITE", UNLIMITED):
        return None
    match = _TIME.fullmatch(v)
    if not match:
        raise UsageError(f"{text!r} is not a Slurm time (minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S)")
    d, h, m, s, a, b, c = (int(x) if x else 0 for x in match.groups())
    if match.group(1) is None:  # no day part: M, M:S or H:M:S
        h, m, s = (a, b, c) if match.group(7) else (0, a, b)
    return ((d * 24 + h) * 60 + m) * 60 + s


def minutes(text: str) -> float:
    """A Slurm time in minutes, exactly (inf for unlimited): for comparing limits."""
    seconds = time_seconds(text)
    return float("inf") if seconds is None else seconds / 60


def whole_minutes(text: str) -> Union[int, str]:
    """A Slurm time as Slurm keeps it: whole minutes, rounded up, or UNLIMITED."""
    seconds = time_seconds(text)
    return UNLIMITED if seconds is None else (seconds + 59) // 60


def duration(seconds: Optional[float]) -> Optional[str]:
    """sacct's Elapsed format: [D-]HH:MM:SS."""
    if seconds is None or seconds < 0:
        return None
    s = int(seconds)
    days, rest = divmod(s, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


# --- sizes ----------------------------------------------------------------------------------------
def mem_mb(text: str) -> int:
    """A memory size as Slurm reads it, in megabytes (K rounds up)."""
    match = _MEM.fullmatch((text or "").strip())
    if not match:
        raise UsageError(f"{text!r} is not a size (a number of megabytes, or with a K, M, G or T suffix)")
    number, unit = int(match.group(1)), match.group(2).upper()
    return {"K": (number + 1023) // 1024, "": number, "M": number, "G": number << 10, "T": number << 20}[unit]


def size_bytes(text: str) -> float:
    """A size in bytes: a number (fractions allowed) with an optional K/M/G/T (KiB, MB... alike),
    bytes when bare; sacct's MaxRSS (60720K, 1.5G, 123) and users' sizes (500M, 20G)."""
    match = _SIZE.fullmatch((text or "").strip())
    if not match:
        raise UsageError(f"{text!r} is not a size; write e.g. 500M or 20G")
    return float(match.group(1)) * (1 << _UNIT_SHIFT[match.group(2).upper()])


def human_size(n: Optional[float]) -> str:
    """Bytes as a short human figure (B, KiB, MiB, GiB)."""
    size = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# --- job ids -----------------------------------------------------------------------------------
def array_task_ranges(tasks: str) -> str:
    """Array task ids as sacct prints them (1-3,5): the accounting keeps them as a hex bitmap
    (0xE), the controller as ranges already."""
    if not tasks.lower().startswith("0x"):
        return tasks
    bits = int(tasks, 16)
    runs: List[List[int]] = []
    for i in (i for i in range(bits.bit_length()) if bits >> i & 1):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


# What Slurm's commands say when slurmctld does not answer (connect refused, frozen, unresolvable)
CONTROLLER_DOWN = ("Unable to contact slurm controller", "Socket timed out", "Zero Bytes were transmitted",
                   "Connection refused", "Unable to establish control machine", "Could not establish a "
                   "configuration source", "resolve_ctls_from_dns_srv")
# What Slurm's commands and libslurm say when the request went out and no answer came back (slurmctld frozen or dying):
# slurmctld may still create the job. "Unable to contact slurm controller" is a failed connect.
LOST_ANSWER = ("Socket timed out on send/recv operation", "Zero Bytes were transmitted or received")
