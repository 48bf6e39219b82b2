"""Load what a command works from: the site config, the catalog it names, a spec's plan."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Tuple

from stardock_hpc.catalog import Catalog, load_catalog
from stardock_hpc.errors import UsageError
from stardock_hpc.lockfile import LOCK_NAME, Lock, parse_lock
from stardock_hpc.plan import BuildPlan, resolve
from stardock_hpc.site import Site, load_site
from stardock_hpc.spec import Environment, load_spec


def site_and_catalog(site_option: Optional[str]) -> Tuple[Site, Catalog]:
    site = load_site(site_option)
    return site, load_catalog(site.catalog)


def plan_for(spec_path: Path, site: Site, catalog: Catalog,
             lock: Optional[Lock] = None, add_apps: Sequence[str] = ()) -> Tuple[Environment, BuildPlan]:
    """add_apps: catalog apps added to the spec's (the spec as used then names them: its digest too)."""
    env = load_spec(spec_path, apps=catalog.names(), bases=site.bases)
    extra = tuple(app for app in add_apps if app not in env.apps)
    if extra:
        env = replace(env, apps=env.apps + extra)
    return env, resolve(env, site, catalog, lock)


def read_lock(spec_path: Path, lock_path: Optional[Path] = None) -> Lock:
    """--locked: the lock named, or stardock.lock beside the spec."""
    path = lock_path or spec_path.parent / LOCK_NAME
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the lock ({exc.strerror})",
                         hint=f"make it with `stardock lock {spec_path}`") from None
    return parse_lock(text, str(path))
