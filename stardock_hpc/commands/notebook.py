"""`stardock notebook`: JupyterLab in an environment as a Slurm job (jobs/notebook.py), and
`notebook list | connect JOBID | stop JOBID`."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Dict, List

import click

from stardock_hpc.commands.options import echo_json, state
from stardock_hpc.errors import UsageError
from stardock_hpc.urls import redact_url

USAGE = """JupyterLab in your environment as a Slurm job, next to the data, reached through this login node.

\b
stardock notebook (--env SPEC | --image KEY) [sbatch options] [--mount NAME[/SUB][:ro|:rw]]...
                  [--engine E] [--port PORT] [--wait SECONDS] [--json]
stardock notebook list [--json]
stardock notebook connect JOBID [--wait SECONDS] [--json]
stardock notebook stop JOBID

The server listens on a socket only you can open, never on a port; the command prints the ssh
tunnel to run on your own computer and the URL (with its token) to open there. The jupyterlab
catalog app is added to --env SPEC for the job; an --image must have it.
"""


def say(text: str) -> None:
    click.echo(f"stardock: {text}", err=True)


def show(info: Dict, ready: bool, as_json: bool) -> None:
    if as_json:
        echo_json({**info, "ready": ready})
        return
    if not ready:
        click.echo(f"Notebook job {info['job']} is {info['state'].lower()}; its server does not answer yet.")
        click.echo(f"When it runs: stardock notebook connect {info['job']}")
        return
    click.echo(f"JupyterLab runs in job {info['job']} on {info['node']}.")
    click.echo("On your own computer, run:")
    click.echo(f"  {info['tunnel']}")
    click.echo("and open:")
    click.echo(f"  {info['url']}")
    click.echo(f"Stop it with: stardock notebook stop {info['job']}")


def run(argv: List[str]) -> None:
    from stardock_hpc.jobs import notebook_login as notebook
    from stardock_hpc.site import load_site

    verb = argv[0] if argv else ""
    if verb in ("list", "connect", "stop"):
        opts = notebook.split_args(argv[1:])
        rest = opts.argv
        if verb == "list":
            if rest:
                raise UsageError(f"stardock notebook list: unexpected {shlex.join(rest)}")
            rows = notebook.listing(load_site(state().site))
            if opts.as_json:
                echo_json(rows)
            elif not rows:
                click.echo("no notebooks")
            for row in [] if opts.as_json else rows:
                here = "" if row["reachable_here"] else f"  (not from here: stardock notebook connect {row['job']})"
                # the token only where asked for (connect): a listing is shown, shared, pasted
                click.echo(f"{row['job']:<10}{row['state']:<12}{row['node'] or '-':<12}{redact_url(row['url'])}{here}")
            return
        if len(rest) != 1:
            raise UsageError(f"stardock notebook {verb}: give one JOBID")
        site = load_site(state().site)
        if verb == "stop":
            nb = notebook.stop(rest[0], site)
            click.echo(f"stopped notebook job {nb.job}")
            return
        nb, current, ready = notebook.connect(rest[0], site, opts.wait, say)
        show(nb.report(current), ready, opts.as_json)
        sys.exit(0 if ready else 1)
    nb, current, ready = notebook.start(argv, Path.cwd(), state().site, lambda line: say(f"  | {line}"), say)
    show(nb.report(current), ready, notebook.split_args(argv).as_json)


@click.command("notebook", help=USAGE, context_settings={"ignore_unknown_options": True,
                                                          "allow_interspersed_args": False,
                                                          "help_option_names": ["-h", "--help"]})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def notebook_cmd(argv) -> None:
    run(list(argv))
