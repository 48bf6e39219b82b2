"""Golden (reference) files for every rendered artifact.

Each directory under cases/ holds a spec (stardock.yaml, plus files it copies) and expected/,
the reference outputs. `pytest tests/golden --regen-golden` rewrites expected/ from the current
renderers; review the change with `git diff tests/golden` before committing it.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest
import yaml

from stardock_hpc.catalog import load_catalog
from stardock_hpc.lockfile import parse_lock
from stardock_hpc.plan import resolve
from stardock_hpc.render import render_apptainer, render_containerfile
from stardock_hpc.render.common import run_script
from stardock_hpc.site import parse_site, site_json_schema
from stardock_hpc.spec import load_spec, spec_json_schema, spec_type

HERE = Path(__file__).parent
CASES = sorted(p.name for p in (HERE / "cases").iterdir() if (p / "stardock.yaml").exists())


def outputs(case: str) -> dict:
    site = parse_site((HERE / "site.yaml").read_text(), HERE / "site.yaml")
    catalog = load_catalog()
    env = load_spec(HERE / "cases" / case / "stardock.yaml", apps=catalog.names())
    lock_file = HERE / "cases" / case / "stardock.lock"  # a case with a lock renders a --locked build
    lock = parse_lock(lock_file.read_text(), str(lock_file)) if lock_file.exists() else None
    plan = resolve(env, site, catalog, lock)
    out = {"Containerfile": render_containerfile(plan), "apptainer.def": render_apptainer(plan),
           "spec.yaml": plan.spec_yaml}
    if lock is not None:
        out.update({"stardock.lock": lock.text(), "apt-pins": lock.apt_pins(), "pip-lock.txt": lock.pip_requirements()})
    for run in plan.runs:
        out[run.context_path.split("/")[-1]] = run_script(run)
    return out


def check(expected_file: Path, actual: str, regen: bool) -> None:
    if regen:
        expected_file.parent.mkdir(parents=True, exist_ok=True)
        expected_file.write_text(actual)
        return
    assert expected_file.exists(), f"{expected_file} is missing: run pytest --regen-golden"
    expected = expected_file.read_text()
    if expected != actual:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            str(expected_file), "rendered now"))
        pytest.fail(f"rendered output differs from {expected_file} (regenerate with "
                    f"--regen-golden and review):\n{diff}")


@pytest.mark.parametrize("case", CASES)
def test_rendered_files_match_golden(case, request):
    regen = request.config.getoption("--regen-golden")
    expected_dir = HERE / "cases" / case / "expected"
    produced = outputs(case)
    for name, text in produced.items():
        check(expected_dir / name, text, regen)
    if not regen:
        stale = {p.name for p in expected_dir.iterdir()} - set(produced)
        assert not stale, f"golden files no longer produced: {stale}"


@pytest.mark.parametrize("kind", ["stardock", "site"])
def test_json_schemas_match_golden(kind, request):
    schema = spec_json_schema(load_catalog().names()) if kind == "stardock" else site_json_schema()
    check(HERE / "schema" / f"{kind}.schema.json", json.dumps(schema, indent=2, sort_keys=True) + "\n",
          request.config.getoption("--regen-golden"))


def test_every_spec_key_is_covered_by_some_case():
    keys = set(spec_type().keys)
    used = set()
    for case in CASES:
        used |= set(yaml.safe_load((HERE / "cases" / case / "stardock.yaml").read_text()))
    assert keys - used == set(), f"no golden case uses {keys - used}"
