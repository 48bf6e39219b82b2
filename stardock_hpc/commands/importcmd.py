"""`stardock import`: an existing Dockerfile / Containerfile or Apptainer .def as a stardock.yaml."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import click

from stardock_hpc.commands.options import common_options, state
from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.fsutil import write_atomic
from stardock_hpc.importer import import_recipe, render_yaml
from stardock_hpc.inputs import site_and_catalog
from stardock_hpc.spec import NAME_HELP, NAME_RE, parse_spec


@click.command("import")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the spec to FILE instead of standard output.")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@click.option("--name", help="The environment's name (default: from the recipe's file or directory name).")
@click.option("--base", "base", metavar="NAME",
              help="Build on this base of the site (default: the recipe's, or the site's nearest).")
@common_options
def import_recipe_cmd(recipe: Path, output: Optional[Path], force: bool, name: Optional[str],
                      base: Optional[str]) -> None:
    """Read RECIPE (a Dockerfile / Containerfile or an Apptainer / Singularity .def) and write an
    environment spec (stardock.yaml). A base the site does not offer becomes its nearest
    Debian-family base, said first; other families are refused unless --base chooses. What
    cannot be carried over is listed, with the reason, on standard error and at the top of the
    spec."""
    if name is not None and not re.fullmatch(NAME_RE, name):
        raise UsageError(f"--name {name!r}: {NAME_HELP}")
    if output is not None and output.exists() and not force:
        raise UsageError(f"{output} exists; use --force to replace it")
    site, catalog = site_and_catalog(state().site)
    spec_dir = output.parent if output is not None else recipe.parent
    result = import_recipe(recipe, name=name, catalog=catalog, bases=site.bases, spec_dir=spec_dir,
                           base=base, default_base=site.default_base)
    text = render_yaml(result)
    try:  # the importer checks every value as it adds it; this is the guarantee
        parse_spec(text, spec_dir / "stardock.yaml", apps=catalog.names(), bases=site.bases)
    except UsageError as exc:
        raise StardockError(f"{recipe}: the imported spec does not validate ({exc}); this is a bug "
                            "in stardock import, please report it") from None
    for change in result.changes:
        click.echo(f"stardock: base changed: {change}", err=True)
    for item in result.not_carried:
        where = f"line {item.line}: " if item.line else ""
        click.echo(f"stardock: not carried over: {where}{item.instruction} ({item.reason})", err=True)
    for note in result.notes:
        click.echo(f"stardock: note: {note}", err=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)
        click.echo(f"wrote {output}", err=True)
