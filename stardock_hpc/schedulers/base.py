"""The scheduler interface. Every backend sends the same rendered job script, so they agree by
construction; subclasses fill in how to submit it and how to ask about jobs. Everything stardock
asks Slurm goes through here (submitting, states, where a job writes, which jobs are still
active), so a site with slurmrestd alone needs none of Slurm's client commands."""
from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from stardock_hpc.errors import ExternalError, StardockError
from stardock_hpc.slurm.options import Option
from stardock_hpc.slurm.values import ACTIVE

if TYPE_CHECKING:
    from stardock_hpc.site import Site

Check = Tuple[str, str, str]  # (ok|warn|fail, what, detail), as `stardock site check` prints them


@dataclass
class Submission:
    script: str                    # the rendered job script
    options: List[Option]          # sbatch options from the command line, as given
    args: List[str]                # the batch script's arguments
    cwd: Path                      # where the user submitted from (sbatch's default --chdir)
    environ: Dict[str, str]        # the submitting environment (sbatch exports it by default)
    script_name: str = ""           # the batch script's file name, "wrap" for --wrap: Slurm's
                                   # default job name (and %x), which the job script must keep
    named: Tuple[str, ...] = ()    # the variables the user names for the job (--export, --pass-env):
                                   # sent even when they are credentials of the session (job_env.py)


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
    name: ClassVar[str]
    status_source: ClassVar[str] = "accounting"   # where status() answers from (shown by `stardock status`)

    @classmethod
    def from_site(cls, site: Site) -> Scheduler:
        """The backend as the site config sets it up."""
        return cls()

    @classmethod
    def site_checks(cls, site: Site) -> List[Check]:
        """What `stardock site check` says about this backend on this machine."""
        return [("ok", f"scheduler {cls.name}", "selected")]

    @abstractmethod
    def submit(self, submission: Submission) -> Submitted: ...

    @abstractmethod
    def status(self, job_ids: Sequence[str]) -> Dict[str, JobState]: ...

    def find_jobs(self, name: str, since: float, until: float) -> Optional[List[str]]:
        """The user's jobs named name that Slurm received between since and until (epoch
        seconds): how a submission whose answer was lost is found again. None: cannot tell."""
        return None

    def live_status(self, job_ids: Sequence[str]) -> Dict[str, JobState]:
        """slurmctld's view alone (no exit codes or MaxRSS), for when the accounting does not answer."""
        raise ExternalError(f"the {self.name} backend cannot ask slurmctld alone")

    @abstractmethod
    def cancel(self, job_id: str) -> None: ...

    @abstractmethod
    def stdout_path(self, job_id: str) -> Optional[str]:
        """Where the job writes its standard output (Slurm's StdOut), or None when Slurm no longer knows."""

    def active(self, job_ids: Sequence[str]) -> Optional[Set[str]]:
        """Which of these jobs (ids, or array task ids) are queued or running: their ids as Slurm
        gives them; None when Slurm cannot tell."""
        if not job_ids:
            return set()
        try:
            states = self.status(sorted({j.split("_")[0] for j in job_ids}))
        except StardockError:
            return None
        return {j for j, st in states.items() if st.state in ACTIVE} | \
            {j.split("_")[0] for j, st in states.items() if st.state in ACTIVE}

    @staticmethod
    @contextmanager
    def script_file(submission: Submission) -> Iterator[str]:
        """The job script written to a private directory under the batch script's own file name:
        Slurm names a job after its script file unless told otherwise (and %x expands to that)."""
        directory = tempfile.mkdtemp(prefix="stardock-job-")
        path = os.path.join(directory, submission.script_name or "job.sh")
        try:
            with open(path, "w") as fh:
                fh.write(submission.script)
            yield path
        finally:
            shutil.rmtree(directory, ignore_errors=True)
