"""`stardock images prune`: free cache space without breaking a queued or running job."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Set

from stardock_hpc.cache import Cache, Entry

DAY = 86400.0
PENDING_DAYS = 7.0   # how long a lost submission's mark keeps its image (`stardock status` settles it sooner)


@dataclass
class Decision:
    entry: Entry
    reason: str


def plan_prune(cache: Cache, *, older_than: Optional[float] = None, unused_for: Optional[float] = None,
               max_bytes: Optional[int] = None, now: Optional[float] = None,
               jobs: Callable[[Sequence[str]], Optional[Set[str]]]) -> List[Decision]:
    """Only valid entries (what stardock published) are candidates; whatever else is under the
    cache is not followed, counted or touched. jobs: which of some job ids are queued or running
    (the scheduler's `active`)."""
    now = time.time() if now is None else now
    entries = cache.entries()
    mine = [e for e in entries if cache.uid in (0, e.owner)]
    protected = set()
    for entry in mine:
        users = cache.users_of(entry)
        if users:
            live = jobs(users)
            if live is None or any(u.split("_")[0] in live for u in users):
                protected.add(entry.name)  # never prune what a job will run (or might: Slurm unreachable)
            if live is not None:  # marks of jobs that have ended are no longer needed (one's own)
                for user_job in users:
                    if user_job.split("_")[0] not in live:
                        cache.forget_use(entry.name, user_job)
        for stamp, when in cache.pending_of(entry):
            if now - when < PENDING_DAYS * DAY:
                protected.add(entry.name)  # a submission whose answer was lost may have made a job of it
            else:
                cache.forget_pending(entry.name, stamp)
    chosen: List[Decision] = []
    for entry in mine:
        if entry.name in protected:
            continue
        age = now - entry.meta.get("created", now)
        idle = now - cache.last_used(entry)
        if older_than is not None and age > older_than:
            chosen.append(Decision(entry, f"built {age / DAY:.1f} days ago"))
        elif unused_for is not None and idle > unused_for:
            chosen.append(Decision(entry, f"unused for {idle / DAY:.1f} days"))
    if max_bytes is not None:
        total = sum(e.meta.get("size", 0) for e in entries) - sum(d.entry.meta.get("size", 0) for d in chosen)
        picked = {d.entry.name for d in chosen}
        for entry in sorted(mine, key=cache.last_used):
            if total <= max_bytes:
                break
            if entry.name in protected or entry.name in picked:
                continue
            chosen.append(Decision(entry, "over the size budget (least recently used)"))
            total -= entry.meta.get("size", 0)
    return chosen


def sweep_tmp(cache: Cache, older_than: float = DAY, now: Optional[float] = None) -> int:
    """Leftovers of killed builds nobody is building in: real directories of the user (root:
    anybody's) named as stardock names them, whose build lock is free; never through a link."""
    try:
        return cache.sweep("", older_than, now)
    except FileNotFoundError:
        return 0
