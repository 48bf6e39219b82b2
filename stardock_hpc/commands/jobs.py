"""`stardock status|logs|cancel|outputs|shell`: the job lifecycle after submission (sbatch.py submits)."""
from __future__ import annotations

import codecs
import sys
import time
from pathlib import Path
from typing import Callable

import click

from stardock_hpc.commands.options import common_options, echo_json, state
from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.records import split_job_id
from stardock_hpc.jobs.report import cancel_job, job_report, pack_outputs, scheduler_for, status_rows
from stardock_hpc.jobs.shell import parse_exec_args, parse_shell_args, run_exec, run_shell
from stardock_hpc.safefs import printable
from stardock_hpc.site import load_site
from stardock_hpc.slurm.values import TERMINAL
from stardock_hpc.urls import redact_url, redact_urls_in


def warn(message: str) -> None:
    click.echo(f"stardock: warning: {message}", err=True)


@click.command()
@click.argument("jobs", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@common_options
def status(jobs, as_json: bool) -> None:
    """State, exit code, elapsed time, MaxRSS, image and mounts of your stardock jobs."""
    rows = status_rows(list(jobs), load_site(state().site), warn)
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
        for d in r.get("deliveries") or []:  # --deliver: where the outputs went, or why not
            done = f"delivered to {redact_url(d.get('where'))} (sha256 {str(d.get('sha256'))[:16]}...)" \
                if d.get("ok") else f"NOT delivered: {redact_urls_in(d.get('error'))}"
            click.echo(printable(f"{'':<12}output {redact_url(d.get('dest'))}: {done}"))


# What a terminal takes for commands rather than text: C0 controls but newline and tab (ESC starts
# the sequences that move the cursor, set the title, rewrite the screen or the clipboard), DEL, C1
# controls (U+009B is an 8-bit CSI), and the bidirectional overrides that show text reordered.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c not in (0x09, 0x0A)}
_CONTROLS.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})
_CONTROLS.update({c: f"\\u{c:04x}" for c in (0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def terminal_text(text: str) -> str:
    """A job's output as `stardock logs` shows it: every control sequence shown as escapes (\\x1b),
    newlines and tabs kept; the job writes what it likes, but it cannot steer the user's terminal."""
    return text.translate(_CONTROLS)


def _writer(raw: bool) -> Callable[[bytes, bool], None]:
    """Where `stardock logs` writes: the bytes as they are (--raw), or decoded (UTF-8, a character
    split between two reads kept for the next) and escaped."""
    if raw:
        def write_raw(chunk: bytes, _final: bool = False) -> None:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        return write_raw
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(chunk: bytes, final: bool = False) -> None:
        click.echo(terminal_text(decoder.decode(chunk, final=final)), nl=False)
    return write


@click.command()
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the job writes, until it ends.")
@click.option("--raw", is_flag=True, help="The output's bytes as they are, terminal control sequences included.")
@common_options
def logs(job: str, follow: bool, raw: bool) -> None:
    """Print a job's output file.

    Terminal control sequences in it are shown escaped (\\x1b...), newlines and tabs kept; --raw
    prints its bytes as they are."""
    split_job_id(job)
    site = load_site(state().site)
    where = scheduler_for(job, site).stdout_path(job)
    if where is None:
        raise UsageError(f"Slurm no longer knows where job {job} wrote its output",
                         hint="its output file is named by the job's --output (default slurm-JOBID.out)")
    path = Path(where)
    position = 0
    write = _writer(raw)
    while True:
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(position)
                chunk = fh.read()
                position += len(chunk)
                write(chunk, False)
        if not follow:
            write(b"", True)  # the end: a character left incomplete shows as U+FFFD
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
    split_job_id(job)
    cancel_job(job, load_site(state().site))
    click.echo(f"cancelled {job}")


@click.command()
@click.argument("job")
@click.option("-o", "--output", "directory", type=click.Path(file_okay=False, path_type=Path), default=".",
              help="Directory for the archive (default: here).")
@common_options
def outputs(job: str, directory: Path) -> None:
    """Pack a job's output directory (all tasks of an array) as JOB-outputs.tar.gz."""
    click.echo(str(pack_outputs(job, load_site(state().site), directory)))


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
    shell_req = parse_shell_args(list(argv), Path.cwd())
    site = load_site(shell_req.req.site or state().site)
    sys.exit(run_shell(shell_req, site, lambda line: click.echo(f"  | {line}", err=True)))


@click.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                              "help_option_names": ["-h", "--help"]})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def exec_cmd(argv) -> None:
    """Run one command in an environment, here, in its own container.

    \b
    stardock exec (--env SPEC | --image KEY) [--mount NAME[/SUB][:ro|:rw]]... [--engine E] -- CMD [ARGS]...

    On a login node, or as the tasks of a plain sbatch script's step (`srun stardock exec ...`:
    one container per task, with the job's output directory and the task's Slurm and PMI variables).
    """
    request = parse_exec_args(list(argv), Path.cwd())
    site = load_site(request.req.site or state().site)
    sys.exit(run_exec(request, site, lambda line: click.echo(f"  | {line}", err=True)))
