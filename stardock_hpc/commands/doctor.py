"""`stardock doctor`: can this user build and run here, and will Slurm account for the containers?"""
from __future__ import annotations

import click

from stardock_hpc.commands.options import common_options, report_checks, state
from stardock_hpc.diagnostics import run_doctor
from stardock_hpc.site import load_site


@click.command()
@click.option("--json", "as_json", is_flag=True)
@common_options
def doctor(as_json: bool) -> None:
    """Check this machine, the site config and Slurm for stardock, and say what is wrong."""
    report_checks(run_doctor(load_site(state().site)), as_json, "check")
