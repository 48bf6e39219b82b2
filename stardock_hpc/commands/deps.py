"""`stardock deps`: the Debian packages the user's own programs and libraries need in a spec's image."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import click

from stardock_hpc.commands.images import chosen_engine, engine_option, progress
from stardock_hpc.commands.options import common_options, echo_json, state
from stardock_hpc.errors import UsageError
from stardock_hpc.safefs import printable


@click.command("deps")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--spec", "spec", type=click.Path(dir_okay=False, path_type=Path),
              help="The spec whose image to check against (default: stardock.yaml here).")
@click.option("--add", "add", type=click.Path(dir_okay=False, path_type=Path),
              help="The spec to check against and to add the packages found to (packages.apt).")
@engine_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, nothing else.")
@common_options
def deps_cmd(paths: Sequence[Path], spec: Optional[Path], add: Optional[Path], engine: Optional[str],
             as_json: bool) -> None:
    """Find what the ELF programs and libraries at PATHS (files or directories) need that the
    spec's image lacks, and the Debian packages of its base that provide it; --add SPEC writes
    them into SPEC's packages.apt. What cannot be resolved is listed (exit 1)."""
    from stardock_hpc.deps import find_for_spec

    if spec is not None and add is not None and spec != add:
        raise UsageError("--spec and --add name two specs: give one")
    target = add or spec or Path("stardock.yaml")
    on_line, say = progress(lines=False, messages=not as_json)
    eng, _source = chosen_engine(engine, _site())
    report = find_for_spec(list(paths), target, state().site, eng, on_line, say, add=add is not None)
    if as_json:
        echo_json(report.json())
    else:
        _print(report, add)
    if report.unresolved or report.interpreters_missing:
        raise SystemExit(1)


def _site():
    from stardock_hpc.site import load_site
    return load_site(state().site)


def _print(report, add: Optional[Path]) -> None:
    def out(text: str) -> None:
        click.echo(printable(text))
    for lib, package in sorted(report.packages.items()):
        out(f"{lib}: {package}")
    for lib in report.unresolved:
        out(f"{lib}: no package of the base provides it")
    for interp in report.interpreters_missing:
        out(f"{interp}: the image has no such program loader")
    for path in report.other_machines:
        out(f"{path}: built for another processor than this machine's")
    present = len(report.present)
    packages: List[str] = report.package_list()
    summary = f"{present} librar{'y' if present == 1 else 'ies'} already in the image"
    if packages:
        summary += f"; {'added to ' + str(add) if add else 'to add'}: {' '.join(packages)}"
    elif not report.unresolved:
        summary += "; nothing is missing"
    click.echo(f"stardock: {printable(summary)}", err=True)
