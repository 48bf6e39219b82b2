"""What every command shares: the --site and --debug options and the state they set, JSON output,
and printing checks."""
from __future__ import annotations

import json
from typing import Any, List, Optional

import click

from stardock_hpc import proc
from stardock_hpc.errors import StardockError
from stardock_hpc.schedulers.base import Check


class State:
    """What the global options set; every command reads it from the click context."""

    def __init__(self) -> None:
        self.site: Optional[str] = None
        self.debug = False


def _set_site(ctx: click.Context, _param: click.Parameter, value: Optional[str]) -> None:
    if value is not None:
        ctx.ensure_object(State).site = value


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(State).debug = True
        proc.enable_debug()


def common_options(f):
    """--site and --debug, accepted before or after the subcommand name."""
    f = click.option("--site", "site", metavar="FILE", expose_value=False, callback=_set_site,
                     is_eager=True, help="Site config (default: $STARDOCK_SITE_CONFIG, "
                     "then /etc/stardock/site.yaml).")(f)
    f = click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug,
                     is_eager=True, help="Show debug logs and tracebacks.")(f)
    return f


def state() -> State:
    return click.get_current_context().ensure_object(State)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def report_checks(checks: List[Check], as_json: bool, what: str) -> None:
    """Print checks (or JSON); any failure makes the command fail, after everything is shown."""
    if as_json:
        echo_json([{"status": s, "check": w, "detail": d} for s, w, d in checks])
    else:
        for status, name, detail in checks:
            click.echo(f"{status:<4}  {name}: {detail}")
    failed = [c for c in checks if c[0] == "fail"]
    if failed:
        raise ChecksFailed(f"{len(failed)} {what}(s) failed")


class ChecksFailed(StardockError):
    pass
