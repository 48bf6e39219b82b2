"""The slurmrestd backend: the same rendered job script as sbatch gets, sent over HTTP.

slurmrestd reads no #SBATCH line and no $SBATCH_* variable: the job description is built here from
all three (job_options), with what sbatch itself would fill in (job name, working directory, the
exported environment). Status and accounting come from /slurm (slurmctld's view) and /slurmdb
(the accounting, with the steps' MaxRSS).
"""
from __future__ import annotations

import getpass
import shlex
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from stardock_hpc.errors import ExternalError, UsageError
from stardock_hpc.schedulers import rest_versions
from stardock_hpc.schedulers.base import Check, JobState, Scheduler, Submission, Submitted
from stardock_hpc.schedulers.job_env import without_session_credentials
from stardock_hpc.schedulers.job_options import RULES, describe_submission
from stardock_hpc.schedulers.rest_client import (
    OutcomeUnknown,
    RestClient,
    RestError,
    TokenSource,
    describe_errors,
    error_list,
)
from stardock_hpc.site import Site
from stardock_hpc.slurm.values import ACTIVE, array_task_ranges, duration

_CLIENTS: Dict[Tuple[str, str, str], RestClient] = {}
HELD = 2042                          # "Job is in held state, pending scheduler release": sbatch says nothing


def job_description(submission: Submission, missing: frozenset = frozenset()) -> Dict[str, Any]:
    """The REST request body for a submission (pure: unit-tested without a server)."""
    fields = describe_submission(submission, "rest", "slurmrestd", "current_working_directory")
    unknown = sorted(f for f in fields if f in missing)
    if unknown:
        by_field = {rule.rest: name for name, rule in RULES.items()}
        raise UsageError("this slurmrestd's API version cannot carry: "
                         + ", ".join(f"--{by_field.get(f, f)}" for f in unknown),
                         hint="use --backend sbatch, or a newer slurmrestd")
    fields["environment"] = without_session_credentials(fields["environment"], submission.named)
    return {"script": rest_versions.script_with_args(submission.script, submission.args), "job": fields}


def exit_code(wait_status: Optional[int]) -> Optional[str]:
    """sacct's ExitCode (exit:signal) from a raw wait status."""
    if wait_status is None or wait_status < 0:
        return None
    return f"{(wait_status >> 8) & 0xFF}:{wait_status & 0x7F}"


def db_exit_code(value: Any, state: str) -> Optional[str]:
    """The accounting's exit code, trusted only where rest_versions.DB_EXIT_CODE_UNRELIABLE allows:
    a signal, or 0 for a job that COMPLETED."""
    if not isinstance(value, dict):
        return None
    if value.get("status") == "SIGNALED":
        return f"0:{(value.get('signal') or {}).get('signal_id', 0)}"
    if value.get("status") == "SUCCESS":
        # a CANCELLED job's record is written when it is cancelled, before its script ends: sacct
        # shows 0:0 for it, whatever the script's exit (slurmctld keeps the script's, 143:0)
        trusted = state in ("COMPLETED", "CANCELLED") or not rest_versions.DB_EXIT_CODE_UNRELIABLE
        return "0:0" if trusted else None
    return None


def max_rss(step: Dict[str, Any]) -> Optional[str]:
    """A step's MaxRSS as sacct prints it (KiB with a K), from tres.requested.max."""
    for tres in ((step.get("tres") or {}).get("requested") or {}).get("max") or []:
        if tres.get("type") == "mem" and isinstance(tres.get("count"), int):
            return f"{tres['count'] // 1024}K"
    return None


def _key(job: Dict[str, Any]) -> Optional[str]:
    """A controller record as sacct names it; None for an array's emptied pending record (its
    tasks all split off or cancelled: sacct shows no such row)."""
    array_id, task = job.get("array_job_id"), job.get("array_task_id")
    if array_id and isinstance(task, int) and task < 4294967294:
        return f"{array_id}_{task}"
    if array_id and job.get("array_task_string"):
        return f"{array_id}_[{job['array_task_string']}]"
    if array_id:
        return None
    return str(job.get("job_id"))


def _db_key(job: Dict[str, Any]) -> str:
    array = job.get("array") or {}
    array_id, task = array.get("job_id"), array.get("task_id")
    if array_id and isinstance(task, int) and task < 4294967294:
        return f"{array_id}_{task}"
    if array_id and array.get("task"):
        return f"{array_id}_[{array_task_ranges(str(array['task']))}]"
    return str(job.get("job_id"))


class RestScheduler(Scheduler):
    name = "rest"

    def __init__(self, client: RestClient) -> None:
        self.client = client

    @classmethod
    def from_site(cls, site: Site) -> RestScheduler:
        if not site.scheduler.rest_url:
            raise UsageError(f"the rest backend needs scheduler.rest_url in the site config ({site.source})",
                             hint="e.g. scheduler: {backend: rest, rest_url: http://slurmrestd.example:6820}")
        key = (site.scheduler.rest_url, site.scheduler.rest_api, site.scheduler.rest_token)
        if key not in _CLIENTS:  # one token, discovery and connection pool per process (logs --follow)
            _CLIENTS[key] = RestClient(key[0], key[1], TokenSource(key[2]))
        return cls(_CLIENTS[key])

    @classmethod
    def site_checks(cls, site: Site) -> List[Check]:
        url = site.scheduler.rest_url
        return [("ok", "scheduler rest", url) if url else ("fail", "scheduler rest", "scheduler.rest_url is not set")]

    def describe(self) -> str:
        version = self.client.version
        return f"slurmrestd {self.client.url}, API {version.name} ({self.client.version_source})"

    def submit(self, submission: Submission) -> Submitted:
        version = self.client.version
        body = job_description(submission, version.missing)
        try:
            status, data = self.client.call("POST", version.submit_path(), body)
        except OutcomeUnknown as exc:
            raise OutcomeUnknown(exc.message, hint="look for the job before submitting again: squeue --me "
                                 f"--name={shlex.quote(body['job']['name'])}") from None
        errors = error_list(data)
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if status != 200 and any(code in rest_versions.LOST_ANSWER for code, _ in errors):
            raise OutcomeUnknown(f"slurmrestd sent the job but slurmctld's answer never came (HTTP {status}): "
                                 f"{describe_errors(errors)}; it may exist",
                                 hint="look for the job before submitting again: squeue --me "
                                 f"--name={shlex.quote(body['job']['name'])}")
        if status != 200 or not isinstance(job_id, int) or job_id <= 0:
            raise ExternalError(f"slurmrestd refused the job (HTTP {status}): {describe_errors(errors) or data}")
        said = [text for code, text in errors if code != HELD]
        if data.get("job_submit_user_msg"):
            said.append(str(data["job_submit_user_msg"]))
        return Submitted(str(job_id), None, str(job_id), "".join(f"sbatch: {m}\n" for m in said))

    # --- asking about jobs -----------------------------------------------------------------------
    def _controller(self, job_id: str) -> List[Dict[str, Any]]:
        status, data = self.client.call("GET", self.client.version.job_path(job_id))
        errors = error_list(data)
        if status == 200 and isinstance(data, dict) and isinstance(data.get("jobs"), list):
            return data["jobs"]
        if errors and all(code in rest_versions.NO_SUCH_JOB for code, _ in errors):
            return []  # slurmctld has forgotten it (MinJobAge): the accounting still knows
        raise RestError(f"slurmrestd could not show job {job_id} (HTTP {status}): {describe_errors(errors)}")

    def _accounting(self, job_id: str) -> List[Dict[str, Any]]:
        status, data = self.client.call("GET", self.client.version.db_job_path(job_id))
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if status == 200 and isinstance(jobs, list):
            return jobs
        return []  # no accounting (yet): records lag the job's end; slurmctld's view stands

    status_source = "controller+accounting"

    def status(self, job_ids: Sequence[str]) -> Dict[str, JobState]:
        states = self.live_status(job_ids)
        for job_id in job_ids:
            for job in self._accounting(job_id):
                self._merge(states, job)
        return states

    def find_jobs(self, name: str, since: float, until: float) -> Optional[List[str]]:
        try:
            status, data = self.client.call("GET", self.client.version.jobs_path())
        except RestError:
            return None
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if status != 200 or not isinstance(jobs, list):
            return None
        me = getpass.getuser()
        return sorted({str(j.get("array_job_id") or j.get("job_id")) for j in jobs
                       if j.get("name") == name and j.get("user_name") == me
                       and since <= (j.get("submit_time") or 0) <= until}, key=int)

    def live_status(self, job_ids: Sequence[str]) -> Dict[str, JobState]:
        states: Dict[str, JobState] = {}
        for job_id in job_ids:
            for job in self._controller(job_id):
                key = _key(job)
                if key is None:
                    continue
                start, end = job.get("start_time") or 0, job.get("end_time") or 0
                state = str(job.get("job_state", "UNKNOWN"))
                elapsed = (end if state not in ACTIVE else time.time()) - start if start else 0
                # sacct shows 0:0 for a cancelled job (its record is written at the cancel, before the
                # script ends); slurmctld keeps the script's status (143:0 after SIGTERM)
                code = "0:0" if state == "CANCELLED" else exit_code(job.get("exit_code"))
                states[key] = JobState(key, state, code, duration(elapsed), None, job.get("name"))
        return states

    @staticmethod
    def _merge(states: Dict[str, JobState], job: Dict[str, Any]) -> None:
        key = _db_key(job)
        if key not in states:  # a pending array's one record, under the name slurmctld gives it
            prefix = key.split("[")[0] + "[" if "_[" in key else f"{key}_["
            key = next((k for k in states if k.startswith(prefix)), key)
        current = str((job.get("state") or {}).get("current", "UNKNOWN"))
        if key not in states:
            states[key] = JobState(key, current, db_exit_code(job.get("exit_code"), current),
                                   duration((job.get("time") or {}).get("elapsed")), None, job.get("name"))
        st = states[key]
        if current == "CANCELLED" and st.state == current:  # sacct's exit code, not the script's
            st.exit_code = db_exit_code(job.get("exit_code"), current) or st.exit_code
        for step in job.get("steps") or []:
            step_name = str((step.get("step") or {}).get("name") or (step.get("step") or {}).get("id"))
            step_state = str(step.get("state") or "UNKNOWN")
            rss = max_rss(step)
            st.steps.append({"JobID": f"{key}.{step_name}", "JobName": step_name, "State": step_state,
                             "ExitCode": db_exit_code(step.get("exit_code"), step_state) or "",
                             "Elapsed": duration((step.get("time") or {}).get("elapsed")) or "",
                             "MaxRSS": rss or ""})
            if rss and (st.max_rss is None or int(rss[:-1]) > int(st.max_rss[:-1])):
                st.max_rss = rss

    def stdout_path(self, job_id: str) -> Optional[str]:
        for job in self._controller(job_id):
            if _key(job) == job_id or str(job.get("job_id")) == job_id:
                path = job.get("standard_output")
                return str(path) if path else None
        return None

    def cancel(self, job_id: str) -> None:
        status, data = self.client.call("DELETE", self.client.version.job_path(job_id))
        errors = error_list(data)
        if status != 200 or errors:
            raise ExternalError(f"slurmrestd could not cancel job {job_id} (HTTP {status}): "
                                f"{describe_errors(errors)}")
