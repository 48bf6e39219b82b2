"""Golden job scripts: what sbatch receives for a few batch scripts (regenerate: --regen-golden)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from stardock_hpc.jobs.launch import FORMAT, Launch
from stardock_hpc.jobs.mounts import VolumeMount
from stardock_hpc.slurm.script import read_script
from stardock_hpc.jobs.script import render_job_script
from test_golden import check

HERE = Path(__file__).parent / "jobs"
SCRIPTS = sorted(p.name for p in HERE.glob("*.sh"))


def spec_for(script) -> Launch:
    return Launch(engine="podman", entry="/srv/stardock/cache/entries/k-u1000",
                   artifact="/srv/stardock/cache/entries/k-u1000/image.oci.tar", key="f" * 64,
                   name="m51-photometry", tag="localhost/stardock/m51-photometry:ffffffffffffffff",
                   mounts=[VolumeMount(Path("/srv/archive"), "m51", "/data/archive/m51", True)],
                   outputs="/scratch/{user}/stardock-outputs", records="{home}/.local/share/stardock/jobs",
                   mount_root="/data", network=False, script=script.text, script_name=script.path.name if script.path else "--wrap",
                   runtime_shim="/opt/stardock/wrappers/stardock-runc", pids=4096, entry_owner=1000,
                   artifact_sha256="a" * 64)


def render(name: str) -> str:
    script = read_script(HERE / name)
    return render_job_script(script, spec_for(script), python="/opt/stardock/bin/python",
                             wrappers=Path("/opt/stardock/wrappers"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_job_script_matches_golden(name, request):
    check(HERE / "expected" / f"{name}.job", render(name), request.config.getoption("--regen-golden"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_job_script_is_valid_bash_and_carries_the_script_intact(name):
    text = render(name)
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    lines = text.splitlines()
    assert lines[-1] == "STARDOCK_JOB_SPEC" and lines.count("STARDOCK_JOB_SPEC") == 1
    spec = Launch.from_json(lines[-2])
    assert spec.script == (HERE / name).read_text()
    # every #SBATCH line of the batch script is kept, verbatim and in order
    sbatch = [line for line in (HERE / name).read_text().splitlines() if line.startswith("#SBATCH")]
    assert [line for line in lines if line.startswith("#SBATCH")] == sbatch
    assert json.loads(lines[-2])["format"] == FORMAT


def test_notebook_job_script_matches_golden(request):
    """stardock notebook's job: JupyterLab on a socket, its token in the launch (never on a command line)."""
    from dataclasses import replace

    from stardock_hpc.jobs.notebook import job_command
    from stardock_hpc.slurm.script import wrap_script

    script = wrap_script(job_command("/data"))
    launch = replace(spec_for(script), notebook_token="0123456789abcdef" * 3)
    text = render_job_script(script, launch, python="/opt/stardock/bin/python", wrappers=Path("/opt/stardock/wrappers"))
    check(HERE / "expected" / "notebook.job", text, request.config.getoption("--regen-golden"))
    assert "jupyter lab" in text and "--sock=/data/.notebook/jupyter.sock" in text
    assert "0123456789abcdef" not in text.split("STARDOCK_JOB_SPEC")[0]  # only in the launch's JSON
