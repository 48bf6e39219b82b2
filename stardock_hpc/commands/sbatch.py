"""`stardock sbatch`: submit a batch script to run in an environment, as sbatch would.

The hot command. It takes its arguments unparsed (they are sbatch's, and stardock's own beside
them), so it needs nothing of click: main() calls `run` directly and only `stardock sbatch --help`
goes through click. It imports only what a submission uses (the builder only for --env, and only
when it must build).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, List, Optional

from stardock_hpc import proc
from stardock_hpc.jobs.request import SubmitRequest, apply_directives, parse_command_line
from stardock_hpc.jobs.submit import Prepared, prepare, submit
from stardock_hpc.schedulers import get_scheduler
from stardock_hpc.site import load_site

USAGE = """Submit a batch script to run inside a container environment, as sbatch would.

\b
stardock sbatch [sbatch options] (--env SPEC [--locked] | --image KEY) [--mount NAME[/SUB][:ro|:rw]]...
                [--engine E] [--backend B] [--pass-env VAR,...] [--dry-run] SCRIPT [ARGS...]
stardock sbatch [...] --wrap CMD

Every sbatch option, on the command line or as #SBATCH in the script, reaches Slurm as given.
#STARDOCK lines in the script take stardock's options. The script runs inside the container,
with the site's volumes under the mount root and a per-job output directory.
"""


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(argv: List[str], site_option: Optional[str] = None) -> None:
    cwd = Path.cwd()
    req = apply_directives(parse_command_line(argv, cwd))
    if req.debug:
        proc.enable_debug()
    site = load_site(req.site or site_option)
    parsable = req.has("parsable")
    prepared = prepare(req, site, None if parsable else (lambda line: err(f"  | {line}")),
                       say=lambda msg: err(f"stardock: {msg}"))
    if req.dry_run:
        sys.stdout.write(shown_script(req, prepared))
        return
    scheduler, source = get_scheduler(req.backend, site)
    if req.debug:
        detail = getattr(scheduler, "describe", None)  # the REST backend: URL, API version and why
        err(f"stardock: debug: backend {scheduler.name} (from {source})" + (f": {detail()}" if detail else ""))
    submitted = submit(req, prepared, site, scheduler, cwd, dict(os.environ),  # sbatch exports it by default
                       warn=lambda msg: err(f"stardock: warning: {msg}"))
    if not submitted.job_id:
        sys.stdout.write(submitted.output)
        sys.stderr.write(submitted.messages)
    elif req.has("quiet"):
        pass
    elif parsable:
        print(submitted.output)
    else:
        where = f" on cluster {submitted.cluster}" if submitted.cluster else ""
        print(f"Submitted batch job {submitted.job_id}{where}")


def shown_script(req: SubmitRequest, prepared: Prepared) -> str:
    """The job script as --dry-run prints it: the one submitted, but with the URLs of --input and
    --deliver redacted (their credentials stay out of whatever the output is pasted into)."""
    launch = prepared.launch
    if not launch.inputs and not launch.deliver:
        return prepared.script
    from dataclasses import replace

    from stardock_hpc.jobs.script import render_job_script
    from stardock_hpc.jobs.staging import redacted_json

    assert req.script is not None
    return render_job_script(req.script, replace(launch, inputs=redacted_json(launch.inputs),
                                                 deliver=redacted_json(launch.deliver)))


def click_command() -> Any:
    """The same command for click (`stardock sbatch --help`, `stardock --site F sbatch ...`)."""
    import click

    from stardock_hpc.commands.options import state

    @click.command("sbatch", help=USAGE, context_settings={"ignore_unknown_options": True,
                                                            "allow_interspersed_args": False,
                                                            "help_option_names": ["-h", "--help"]})
    @click.argument("argv", nargs=-1, type=click.UNPROCESSED)
    def sbatch(argv) -> None:
        run(list(argv), state().site)

    return sbatch
