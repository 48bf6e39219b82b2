"""The scheduler interface. Every backend sends the same rendered job script, so they agree by
construction; subclasses fill in how to submit it and how to ask about jobs."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from stardock_hpc.jobs.sbatch_options import Option


@dataclass
class Submission:
    script: str                    # the rendered job script
    options: List[Option]          # sbatch options from the command line, as given
    args: List[str]                # the batch script's arguments
    cwd: Path                      # where the user submitted from (sbatch's default --chdir)
    environ: Dict[str, str]        # the submitting environment (sbatch exports it by default)
    script_name: str = ""           # the batch script's file name, "wrap" for --wrap: Slurm's
                                   # default job name (and %x), which the job script must keep


@dataclass
class Submitted:
    job_id: str                    # e.g. "123" (the array's job id for an array)
    cluster: Optional[str] = None
    output: str = ""               # what sbatch printed (kept for --parsable faithfulness)
    messages: str = ""             # what it said on stderr (--test-only answers there)


@dataclass
class JobState:
    job_id: str
    state: str
    exit_code: Optional[str] = None
    elapsed: Optional[str] = None
    max_rss: Optional[str] = None
    name: Optional[str] = None
    steps: List[Dict[str, str]] = field(default_factory=list)


class Scheduler(ABC):
    name: str

    @abstractmethod
    def submit(self, submission: Submission) -> Submitted: ...

    @abstractmethod
    def status(self, job_ids: Sequence[str]) -> Dict[str, JobState]: ...

    @abstractmethod
    def cancel(self, job_id: str) -> None: ...

    def accounting(self, job_id: str) -> Optional[JobState]:
        return self.status([job_id]).get(job_id)
