"""`stardock site show|check`: the resolved site config and whether this machine fits it."""
from __future__ import annotations

import getpass
import os
import shutil
from typing import Any, List, Tuple

import click

from stardock_hpc.cache import Cache
from stardock_hpc.catalog import load_catalog
from stardock_hpc.commands.options import common_options, echo_json, state
from stardock_hpc.errors import StardockError
from stardock_hpc.schedulers import scheduler_class
from stardock_hpc.site import Site, load_site, site_settings

Check = Tuple[str, str, str]  # (status ok|warn|fail, what, detail)


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


def run_checks(site: Site) -> List[Check]:
    checks: List[Check] = [("ok", "site config", site.source)]
    engine = shutil.which(site.engine)
    checks.append(("ok", f"engine {site.engine}", engine) if engine else
                  ("fail", f"engine {site.engine}", "not found on PATH"))
    cache = site.cache
    if cache.is_dir():
        checks.append(("ok" if os.access(cache, os.W_OK | os.X_OK) else "warn", "image cache",
                       f"{cache}" + ("" if os.access(cache, os.W_OK) else " (not writable by you: "
                                     "you can use images, not publish them)")))
        checks += Cache(cache, site.trusted_builders).layout_report()
    else:
        checks.append(("fail", "image cache", f"{cache} does not exist"))
    for name, base in site.bases.items():
        if base.archive is None:
            checks.append(("ok", f"base {name}", f"registry reference {base.ref} (not contacted)"))
        elif base.archive.is_file() and os.access(base.archive, os.R_OK):
            checks.append(("ok", f"base {name}", str(base.archive)))
        else:
            checks.append(("fail", f"base {name}", f"archive {base.archive} is missing or unreadable"))
    user = getpass.getuser()
    for name, volume in site.volumes.items():
        try:
            path = volume.host_path(user)
        except KeyError as exc:
            checks.append(("fail", f"volume {name}", f"cannot expand {volume.path}: {exc}"))
            continue
        if path.is_dir():
            checks.append(("ok", f"volume {name}", f"{path} ({volume.mode})"))
        else:
            checks.append(("warn" if "{" in volume.path else "fail", f"volume {name}",
                           f"{path} does not exist"))
    for cert in site.ca_certificates:
        checks.append(("ok", "CA certificate", str(cert)) if os.access(cert, os.R_OK) else
                      ("fail", "CA certificate", f"{cert} is missing or unreadable"))
    for directory in site.catalog:
        checks.append(("ok", "catalog", str(directory)) if directory.is_dir() else
                      ("fail", "catalog", f"{directory} does not exist"))
    try:
        catalog = load_catalog(site.catalog)
        checks.append(("ok", "catalog entries", f"{len(catalog.apps)} apps"))
    except StardockError as exc:
        checks.append(("fail", "catalog entries", str(exc)))
    checks += scheduler_class(site.scheduler.backend).site_checks(site)
    return checks


@site_group.command()
@click.option("--json", "as_json", is_flag=True)
@common_options
def check(as_json: bool) -> None:
    """Check the site config against this machine (paths, bases, engine, scheduler)."""
    report_checks(run_checks(load_site(state().site)), as_json, "site check")


def report_checks(checks: List[Check], as_json: bool, what: str) -> None:
    """Print checks (or JSON); any failure makes the command fail, after everything is shown."""
    if as_json:
        echo_json([{"status": s, "check": w, "detail": d} for s, w, d in checks])
    else:
        for status, name, detail in checks:
            click.echo(f"{status:<4}  {name}: {detail}")
    failed = [c for c in checks if c[0] == "fail"]
    if failed:
        raise SiteCheckFailed(f"{len(failed)} {what}(s) failed")


class SiteCheckFailed(StardockError):
    pass


COMMANDS = [site_group]
