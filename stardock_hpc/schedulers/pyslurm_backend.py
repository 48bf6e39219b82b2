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

import ctypes
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from stardock_hpc.errors import ExternalError, OutcomeUnknown, UsageError
from stardock_hpc.schedulers.base import JobState, Scheduler, Submission, Submitted
from stardock_hpc.schedulers.job_env import SESSION_CREDENTIALS, without_session_credentials
from stardock_hpc.schedulers.job_options import describe_submission
from stardock_hpc.slurm.values import LOST_ANSWER, array_task_ranges, duration

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
    attrs = describe_submission(submission, "pyslurm", "pyslurm", "working_directory")
    attrs["environment"] = without_session_credentials(attrs["environment"], submission.named)
    ntasks = int(attrs.get("ntasks") or 1)
    if "nodes" not in attrs and ntasks > 1:
        # pyslurm sends a missing --nodes as exactly one node (1-1), where sbatch lets Slurm spread
        # the tasks: at most one node per task is what sbatch's "no maximum" comes to
        attrs["nodes"] = {"min": 1, "max": ntasks}
    if attrs.get("overcommit"):
        # sbatch asks for one CPU per node then (min_cpus); pyslurm 22.5 computes it, then overwrites
        # it with ntasks x cpus_per_task, unless min_cpus_per_node (which it sends as min_cpus) is set
        nodes = attrs.get("nodes")
        low = nodes["min"] if isinstance(nodes, dict) else int(str(nodes or "1").split("-")[0])
        attrs["min_cpus_per_node"] = max(low, 1)
    return attrs


@contextmanager
def _credentials_hidden(named: Sequence[str]) -> Iterator[None]:
    """pyslurm 22.5 adds every SLURM_* variable of this process to the job's environment, whatever
    environment it is given: the session's credentials (SLURM_JWT) leave this process's environment
    while it submits, unless named (libslurm then authenticates as the Slurm config says: munge)."""
    hidden = {k: os.environ.pop(k) for k in SESSION_CREDENTIALS if k in os.environ and k not in named}
    try:
        yield
    finally:
        os.environ.update(hidden)


def _exit_code(code: Any, signal: Any) -> Optional[str]:
    return f"{code}:{signal or 0}" if isinstance(code, int) else None


def _rpc_message(exc: Exception) -> str:
    """libslurm's reason; it says "Success" (errno 0) when it never reached slurmctld (an
    unresolvable or unreachable controller)."""
    text = str(exc).strip()
    if text in ("", "Success", "Unspecified error"):
        return ("libslurm could not reach slurmctld and gave no reason (is SlurmctldHost resolvable "
                "from here, and slurmctld up?)")
    return text


def _label(job: Any) -> str:
    """A job (controller or accounting record) as sacct names it. pyslurm reads array task 0 as
    None (its u32_parse takes 0 for 'not set'): an array record with no task and nothing waiting
    is task 0."""
    if not job.array_id:
        return str(job.id)
    if job.array_tasks_waiting:
        limit = f"%{job.array_tasks_parallel}" if job.array_tasks_parallel else ""
        return f"{job.array_id}_[{array_task_ranges(job.array_tasks_waiting)}{limit}]"
    return f"{job.array_id}_{job.array_task_id or 0}"


def _loaded_libslurm() -> str:
    """The libslurm this process loaded with pyslurm (the one built for this cluster's Slurm)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "/libslurm" in path and ".so" in path:
                return path
    raise ExternalError("pyslurm is loaded but no libslurm is mapped in this process")


@dataclass(frozen=True)
class _JobRef:
    number: int
    task: Optional[str]           # an array task id as given (123_4), or None for the whole job

    @classmethod
    def parse(cls, job_id: str) -> _JobRef:
        number, _, task = job_id.partition("_")
        if not number.isdigit() or (task and not task.isdigit()):
            raise UsageError(f"{job_id!r} is not a job id (JOB or JOB_TASK)")
        return cls(int(number), task or None)

    def matches(self, job: Any) -> bool:
        if self.task is None:
            return job.id == self.number or job.array_id == self.number
        return _label(job) == f"{self.number}_{self.task}"

    def matches_label(self, label: str) -> bool:
        if self.task is None:
            return label == str(self.number) or label.startswith(f"{self.number}_")
        return label == f"{self.number}_{self.task}"


class PyslurmScheduler(Scheduler):
    name = "pyslurm"

    def submit(self, submission: Submission) -> Submitted:
        attrs = submit_attributes(submission)
        if "" in submission.args:
            raise UsageError("the pyslurm backend cannot pass an empty argument to the job script: pyslurm 22.5 "
                             "sends it as a null string, which ends the job's argument list there",
                             hint="use --backend sbatch or rest for this job")
        pyslurm = load_pyslurm()
        # pyslurm takes arguments only with a script file; the file keeps sbatch's name (%x). The
        # script itself goes first, as sbatch sends it (the job's Command; without it pyslurm sends no argv).
        try:
            with self.script_file(submission) as path, _credentials_hidden(submission.named):
                desc = pyslurm.JobSubmitDescription(script=path, script_args=[path, *submission.args], **attrs)
                job_id = desc.submit()
        except pyslurm.RPCError as exc:
            if any(sign in str(exc) for sign in LOST_ANSWER):
                raise OutcomeUnknown(f"the job was sent but slurmctld's answer never came ({exc}): it may exist") \
                    from None
            raise ExternalError(f"Slurm refused the job: {_rpc_message(exc)}") from None
        except ValueError as exc:
            raise UsageError(f"pyslurm refused the job description: {exc}") from None
        return Submitted(str(job_id), None, str(job_id))

    def status(self, job_ids: Sequence[str]) -> Dict[str, JobState]:
        """As sacct answers (the sbatch backend's source): one row per array task, keyed as sacct
        names it (123, 123_4, 123_[5-7] for tasks still pending together); the accounting first,
        the controller for jobs the accounting has not recorded yet."""
        pyslurm = load_pyslurm()
        wanted = [_JobRef.parse(j) for j in job_ids]
        if not wanted:
            return {}
        states: Dict[str, JobState] = {}
        try:
            db_jobs = pyslurm.db.Jobs.load(pyslurm.db.JobFilter(ids=sorted({w.number for w in wanted})))
        except pyslurm.RPCError as exc:
            raise ExternalError(f"the Slurm accounting (slurmdbd) did not answer: {_rpc_message(exc)}") from None
        for record in db_jobs.values():
            label = _label(record)
            if any(w.matches(record) for w in wanted):
                states[label] = self._db_state(label, record)
        missing = [w for w in wanted if not any(w.matches_label(label) for label in states)]
        if missing:
            states.update(self._controller(missing))
        return states

    def find_jobs(self, name: str, since: float, until: float) -> Optional[List[str]]:
        pyslurm = load_pyslurm()
        try:
            live = pyslurm.Jobs.load()
        except pyslurm.RPCError:
            return None
        return sorted({str(job.array_id or job.id) for job in live.values()
                       if job.name == name and job.user_id == os.getuid()
                       and since <= (job.submit_time or 0) <= until}, key=int)

    def live_status(self, job_ids: Sequence[str]) -> Dict[str, JobState]:
        return self._controller([_JobRef.parse(j) for j in job_ids])

    @staticmethod
    def _controller(wanted: Sequence[_JobRef]) -> Dict[str, JobState]:
        pyslurm = load_pyslurm()
        try:
            live = pyslurm.Jobs.load()
        except pyslurm.RPCError as exc:
            raise ExternalError(f"slurmctld did not answer: {_rpc_message(exc)}") from None
        states: Dict[str, JobState] = {}
        for job in live.values():
            if any(w.matches(job) for w in wanted):
                label = _label(job)
                states[label] = JobState(label, str(job.state), _exit_code(job.exit_code, job.exit_code_signal),
                                         None, None, job.name)
        return states

    @staticmethod
    def _db_state(label: str, record: Any) -> JobState:
        st = JobState(label, str(record.state), _exit_code(record.exit_code, record.exit_code_signal),
                      duration(record.elapsed_time or 0), None, record.name)
        rss = getattr(record.stats, "max_resident_memory", None)
        st.max_rss = f"{rss // 1024}K" if isinstance(rss, int) and rss else None
        for step_id, step in (record.steps or {}).items():
            step_rss = getattr(step.stats, "max_resident_memory", None)
            st.steps.append({"JobID": f"{label}.{step_id}", "JobName": str(step_id), "State": str(step.state),
                             "ExitCode": _exit_code(step.exit_code, getattr(step, "exit_code_signal", 0)) or "",
                             "Elapsed": duration(getattr(step, "elapsed_time", None)) or "",
                             "MaxRSS": f"{step_rss // 1024}K" if isinstance(step_rss, int) and step_rss else ""})
        return st

    def stdout_path(self, job_id: str) -> Optional[str]:
        pyslurm = load_pyslurm()
        try:
            path = pyslurm.Job.load(int(job_id.split("_")[0])).standard_output
        except pyslurm.RPCError:
            return None
        return str(path) if path else None

    def cancel(self, job_id: str) -> None:
        """As scancel: a job, a whole array, or one array task (JOB_TASK). pyslurm 22.5 has no call
        for an array task, so this one goes to the same libslurm pyslurm loaded (slurm_kill_job2)."""
        ref = _JobRef.parse(job_id)
        pyslurm = load_pyslurm()
        if ref.task is None:
            try:
                pyslurm.Job(ref.number).cancel()
            except pyslurm.RPCError as exc:
                raise ExternalError(f"Slurm could not cancel job {job_id}: {_rpc_message(exc)}") from None
            return
        lib = ctypes.CDLL(_loaded_libslurm())
        lib.slurm_kill_job2.argtypes = [ctypes.c_char_p, ctypes.c_uint16, ctypes.c_uint16, ctypes.c_char_p]
        lib.slurm_kill_job2.restype = ctypes.c_int
        if lib.slurm_kill_job2(job_id.encode(), signal.SIGKILL, 0, None) != 0:
            errno = lib.slurm_get_errno()
            lib.slurm_strerror.restype = ctypes.c_char_p
            raise ExternalError(f"Slurm could not cancel job {job_id}: {lib.slurm_strerror(errno).decode()}")
