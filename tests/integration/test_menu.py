"""The whole StarDock menu builds in one image, and every app's smoke command passes inside it
in a Slurm job (issue 3). Slow: a ~2.5 GB image."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from clitools import stardock_json

from stardock_hpc.catalog import load_catalog
from stardock_hpc.engines import get_engine
from stardock_hpc.engines.base import RunOptions

from slurmtools import sbatch, wait_job

MENU = Path(__file__).resolve().parents[1] / "golden" / "cases" / "menu" / "stardock.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.podman, pytest.mark.slurm]
# MPI stacks are not a menu item: each comes in an image of its own, where test_steps.py runs
# their smoke commands and their programs across the nodes; nor is JupyterLab, which `stardock
# notebook` adds to the environment it runs (test_notebook.py runs its smoke command and the lab)
NOT_ON_MENU = {"openmpi", "mpich", "jupyterlab"}


def test_every_menu_app_passes_its_smoke_command_in_a_slurm_job(tmp_path):
    built = stardock_json("build", str(MENU), timeout=3600)
    engine = get_engine("podman")
    catalog = load_catalog()
    menu_apps = stardock_json("images", "inspect", built["key"][:16])["apps"]
    assert set(menu_apps) | NOT_ON_MENU == set(catalog.names()), "the menu names every catalog app but those"
    apps = catalog.resolve(menu_apps)
    image = engine.image_for(Path(built["artifact"]), f"localhost/stardock-test/menu:{built['key'][:12]}")
    lines = ["#!/bin/bash", "status=0"]
    for app in apps:
        argv = engine.run_argv(image, ["/bin/sh", "-c", app.smoke], [], None,
                               RunOptions(uid=os.getuid(), gid=os.getgid()))
        lines.append(f"if {shlex.join(argv)} >/dev/null 2>&1; then echo 'SMOKE {app.name} ok'; "
                     f"else echo 'SMOKE {app.name} FAILED'; status=1; fi")
    lines.append("exit $status")
    script = tmp_path / "smoke.sh"
    script.write_text("\n".join(lines) + "\n")
    job = sbatch("--mem=4G", "--time=30", "--cpus-per-task=2", f"--chdir={tmp_path}",
                 f"--output={tmp_path}/smoke.out", str(script))
    rows = wait_job(job, timeout=1800)
    output = (tmp_path / "smoke.out").read_text()
    results = dict(line.split()[1:3] for line in output.splitlines() if line.startswith("SMOKE "))
    assert results == {app.name: "ok" for app in apps}, output
    assert rows[job]["State"] == "COMPLETED"
