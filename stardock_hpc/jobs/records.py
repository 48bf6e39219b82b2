"""Job records: what was submitted (by `stardock sbatch`) and what ran (by the node wrapper).

    <records>/<jobid>/submit.json         written once, after sbatch answered
    <records>/<jobid>/run.json            the wrapper's record (run.<task>.json for array tasks)

Every file is written to a temporary name and renamed: a reader never sees half a record.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional

from stardock_hpc.errors import UsageError
from stardock_hpc.fsutil import write_atomic

JOB_ID_RE = re.compile(r"[0-9]+(?:_[0-9]+)?")


def split_job_id(job: str) -> tuple:
    """'25' -> ('25', None); '25_3' -> ('25', '3')."""
    if not JOB_ID_RE.fullmatch(job):
        raise UsageError(f"{job!r} is not a job id (write 1234, or 1234_5 for an array task)")
    base, _, task = job.partition("_")
    return base, task or None


class RecordStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, job: str) -> Path:
        return self.root / job

    def _made(self, job: str) -> Path:
        d = self._dir(job)
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    def write_submit(self, job: str, record: Dict) -> None:
        d = self._made(job)
        write_atomic(d / "submit.json", json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)

    def write_run(self, job: str, task: Optional[str], record: Dict) -> None:
        d = self._made(job)
        name = f"run.{task}.json" if task else "run.json"
        write_atomic(d / name, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)

    def submit(self, job: str) -> Optional[Dict]:
        return self._read(self._dir(job) / "submit.json")

    def runs(self, job: str) -> Dict[str, Dict]:
        """Run records by task ('' for a plain job)."""
        out = {}
        d = self._dir(job)
        if d.is_dir():
            for path in sorted(d.glob("run*.json")):
                parts = path.name.split(".")
                record = self._read(path)
                if record is not None:
                    out[parts[1] if len(parts) == 3 else ""] = record
        return out

    def jobs(self) -> List[str]:
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir() if p.is_dir() and p.name.isdigit()), key=int)

    @staticmethod
    def _read(path: Path) -> Optional[Dict]:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
