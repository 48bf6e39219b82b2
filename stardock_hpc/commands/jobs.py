"""`stardock sbatch|status|logs|cancel|outputs`: the job lifecycle."""
from __future__ import annotations

import getpass
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import click

from stardock_hpc import proc
from stardock_hpc.commands.options import common_options, echo_json, state
from stardock_hpc.errors import UsageError
from stardock_hpc.inputs import site_and_catalog
from stardock_hpc.jobs.records import RecordStore, split_job_id
from stardock_hpc.jobs.request import SubmitRequest, apply_directives, parse_command_line
from stardock_hpc.jobs.script import WRAPPER
from stardock_hpc.jobs.submit import prepare, submit
from stardock_hpc.jobs.userdirs import private_dir
from stardock_hpc.resources import data_dir
from stardock_hpc.schedulers import get_scheduler
from stardock_hpc.site import Site, load_site
from stardock_hpc.slurm.script import Script
from stardock_hpc.slurm.values import TERMINAL


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                 "help_option_names": ["-h", "--help"]})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def sbatch(argv) -> None:
    """Submit a batch script to run inside a container environment, as sbatch would.

    \b
    stardock sbatch [sbatch options] (--env SPEC | --image KEY) [--mount NAME[/SUB][:ro|:rw]]...
                    [--engine E] [--backend B] [--pass-env VAR,...] [--dry-run] SCRIPT [ARGS...]
    stardock sbatch [...] --wrap CMD

    Every sbatch option, on the command line or as #SBATCH in the script, reaches Slurm as given.
    #STARDOCK lines in the script take stardock's options. The script runs inside the container,
    with the site's volumes under the mount root and a per-job output directory.
    """
    cwd = Path.cwd()
    req = parse_command_line(list(argv), cwd)
    req = apply_directives(req)
    site, catalog = site_and_catalog(req.site or state().site)
    parsable = req.has("parsable")

    def on_line(line: str) -> None:
        click.echo(f"  | {line}", err=True)

    prepared = prepare(req, site, catalog, None if parsable else on_line,
                       say=lambda msg: click.echo(f"stardock: {msg}", err=True))
    if req.dry_run:
        click.echo(prepared.script, nl=False)
        return
    scheduler, source = get_scheduler(req.backend, site)
    if req.debug:
        detail = getattr(scheduler, "describe", None)  # the REST backend: URL, API version and why
        click.echo(f"stardock: debug: backend {scheduler.name} (from {source})"
                   + (f": {detail()}" if detail else ""), err=True)
    submitted = submit(req, prepared, site, scheduler, cwd, dict(os.environ),  # sbatch exports it by default
                       warn=lambda msg: click.echo(f"stardock: warning: {msg}", err=True))
    if not submitted.job_id:
        click.echo(submitted.output, nl=False)
        click.echo(submitted.messages, nl=False, err=True)
    elif req.has("quiet"):
        pass
    elif parsable:
        click.echo(submitted.output)
    else:
        where = f" on cluster {submitted.cluster}" if submitted.cluster else ""
        click.echo(f"Submitted batch job {submitted.job_id}{where}")


def _store(site: Site) -> RecordStore:
    return RecordStore(private_dir(site.records, getpass.getuser(), os.getuid(),
                                   f"job records directory (records in {site.source})"))


def job_report(job: str, site: Site) -> List[Dict]:
    """One row per job or array task: Slurm's view joined with stardock's records."""
    base, task = split_job_id(job)
    store = _store(site)
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


@click.command()
@click.argument("jobs", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@common_options
def status(jobs, as_json: bool) -> None:
    """State, exit code, elapsed time, MaxRSS, image and mounts of your stardock jobs."""
    site = load_site(state().site)
    ids = list(jobs) or _store(site).jobs()[-20:]
    rows = [row for job in ids for row in job_report(job, site)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no stardock jobs")
        return
    click.echo(f"{'JOBID':<12}{'STATE':<15}{'EXIT':<7}{'ELAPSED':<11}{'MAXRSS':<10}{'ENVIRONMENT':<22}MOUNTS")
    for r in rows:
        mounts = ",".join(f"{m['volume']}:{m['mode']}" for m in r["mounts"]) or "-"
        click.echo(f"{r['job']:<12}{r['state']:<15}{r['exit_code'] or '':<7}{r['elapsed'] or '':<11}"
                   f"{r['max_rss'] or '-':<10}{(r['environment'] or '-')[:21]:<22}{mounts}")


@click.command()
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the job writes, until it ends.")
@common_options
def logs(job: str, follow: bool) -> None:
    """Print a job's output file."""
    base, _task = split_job_id(job)
    site = load_site(state().site)
    scheduler, _ = get_scheduler(None, site, (_store(site).submit(base) or {}).get("backend"))
    where = scheduler.stdout_path(job)
    if where is None:
        raise UsageError(f"Slurm no longer knows where job {job} wrote its output",
                         hint="its output file is named by the job's --output (default slurm-JOBID.out)")
    path = Path(where)
    position = 0
    while True:
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(position)
                chunk = fh.read()
                position += len(chunk)
                click.echo(chunk.decode(errors="replace"), nl=False)
        if not follow:
            return
        rows = job_report(job, site)
        if rows and all(r["state"] in TERMINAL for r in rows):
            follow = False  # one last read, then stop
        else:
            time.sleep(1)


@click.command()
@click.argument("job")
@common_options
def cancel(job: str) -> None:
    """Cancel a job; its container is stopped and nothing of it remains."""
    base, _task = split_job_id(job)
    site = load_site(state().site)
    scheduler, _ = get_scheduler(None, site, (_store(site).submit(base) or {}).get("backend"))
    scheduler.cancel(job)
    click.echo(f"cancelled {job}")


@click.command()
@click.argument("job")
@click.option("-o", "--output", "directory", type=click.Path(file_okay=False, path_type=Path), default=".",
              help="Directory for the archive (default: here).")
@common_options
def outputs(job: str, directory: Path) -> None:
    """Pack a job's output directory (all tasks of an array) as JOB-outputs.tar.gz."""
    base, task = split_job_id(job)
    site = load_site(state().site)
    store = _store(site)
    runs = {t: r for t, r in store.runs(base).items() if not task or t == task}
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
    click.echo(str(target))


SHELL_OWN = ("env", "image", "mount", "engine", "site")


def parse_shell_args(argv: List[str], cwd: Path) -> tuple:
    """stardock's options out, srun's options (as given) before `--`, the command after it."""
    req = SubmitRequest(script=Script(None, "#!/bin/sh\n", []))
    srun: List[str] = []
    command: List[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            command = argv[i + 1:]
            break
        word, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if token == "--debug":
            req.debug = True
        elif word in SHELL_OWN:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"stardock shell: --{word} needs a value")
                value, i = argv[i + 1], i + 1
            if word == "env":
                req.spec = cwd / value
            elif word == "image":
                req.image = value
            elif word == "mount":
                req.mounts.append(value)
            elif word == "site":
                req.site = value
            else:
                req.engine = value
        else:
            srun.append(token)
        i += 1
    return req, srun, command or ["/bin/bash"]


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                 "help_option_names": ["-h", "--help"]})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def shell(argv) -> None:
    """An interactive shell in an environment, on a compute node (srun --pty).

    \b
    stardock shell (--env SPEC | --image KEY) [--mount NAME[/SUB][:ro|:rw]]... [--engine E]
                   [srun options] [-- COMMAND...]

    StarDock's SSH access, without sshd or passwords: Slurm's own authentication.
    """
    cwd = Path.cwd()
    req, srun, command = parse_shell_args(list(argv), cwd)
    site, catalog = site_and_catalog(req.site or state().site)
    prepared = prepare(req, site, catalog, lambda line: click.echo(f"  | {line}", err=True))
    prepared.spec.command = command
    prepared.spec.interactive = True
    fd, spec_file = tempfile.mkstemp(prefix="shell-", suffix=".json", dir=prepared.records)
    with os.fdopen(fd, "w") as fh:
        fh.write(prepared.spec.to_json())
    try:
        environ = dict(os.environ)
        if site.scheduler.partition and "SLURM_PARTITION" not in environ:
            environ["SLURM_PARTITION"] = site.scheduler.partition  # the site's default; -p still wins
        code = proc.run_interactive(["srun", "--pty", *srun, sys.executable,
                                     data_dir("wrappers") / WRAPPER, "--spec-file", spec_file], env=environ)
    finally:
        os.unlink(spec_file)
    sys.exit(code)


COMMANDS = [sbatch, status, logs, cancel, outputs, shell]
