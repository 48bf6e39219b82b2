"""Load what a command works from: the site config, the catalog it names, a spec's plan."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from stardock_hpc.catalog import Catalog, load_catalog
from stardock_hpc.plan import BuildPlan, resolve
from stardock_hpc.site import Site, load_site
from stardock_hpc.spec import Environment, load_spec


def site_and_catalog(site_option: Optional[str]) -> Tuple[Site, Catalog]:
    site = load_site(site_option)
    return site, load_catalog(site.catalog)


def plan_for(spec_path: Path, site: Site, catalog: Catalog) -> Tuple[Environment, BuildPlan]:
    env = load_spec(spec_path, apps=catalog.names(), bases=site.bases)
    return env, resolve(env, site, catalog)
