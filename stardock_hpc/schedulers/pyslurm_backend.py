"""The pyslurm backend: Slurm's C library through pyslurm (the optional extra `stardock-hpc[pyslurm]`).

Written against pyslurm's JobSubmitDescription / Job.load / db.Job.load API (the same from 22.5 to
25.11). pyslurm must be built for the cluster's Slurm version; PyPI carries only the newest line, so
on most clusters the site builds it (the testbed cannot: its Slurm is 22.05). pyslurm is imported
inside the methods, and only when a Slurm config exists: libslurm ends the whole process when it
finds none. This module is named so that it cannot shadow the pyslurm package.

The job description comes from the same option table as the REST backend (job_options.RULES,
its pyslurm column): the #SBATCH lines, $SBATCH_* and the command line, in sbatch's precedence.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from stardock_hpc.errors import ExternalError, UsageError
from stardock_hpc.schedulers.base import JobState, Scheduler, Submission, Submitted
from stardock_hpc.schedulers.job_options import describe_submission
from stardock_hpc.slurm.values import duration

SYSTEM_SLURM_CONF = Path("/etc/slurm/slurm.conf")


def slurm_conf(environ: Optional[Dict[str, str]] = None) -> Optional[Path]:
    """The Slurm config libslurm will read, or None when there is none."""
    env = os.environ if environ is None else environ
    path = Path(env["SLURM_CONF"]) if env.get("SLURM_CONF") else SYSTEM_SLURM_CONF
    return path if path.is_file() else None


def load_pyslurm() -> Any:
    """The pyslurm module, or a clear error (never the process exit an unconfigured import causes)."""
    if slurm_conf() is None:
        raise ExternalError("the pyslurm backend needs a Slurm config: $SLURM_CONF is not set to a file and "
                            f"{SYSTEM_SLURM_CONF} does not exist (importing pyslurm without one ends the program)",
                            hint="use --backend sbatch or rest on this machine")
    try:
        import pyslurm
    except ImportError as exc:
        raise ExternalError(f"the pyslurm backend needs pyslurm, built for this cluster's Slurm version ({exc})",
                            hint="pip install 'stardock-hpc[pyslurm]', or use --backend sbatch or rest") from None
    return pyslurm


def submit_attributes(submission: Submission) -> Dict[str, Any]:
    """JobSubmitDescription's attributes for a submission, without the script (pure: unit-tested
    where pyslurm cannot be installed)."""
    return describe_submission(submission, "pyslurm", "pyslurm", "working_directory")


def _exit_code(code: Any, signal: Any) -> Optional[str]:
    return f"{code}:{signal or 0}" if isinstance(code, int) else None


class PyslurmScheduler(Scheduler):
    name = "pyslurm"

    def submit(self, submission: Submission) -> Submitted:
        attrs = submit_attributes(submission)
        pyslurm = load_pyslurm()
        # pyslurm takes arguments only with a script file; the file keeps sbatch's name (%x)
        try:
            with self.script_file(submission) as path:
                desc = pyslurm.JobSubmitDescription(script=path, script_args=list(submission.args), **attrs)
                job_id = desc.submit()
        except pyslurm.RPCError as exc:
            raise ExternalError(f"Slurm refused the job: {exc}") from None
        except ValueError as exc:
            raise UsageError(f"pyslurm refused the job description: {exc}") from None
        return Submitted(str(job_id), None, str(job_id))

    def status(self, job_ids: Sequence[str]) -> Dict[str, JobState]:
        pyslurm = load_pyslurm()
        states: Dict[str, JobState] = {}
        for job_id in job_ids:
            number = int(job_id.split("_")[0])
            try:
                job = pyslurm.Job.load(number)
                states[job_id] = JobState(job_id, str(job.state), _exit_code(job.exit_code, job.exit_code_signal),
                                          None, None, job.name)
            except pyslurm.RPCError:
                pass  # slurmctld has forgotten it: the accounting still knows
            try:
                record = pyslurm.db.Job.load(number)
            except pyslurm.RPCError:
                continue
            st = states.setdefault(job_id, JobState(job_id, str(record.state),
                                                    _exit_code(record.exit_code, record.exit_code_signal),
                                                    None, None, record.name))
            st.elapsed = duration(record.elapsed_time)
            rss = getattr(record.stats, "max_resident_memory", None)
            st.max_rss = f"{rss // 1024}K" if isinstance(rss, int) and rss else None
            for step_id, step in (record.steps or {}).items():
                step_rss = getattr(step.stats, "max_resident_memory", None)
                st.steps.append({"JobID": f"{job_id}.{step_id}", "JobName": str(step_id), "State": str(step.state),
                                 "ExitCode": _exit_code(step.exit_code, getattr(step, "exit_code_signal", 0)) or "",
                                 "Elapsed": duration(getattr(step, "elapsed_time", None)) or "",
                                 "MaxRSS": f"{step_rss // 1024}K" if isinstance(step_rss, int) and step_rss else ""})
        return states

    def stdout_path(self, job_id: str) -> Optional[str]:
        pyslurm = load_pyslurm()
        try:
            path = pyslurm.Job.load(int(job_id.split("_")[0])).standard_output
        except pyslurm.RPCError:
            return None
        return str(path) if path else None

    def cancel(self, job_id: str) -> None:
        if not job_id.isdigit():
            raise UsageError(f"the pyslurm backend cancels whole jobs, not {job_id}",
                             hint=f"scancel {job_id}")
        pyslurm = load_pyslurm()
        try:
            pyslurm.Job(int(job_id)).cancel()
        except pyslurm.RPCError as exc:
            raise ExternalError(f"Slurm could not cancel job {job_id}: {exc}") from None
