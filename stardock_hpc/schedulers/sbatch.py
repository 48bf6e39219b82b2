"""The sbatch CLI backend: sbatch to submit, sacct/squeue to ask, scancel to cancel."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Dict, Sequence

from stardock_hpc import proc
from stardock_hpc.errors import ExternalError
from stardock_hpc.schedulers.base import JobState, Scheduler, Submission, Submitted

SACCT_FIELDS = ["JobID", "JobName", "State", "ExitCode", "Elapsed", "MaxRSS"]
PARSABLE_RE = re.compile(r"^([0-9]+)(?:;(\S+))?\s*$")


class SbatchScheduler(Scheduler):
    name = "sbatch"

    def submit(self, submission: Submission) -> Submitted:
        # --quiet would also silence the job id we need; the command line honours it instead
        tokens = [t for o in submission.options if o.name != "quiet" for t in o.tokens]
        # sbatch names a job after its script file unless told otherwise (and %x expands to that
        # name): the job script gets the batch script's own file name, in a private directory.
        directory = tempfile.mkdtemp(prefix="stardock-job-")
        path = os.path.join(directory, submission.script_name or "job.sh")
        try:
            with open(path, "w") as fh:
                fh.write(submission.script)
            result = proc.run(["sbatch", "--parsable", *tokens, path, *submission.args],
                              cwd=submission.cwd, env=submission.environ, check=False)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if not result.ok:
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

    def cancel(self, job_id: str) -> None:
        out = proc.run(["scancel", job_id], check=False)
        if not out.ok:
            raise ExternalError(f"scancel {job_id} failed: {out.tail()}")


def _bytes(text: str) -> float:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text or 0)


def _max_rss(a, b: str) -> str:
    return b if a is None or _bytes(b) > _bytes(a) else a

