"""Commands on environments: render, schema, apps."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from stardock_hpc.commands.options import common_options, echo_json, state
from stardock_hpc.fsutil import write_atomic
from stardock_hpc.inputs import plan_for, site_and_catalog
from stardock_hpc.render import FORMATS
from stardock_hpc.site import site_json_schema
from stardock_hpc.spec import spec_json_schema

SPEC_ARG = click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))


@click.command()
@SPEC_ARG
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), required=True,
              help="apptainer: an Apptainer .def; containerfile: a Podman Containerfile.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to FILE instead of standard output.")
@common_options
def render(spec: Path, fmt: str, output: Optional[Path]) -> None:
    """Render SPEC (stardock.yaml) as an Apptainer definition or a Containerfile."""
    site, catalog = site_and_catalog(state().site)
    _env, plan = plan_for(spec, site, catalog)
    text = FORMATS[fmt](plan)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)
        click.echo(f"wrote {output}", err=True)


@click.command()
@click.argument("kind", type=click.Choice(["spec", "site"]), default="spec")
@common_options
def schema(kind: str) -> None:
    """Print the JSON Schema of stardock.yaml (default) or of site.yaml, for editors."""
    if kind == "site":
        echo_json(site_json_schema())
        return
    _site, catalog = site_and_catalog(state().site)
    echo_json(spec_json_schema(catalog.names()))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@common_options
def apps(as_json: bool) -> None:
    """List the apps of the catalog (shipped, plus the site's)."""
    _site, catalog = site_and_catalog(state().site)
    if as_json:
        echo_json([{"name": a.name, "summary": a.summary, "homepage": a.homepage,
                    "requires": list(a.requires), "smoke": a.smoke, "env": a.env,
                    "install": {fam: {"apt": list(r.apt), "pip": list(r.pip), "steps": list(r.steps)}
                                for fam, r in a.install.items()},
                    "definition": str(a.path)} for a in catalog.apps.values()])
        return
    width = max((len(n) for n in catalog.apps), default=4)
    for app in catalog.apps.values():
        click.echo(f"{app.name:<{width}}  {app.summary}")
