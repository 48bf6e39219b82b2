"""`stardock site show|check`: the resolved site config and whether this machine fits it."""
from __future__ import annotations

from typing import Any, List, Tuple

import click

from stardock_hpc.commands.options import common_options, echo_json, report_checks, state
from stardock_hpc.diagnostics import run_checks
from stardock_hpc.site import Site, load_site, site_settings


def _flatten(data: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    if isinstance(data, dict) and data and prefix.split(".")[0] not in ("bases", "volumes"):
        out: List[Tuple[str, Any]] = []
        for key, value in data.items():
            out += _flatten(value, f"{prefix}{key}.")
        return out
    return [(prefix.rstrip("."), data)]


def _origin(site: Site, key: str) -> str:
    if site.path is None or key not in site.explicit:
        return "default"
    return site.path.name


@click.group(name="site")
def site_group() -> None:
    """Show or check the site config."""


@site_group.command()
@click.option("--json", "as_json", is_flag=True)
@common_options
def show(as_json: bool) -> None:
    """Print the resolved site config and where each value came from."""
    site = load_site(state().site)
    rows = [(key, value, _origin(site, key)) for key, value in _flatten(site_settings(site))]
    if as_json:
        echo_json({"source": site.source, "path": str(site.path) if site.path else None,
                   "settings": {k: {"value": v, "from": o} for k, v, o in rows}})
        return
    click.echo(f"site config: {site.source}")
    width = max(len(k) for k, _, _ in rows)
    for key, value, origin in rows:
        click.echo(f"  {key:<{width}}  {_show(value)}  ({origin})")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} -> {_show(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    return "(unset)" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


@site_group.command()
@click.option("--json", "as_json", is_flag=True)
@common_options
def check(as_json: bool) -> None:
    """Check the site config against this machine (paths, bases, engine, scheduler)."""
    report_checks(run_checks(load_site(state().site)), as_json, "site check")


