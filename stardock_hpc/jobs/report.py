"""What stardock knows of a user's jobs: Slurm's view (through the job's own backend) joined with
stardock's records, and the job's outputs packed for taking home."""
from __future__ import annotations

import getpass
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from stardock_hpc.errors import ExternalError, StardockError, UsageError
from stardock_hpc.jobs.records import RecordStore, split_job_id
from stardock_hpc.jobs.userdirs import private_dir
from stardock_hpc.schedulers import get_scheduler
from stardock_hpc.schedulers.base import JobState, Scheduler
from stardock_hpc.site import Site
from stardock_hpc.slurm.values import ACTIVE, TERMINAL
from stardock_hpc.urls import redact_url, redact_urls_in


def user_records(site: Site) -> RecordStore:
    return RecordStore(private_dir(site.records, getpass.getuser(), os.getuid(),
                                   f"job records directory (records in {site.source})"))


def scheduler_for(job: str, site: Site) -> Scheduler:
    """The backend the job was submitted through (its record), else the site's."""
    base, _task = split_job_id(job)
    scheduler, _source = get_scheduler(None, site, (user_records(site).submit(base) or {}).get("backend"))
    return scheduler


# The wrapper writes its final record moments before Slurm sees the job end; the accounting may
# then take seconds (or, after a slurmdbd outage, much longer) to catch up. A record that says
# the job ended this long ago wins over an accounting that still calls it active.
RECORD_WINS_AFTER = 60.0


def slurm_view(scheduler: Scheduler, job: str, warn: Callable[[str], None],
               has_record: bool = True) -> Tuple[Dict[str, JobState], str]:
    """Slurm's states of a job and where they came from: the backend's usual source (sacct's
    accounting, or controller and accounting for REST), else slurmctld alone when the accounting
    does not answer, else nothing ("record": stardock's own records are all there is)."""
    try:
        return scheduler.status([job]), scheduler.status_source
    except StardockError as exc:
        if not has_record:
            raise  # stardock has nothing of this job to show instead: Slurm's own error is the answer
        first = exc.message.splitlines()[0]
    try:
        states = scheduler.live_status([job])
        warn(f"{first}; the states of job {job} come from slurmctld (no accounting: no MaxRSS, and jobs "
             "slurmctld has forgotten are missing)")
        return states, "controller"
    except StardockError as exc:
        warn(f"{first}; slurmctld did not answer either ({exc.message.splitlines()[0]}): job {job} as "
             "stardock's records last saw it")
        return {}, "record"


def job_report(job: str, site: Site, warn: Callable[[str], None] = lambda _m: None) -> List[Dict]:
    """One row per job or array task: Slurm's view joined with stardock's records; each row says
    where its state came from ("accounting", "controller", "controller+accounting" or "record").
    A record the wrapper never finished (the wrapper was killed) is settled here once Slurm says
    the job ended, and its image is no longer marked in use."""
    base, task = split_job_id(job)
    store = user_records(site)
    submit_rec = store.submit(base) or {}
    scheduler, _ = get_scheduler(None, site, submit_rec.get("backend"))
    states, source = slurm_view(scheduler, job, warn, bool(submit_rec))
    # Read after Slurm answered: the wrapper writes its final record before the job can end,
    # so a job Slurm calls finished has its exit status here.
    runs = store.runs(base)
    rows = []
    for job_id, st in sorted(states.items(), key=lambda kv: kv[0]):
        _, this_task = split_job_id(job_id) if "_" in job_id and "[" not in job_id else (job_id, None)
        if task and this_task != task:
            continue
        run = runs.get(this_task or "", {})
        state, exit_code, row_source = st.state, st.exit_code, source
        if state in ACTIVE and _ended_long_ago(run):
            state, exit_code, row_source = _recorded_state(run), f"{run['exit_code']}:0", "record"
        elif state in TERMINAL and run.get("state") == "running":
            run = settle(store, site, base, this_task, run, state)
        rows.append(_row(job_id, state, exit_code, st, submit_rec, run, row_source))
    if source == "record":
        for this_task, run in sorted(runs.items()):
            if not task or this_task == task:
                label = f"{base}_{this_task}" if this_task else base
                rows.append(_row(label, _recorded_state(run), None, JobState(label, ""), submit_rec, run, "record"))
        if not rows and submit_rec:  # submitted, never started as far as stardock knows
            rows.append(_row(job, "UNKNOWN", None, JobState(job, ""), submit_rec, {}, "record"))
    if not rows and not submit_rec:
        raise UsageError(f"no job {job} in Slurm's accounting or in your stardock records")
    return rows


def status_rows(jobs: List[str], site: Site, warn: Callable[[str], None]) -> List[Dict]:
    """`stardock status`: the rows of the jobs named (else the user's last 20), after adopting the
    jobs of lost submissions. Asked about one job, its error is the answer; in a listing, one
    job's trouble (a backend that cannot load, ...) is a warning and an UNKNOWN row."""
    adopt_lost_submissions(site, warn)
    ids = jobs or user_records(site).jobs()[-20:]
    rows: List[Dict] = []
    for job in ids:
        try:
            rows += job_report(job, site, warn)
        except StardockError as exc:
            if len(jobs) == 1:
                raise
            warn(f"job {job}: {exc.message.splitlines()[0]}")
            rows.append({"job": job, "state": "UNKNOWN", "exit_code": None, "elapsed": None, "max_rss": None,
                         "environment": None, "mounts": [], "source": None, "error": exc.message})
    return rows


def _ended_long_ago(run: Dict) -> bool:
    end = run.get("end")
    return isinstance(end, (int, float)) and isinstance(run.get("exit_code"), int) and \
        time.time() - end > RECORD_WINS_AFTER


def _recorded_state(run: Dict) -> str:
    if run.get("state") == "running" or not run:
        return "UNKNOWN"
    return "COMPLETED" if run.get("exit_code") == 0 else "FAILED"


def _row(job_id: str, state: str, exit_code: Optional[str], st: JobState, submit_rec: Dict, run: Dict,
         source: str) -> Dict:
    return {"job": job_id, "state": state, "exit_code": exit_code, "elapsed": st.elapsed,
            "max_rss": st.max_rss, "name": st.name or submit_rec.get("script"), "image": submit_rec.get("key"),
            "environment": submit_rec.get("name"), "engine": submit_rec.get("engine"),
            "mounts": submit_rec.get("mounts", []), "output": run.get("output"),
            "container_exit": run.get("exit_code"), "node": run.get("node"), "source": source,
            "provenance": submit_rec.get("provenance"), "inputs": _redacted(run.get("inputs"), ("url",)),
            "deliveries": _redacted(run.get("deliveries"), ("dest", "where")),
            "error": redact_urls_in(run["error"]) if run.get("error") else run.get("error")}


def _redacted(items: object, url_keys: Tuple[str, ...]) -> List[Dict]:
    """Inputs and deliveries as shown: their URLs redacted (the node writes them so; a record an
    older stardock wrote, or one edited by hand, is shown so too)."""
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            item = {**item, **{k: redact_url(item[k]) for k in url_keys if isinstance(item.get(k), str)}}
            if isinstance(item.get("error"), str):
                item["error"] = redact_urls_in(item["error"])
            out.append(item)
    return out


def settle(store: RecordStore, site: Site, base: str, task: Optional[str], run: Dict, state: str) -> Dict:
    """The record of a run whose wrapper died before writing its end (SIGKILL, a node crash):
    ended as Slurm says, and its image no longer marked in use. Best effort."""
    settled = {**run, "state": "ended", "slurm_state": state, "end": run.get("end") or time.time(),
               "note": "the node wrapper ended without writing this record; settled from Slurm's state"}
    try:
        store.write_run(base, task, settled)
    except OSError:
        return run
    key = (store.submit(base) or {}).get("key")
    if key:
        from stardock_hpc.cache import Cache
        Cache(site.cache, site.trusted_builders).forget_use(key, base)
    return settled


ADOPT_WINDOW = 3600.0   # a frozen slurmctld creates the job when it resumes: its submit time is later
GIVE_UP_AFTER = 86400.0  # a lost submission no job turned up for by then never reached Slurm


def adopt_lost_submissions(site: Site, warn: Callable[[str], None]) -> None:
    """Submissions whose answer was lost (jobs/submit.py): the job Slurm made of one, if any, is
    found by its name and submit time, and recorded as if sbatch had answered."""
    from stardock_hpc.cache import Cache
    store = user_records(site)
    cache = Cache(site.cache, site.trusted_builders)
    for stamp, rec in store.pending().items():
        entry_name = Path(str(rec.get("artifact", ""))).parent.name
        try:
            since, until = (float(t) for t in rec["window"])
            scheduler, _ = get_scheduler(None, site, rec.get("backend"))
            found = scheduler.find_jobs(str(rec["job_name"]), since - 5, until + ADOPT_WINDOW)
        except (StardockError, KeyError, TypeError, ValueError):
            continue  # Slurm cannot tell now: asked again next time
        if found is None:
            continue
        found = [j for j in found if store.submit(j) is None]
        if len(found) == 1:
            job = found[0]
            record = {k: v for k, v in rec.items() if k not in ("pending", "window", "job_name")}
            store.write_submit(job, {**record, "job": job, "adopted": True})
            cache.register_use_of(entry_name, job)
        elif found:
            warn(f"a submission whose answer was lost ({rec['job_name']}, {time.ctime(until)}) matches jobs "
                 f"{', '.join(found)}: not recorded; cancel the one too many")
            continue
        elif time.time() - until < GIVE_UP_AFTER:
            continue
        else:
            warn(f"the submission of {rec['job_name']} at {time.ctime(until)}, whose answer was lost, never "
                 "became a job")
        cache.forget_pending(entry_name, stamp)
        store.drop_pending(stamp)
        if len(found) == 1:
            warn(f"job {found[0]} ({rec['job_name']}), whose submission's answer was lost, exists: recorded")


def cancel_job(job: str, site: Site) -> None:
    """Cancel a job (or array task) that has not ended; a job that already ended, or a Slurm that
    does not answer, is an error that says so (nothing was cancelled)."""
    scheduler = scheduler_for(job, site)
    try:
        states = scheduler.status([job])
    except StardockError:
        states = {}  # whether it ended is unknown: the cancel itself answers (or says why it cannot)
    if states and all(st.state in TERMINAL for st in states.values()):
        ended = ", ".join(sorted({st.state for st in states.values()}))
        raise ExternalError(f"job {job} has already ended ({ended}): nothing to cancel")
    scheduler.cancel(job)


def pack_outputs(job: str, site: Site, directory: Path) -> Path:
    """The job's output directory (every task's, for an array) as directory/JOB-outputs.tar.gz,
    written whole or not at all."""
    base, task = split_job_id(job)
    runs = {t: r for t, r in user_records(site).runs(base).items() if not task or t == task}
    dirs = [(t, Path(r["output"])) for t, r in sorted(runs.items()) if r.get("output")]
    if not dirs:
        raise UsageError(f"job {job} has no output directory yet (it has not started, or is not a stardock job)")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{job}-outputs.tar.gz"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for _task, path in dirs:
                tar.add(path, arcname=path.name)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target
