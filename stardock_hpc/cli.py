"""The `stardock` command: parse, call, print. Errors are caught once, in main()."""
from __future__ import annotations

import sys
import traceback
from typing import Optional

import click

from stardock_hpc import __version__
from stardock_hpc.commands import doctor, envs, images, importcmd, jobs, sitecmd
from stardock_hpc.commands.options import State, common_options
from stardock_hpc.errors import EXIT_FAILED, EXIT_USAGE, StardockError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stardock")
@common_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Ship the software to the data: build a container environment from one YAML file and run
    it as a Slurm batch job, rootless."""
    ctx.ensure_object(State)


for module in (envs, images, importcmd, jobs, sitecmd, doctor):
    for command in module.COMMANDS:
        cli.add_command(command)


def main(argv: Optional[list] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="stardock", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("stardock: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except StardockError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"stardock: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("stardock: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a message
        if debug:
            traceback.print_exc()
        click.echo(f"stardock: internal error: {exc.__class__.__name__}: {exc}\n"
                   "  (run again with --debug for the traceback, and please report it)", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(0)
