"""The sbatch CLI backend: sbatch to submit, sacct/squeue/scontrol to ask, scancel to cancel."""
from __future__ import annotations

import re
import shutil
from datetime import datetime
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set

from stardock_hpc import proc
from stardock_hpc.errors import ExternalError, OutcomeUnknown
from stardock_hpc.schedulers.base import Check, JobState, Scheduler, Submission, Submitted
from stardock_hpc.slurm.values import ACTIVE, CONTROLLER_DOWN, LOST_ANSWER, size_bytes

if TYPE_CHECKING:
    from stardock_hpc.site import Site

SACCT_FIELDS = ["JobID", "JobName", "State", "ExitCode", "Elapsed", "MaxRSS"]
PARSABLE_RE = re.compile(r"^([0-9]+)(?:;(\S+))?\s*$")


class SbatchScheduler(Scheduler):
    name = "sbatch"

    @classmethod
    def site_checks(cls, site: Site) -> List[Check]:
        found = shutil.which("sbatch")
        return [("ok", "scheduler sbatch", found) if found else
                ("fail", "scheduler sbatch", "sbatch not found on PATH")]

    def submit(self, submission: Submission) -> Submitted:
        # --quiet would also silence the job id we need; the command line honours it instead.
        # --export's values go to sbatch in $SBATCH_EXPORT, which it reads just below its command
        # line: never onto a command line of ours, which everybody reads (`ps`)
        tokens = [t for o in submission.options if o.name not in ("quiet", "export") for t in o.tokens]
        exports = [o.value for o in submission.options if o.name == "export" and o.value is not None]
        environ = {**submission.environ, "SBATCH_EXPORT": exports[-1]} if exports else submission.environ
        with self.script_file(submission) as path:
            result = proc.run(["sbatch", "--parsable", *tokens, path, *submission.args],
                              cwd=submission.cwd, env=environ, check=False)
        if not result.ok:
            if any(sign in result.stderr for sign in LOST_ANSWER):
                raise OutcomeUnknown(f"sbatch sent the job but slurmctld's answer never came (exit "
                                     f"{result.returncode}): it may exist\n{result.tail()}")
            if any(sign in result.stderr for sign in CONTROLLER_DOWN):
                raise ExternalError(f"sbatch could not reach slurmctld: the job was not submitted (exit "
                                    f"{result.returncode}):\n{result.tail()}")
            raise ExternalError(f"sbatch refused the job (exit {result.returncode}):\n{result.tail()}")
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        match = PARSABLE_RE.match(lines[-1]) if lines else None
        if match is None:  # --test-only and friends answer without a job
            return Submitted("", None, result.stdout, result.stderr)
        return Submitted(match.group(1), match.group(2), lines[-1], result.stderr)

    def status(self, job_ids: Sequence[str]) -> Dict[str, JobState]:
        if not job_ids:
            return {}
        out = proc.run(["sacct", "-n", "-P", "-j", ",".join(job_ids), f"--format={','.join(SACCT_FIELDS)}"],
                       check=False)
        if not out.ok:
            raise ExternalError(f"sacct failed: {out.tail()}")
        states: Dict[str, JobState] = {}
        for line in out.stdout.splitlines():
            row = dict(zip(SACCT_FIELDS, line.split("|")))
            if not row.get("JobID"):
                continue
            job, _, step = row["JobID"].partition(".")
            if not step:
                states[job] = JobState(job, row["State"].split()[0], row["ExitCode"], row["Elapsed"],
                                       None, row["JobName"])
            elif job in states:
                states[job].steps.append(row)
                if row.get("MaxRSS"):
                    states[job].max_rss = _max_rss(states[job].max_rss, row["MaxRSS"])
        return states

    def find_jobs(self, name: str, since: float, until: float) -> Optional[List[str]]:
        out = proc.run(["squeue", "--me", "-h", "-t", "all", "-n", name, "-o", "%A|%V"], check=False)
        if not out.ok:
            return None
        found = []
        for line in out.stdout.splitlines():
            job, _, submitted = line.partition("|")
            try:
                when = datetime.fromisoformat(submitted).timestamp()
            except ValueError:
                continue
            if since <= when <= until:
                found.append(job)
        return sorted(set(found), key=int)

    def live_status(self, job_ids: Sequence[str]) -> Dict[str, JobState]:
        if not job_ids:
            return {}
        out = proc.run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%j", "-j", ",".join(job_ids)], check=False)
        if not out.ok:
            raise ExternalError(f"squeue failed: {out.tail()}")
        states: Dict[str, JobState] = {}
        for line in out.stdout.splitlines():
            job, _, rest = line.partition("|")
            state, _, name = rest.partition("|")
            if job:
                states[job] = JobState(job, state, None, None, None, name)
        return states

    def cancel(self, job_id: str) -> None:
        # scancel exits 0 after some failures (a finished job, an unreachable controller in 22.05):
        # what it says on stderr counts too
        out = proc.run(["scancel", job_id], check=False)
        if not out.ok or "error:" in out.stderr:
            raise ExternalError(f"scancel {job_id} failed: {out.tail()}")

    def stdout_path(self, job_id: str) -> Optional[str]:
        out = proc.run(["scontrol", "show", "job", "-o", job_id], check=False)
        for token in out.stdout.split():
            if token.startswith("StdOut="):
                return token.split("=", 1)[1]
        return None

    def active(self, job_ids: Sequence[str]) -> Optional[Set[str]]:
        # squeue, not sacct: it answers for jobs the accounting has not recorded yet
        ids = sorted({j.split("_")[0] for j in job_ids})
        if not ids:
            return set()
        states = ",".join(sorted(ACTIVE))
        out = proc.run(["squeue", "-h", "-o", "%A %i", "-t", states, "-j", ",".join(ids)], check=False)
        if not out.ok and "Invalid job id" not in out.stderr:
            return None
        return {word for line in out.stdout.split("\n") for word in line.split()}


def _max_rss(a: Optional[str], b: str) -> str:
    return b if a is None or size_bytes(b) > size_bytes(a) else a
