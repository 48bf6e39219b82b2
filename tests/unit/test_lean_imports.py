"""Each hot command loads only what it runs (issue 10): the modules are pinned, not the time
(bench/cli.py measures that). A real `stardock` process runs each command against a cache
entry made here and reports, at exit, which modules it had loaded."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stardock_hpc.cache import Cache

REPO = Path(__file__).resolve().parents[2]
KEY = "c" * 64
# What no submission of a built image needs: building, importing recipes, other backends, click,
# the spec's model, logging (--debug only).
NOT_FOR_SBATCH_IMAGE = (
    "click", "stardock_hpc.builder", "stardock_hpc.catalog", "stardock_hpc.plan", "stardock_hpc.render",
    "stardock_hpc.importer", "stardock_hpc.cachekey", "stardock_hpc.context", "stardock_hpc.schedulers.rest",
    "stardock_hpc.schedulers.pyslurm_backend", "requests", "stardock_hpc.commands.doctor",
    "stardock_hpc.commands.images", "stardock_hpc.engines.podman", "stardock_hpc.engines.apptainer", "spython",
    "tarfile", "stardock_hpc.spec", "logging",
)
REPORT = ("import atexit, json, os, sys\n"
          "atexit.register(lambda: open(os.environ['MODULES_OUT'], 'w').write(json.dumps(sorted(sys.modules))))\n"
          "from stardock_hpc.cli import main\nmain(sys.argv[1:])\n")


@pytest.fixture
def site(tmp_path) -> Path:
    """A site whose cache holds one (fake, but valid) podman image, and private dirs for the user."""
    root = tmp_path / "cache"
    root.mkdir()
    cache = Cache(root)
    cache.ensure_layout()
    entry = cache.dir("entries") / f"{KEY}-u{os.getuid()}"
    entry.mkdir()
    data = b"not really an OCI archive"
    (entry / "image.oci.tar").write_bytes(data)
    meta = {"key": KEY, "engine": "podman", "name": "lean", "artifact": "image.oci.tar", "created": 1.0,
            "size": len(data), "artifact_sha256": hashlib.sha256(data).hexdigest(),
            "image_tag": f"localhost/stardock/lean:{KEY[:16]}"}
    (entry / "meta.json").write_text(json.dumps(meta))
    path = tmp_path / "site.yaml"
    path.write_text(f"cache: {root}\noutputs: {tmp_path}/out\nrecords: {tmp_path}/records\n")
    (tmp_path / "job.sh").write_text("#!/bin/sh\ntrue\n")
    return path


def loaded(site: Path, *args: str, runtime: str = "") -> list:
    out = site.parent / "modules.json"
    env = {**os.environ, "MODULES_OUT": str(out), "PYTHONPATH": str(REPO), "STARDOCK_SITE_CONFIG": str(site),
           "XDG_RUNTIME_DIR": runtime}
    proc = subprocess.run([sys.executable, "-c", REPORT, *args], capture_output=True, text=True, env=env,
                          cwd=site.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_version_loads_neither_click_nor_anything_of_stardock_but_the_cli(site):
    modules = loaded(site, "--version")
    assert "click" not in modules
    assert sorted(m for m in modules if m.startswith("stardock_hpc")) == ["stardock_hpc", "stardock_hpc.cli"]


def test_sbatch_with_an_image_loads_only_what_a_submission_uses(site):
    modules = loaded(site, "sbatch", "--dry-run", "--image", KEY[:12], "job.sh")
    assert [m for m in modules if m.startswith(NOT_FOR_SBATCH_IMAGE)] == []
    assert "stardock_hpc.jobs.submit" in modules and "stardock_hpc.cache" in modules  # it did run


def test_a_second_submission_reads_the_site_config_from_the_parsed_site_cache(site, tmp_path):
    """No YAML parser and no schema once the user's runtime directory holds the parsed site."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    first = loaded(site, "sbatch", "--dry-run", "--image", KEY[:12], "job.sh", runtime=str(runtime))
    assert "yaml" in first  # parsed, and kept
    second = loaded(site, "sbatch", "--dry-run", "--image", KEY[:12], "job.sh", runtime=str(runtime))
    assert [m for m in second if m.startswith(("yaml", "stardock_hpc.schema", "stardock_hpc.yamlfile"))] == []
    assert "stardock_hpc.jobs.submit" in second
