"""Job records: what was submitted (by `stardock sbatch`) and what ran (by the node wrapper).

    <records>/<jobid>/submit.json         written once, after sbatch answered
    <records>/<jobid>/run.json            the wrapper's record (run.<task>.json for array tasks)
    <records>/pending/<stamp>.json        a submission whose answer was lost (the job may exist):
                                          `stardock status` looks for the job and records it
    <records>/locks/<sha256>.lock         the lock of a job's image (its provenance names it)

Every file is written to a temporary name and renamed: a reader never sees half a record.
"""
from __future__ import annotations

import hashlib
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

    def run_path(self, job: str, task: Optional[str] = None) -> Path:
        return self._dir(job) / (f"run.{task}.json" if task else "run.json")

    def write_run(self, job: str, task: Optional[str], record: Dict) -> None:
        self._made(job)
        write_atomic(self.run_path(job, task), json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)

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

    def write_pending(self, stamp: str, record: Dict) -> None:
        d = self.root / "pending"
        d.mkdir(mode=0o700, exist_ok=True)
        write_atomic(d / f"{stamp}.json", json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)

    def pending(self) -> Dict[str, Dict]:
        d = self.root / "pending"
        out = {}
        if d.is_dir():
            for path in sorted(d.glob("*.json")):
                record = self._read(path)
                if record is not None and path.stem.isdigit():
                    out[path.stem] = record
        return out

    def drop_pending(self, stamp: str) -> None:
        (self.root / "pending" / f"{stamp}.json").unlink(missing_ok=True)

    def write_lock(self, text: str) -> str:
        """Keep a lock file by its digest (locks/<sha256>.lock); its digest."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        d = self.root / "locks"
        d.mkdir(mode=0o700, exist_ok=True)
        if not (d / f"{digest}.lock").is_file():
            write_atomic(d / f"{digest}.lock", text, mode=0o600)
        return digest

    def lock(self, digest: str) -> Optional[str]:
        """A kept lock, if it is there and still has its digest."""
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            return None
        try:
            text = (self.root / "locks" / f"{digest}.lock").read_text()
        except OSError:
            return None
        return text if hashlib.sha256(text.encode()).hexdigest() == digest else None

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
