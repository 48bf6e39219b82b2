"""What stardock knows of a user's jobs: Slurm's view (through the job's own backend) joined with
stardock's records, and the job's outputs packed for taking home."""
from __future__ import annotations

import getpass
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.records import RecordStore, split_job_id
from stardock_hpc.jobs.userdirs import private_dir
from stardock_hpc.schedulers import get_scheduler
from stardock_hpc.schedulers.base import Scheduler
from stardock_hpc.site import Site


def user_records(site: Site) -> RecordStore:
    return RecordStore(private_dir(site.records, getpass.getuser(), os.getuid(),
                                   f"job records directory (records in {site.source})"))


def scheduler_for(job: str, site: Site) -> Scheduler:
    """The backend the job was submitted through (its record), else the site's."""
    base, _task = split_job_id(job)
    scheduler, _source = get_scheduler(None, site, (user_records(site).submit(base) or {}).get("backend"))
    return scheduler


def job_report(job: str, site: Site) -> List[Dict]:
    """One row per job or array task: Slurm's view joined with stardock's records."""
    base, task = split_job_id(job)
    store = user_records(site)
    submit_rec = store.submit(base) or {}
    scheduler, _ = get_scheduler(None, site, submit_rec.get("backend"))
    states = scheduler.status([job])
    # Read after Slurm answered: the wrapper writes its final record before the job can end,
    # so a job Slurm calls finished has its exit status here.
    runs = store.runs(base)
    rows = []
    for job_id, st in sorted(states.items(), key=lambda kv: kv[0]):
        _, this_task = split_job_id(job_id) if "_" in job_id and "[" not in job_id else (job_id, None)
        if task and this_task != task:
            continue
        run = runs.get(this_task or "", {})
        rows.append({
            "job": job_id, "state": st.state, "exit_code": st.exit_code, "elapsed": st.elapsed,
            "max_rss": st.max_rss, "name": st.name, "image": submit_rec.get("key"),
            "environment": submit_rec.get("name"), "engine": submit_rec.get("engine"),
            "mounts": submit_rec.get("mounts", []), "output": run.get("output"),
            "container_exit": run.get("exit_code"), "node": run.get("node"),
        })
    if not rows and not submit_rec:
        raise UsageError(f"no job {job} in Slurm's accounting or in your stardock records")
    return rows


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
