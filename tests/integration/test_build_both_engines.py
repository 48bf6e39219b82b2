"""A spec using every key builds with Podman and with Apptainer, and the same checks pass in
both images (issue 3). Also: hostile values reach the images literally."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from clitools import remove, shared_dir, stardock, write_spec

from stardock_hpc.cache import Cache
from stardock_hpc.catalog import load_catalog
from stardock_hpc.context import write_context
from stardock_hpc.engines import get_engine
from stardock_hpc.engines.base import RunOptions
from stardock_hpc.jobs.binds import Handover, checked_command
from stardock_hpc.plan import resolve
from stardock_hpc.site import load_site
from stardock_hpc.spec import load_spec

HERE = Path(__file__).parent
SPECS = {"full": HERE / "specs" / "full" / "stardock.yaml",
         "hostile": HERE.parent / "golden" / "cases" / "hostile" / "stardock.yaml"}
ENGINE_MARKS = {"podman": pytest.mark.podman, "apptainer": pytest.mark.apptainer}


class Built:
    def __init__(self, engine, image, plan):
        self.engine, self.image, self.plan = engine, image, plan

    def run(self, *command: str, env=None) -> subprocess.CompletedProcess:
        handover = Handover([])
        if env is not None:  # as the node's wrapper gives it: by descriptor, to the preflight
            command = tuple(checked_command([], handover.add_environment(env), command))
        argv = self.engine.run_argv(self.image, list(command), [], None,
                                    RunOptions(uid=os.getuid(), gid=os.getgid(), preserve_fds=len(handover.pass_fds)))
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=120, pass_fds=handover.pass_fds,
                                  preexec_fn=handover.in_child)
        finally:
            handover.close()

    def out(self, *command: str) -> str:
        proc = self.run(*command)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        return proc.stdout


def build(engine_name: str, spec: str, tmp: Path) -> Built:
    engine = get_engine(engine_name)
    reason = engine.available()
    if reason:
        pytest.skip(reason)
    site = load_site()
    catalog = load_catalog(site.catalog)
    env = load_spec(SPECS[spec], apps=catalog.names())
    plan = resolve(env, site, catalog)
    context = write_context(plan, tmp / "context")
    engine.prepare_base(plan.base)
    tag = f"localhost/stardock-test/{plan.name}:{engine_name}"
    (tmp / "out").mkdir()
    artifact = engine.build(context, tag, tmp / "out")
    return Built(engine, engine.image_for(artifact, tag), plan)


@pytest.fixture(scope="module", params=[pytest.param(e, marks=m) for e, m in ENGINE_MARKS.items()])
def full(request, tmp_path_factory):
    return build(request.param, "full", tmp_path_factory.mktemp(f"full-{request.param}"))


@pytest.fixture(scope="module", params=[pytest.param(e, marks=m) for e, m in ENGINE_MARKS.items()])
def hostile(request, tmp_path_factory):
    return build(request.param, "hostile", tmp_path_factory.mktemp(f"hostile-{request.param}"))


def test_env_values_are_visible_at_run_time_literally(full):
    assert full.out("printenv", "GREETING") == "hello, it's \"$HOME\" \\o/\n"
    assert full.out("printenv", "OMP_NUM_THREADS") == "1\n"


def test_user_steps_ran_in_one_shell_with_files_and_env_at_build_time(full):
    assert full.out("cat", "/opt/pipeline/built.txt") == \
        "sum=6 in /opt/pipeline with hello, it's \"$HOME\" \\o/\n"


def test_files_are_copied_where_copy_puts_them(full):
    assert full.out("cat", "/etc/stardock-check/data.txt") == "1 2 3\n"
    assert "import six" in full.out("cat", "/opt/pipeline/run.py")


def test_apt_and_pip_packages_are_installed(full):
    assert full.out("jq", "--version").startswith("jq-1.6")
    assert full.out("python3", "-c", "import six; print(six.__version__)") == "1.16.0\n"


def test_default_command_runs_and_arguments_replace_it(full):
    assert full.out() == "run.py 1.16.0 hello, it's \"$HOME\" \\o/ default-arg\n"
    assert full.out("python3", "/opt/pipeline/run.py", "given").endswith(" given\n")


def test_provenance_file_and_hash_are_in_the_image(full):
    assert full.out("cat", "/.stardock/spec.yaml") == full.plan.spec_yaml
    assert full.plan.labels["org.stardock.spec-sha256"] == full.plan.spec_digest
    if full.engine.name == "podman":
        label = subprocess.run(["podman", "image", "inspect", "--format",
                                '{{index .Config.Labels "org.stardock.spec-sha256"}}', full.image.ref],
                               capture_output=True, text=True, check=True).stdout.strip()
    else:
        label = subprocess.run(["apptainer", "inspect", "--labels", full.image.ref],
                               capture_output=True, text=True, check=True).stdout
        label = next(line.split(": ", 1)[1] for line in label.splitlines()
                     if line.startswith("org.stardock.spec-sha256:"))
    assert label == full.plan.spec_digest


def test_runs_as_the_user_not_root(full):
    assert full.out("id", "-u") == f"{os.getuid()}\n"


def test_no_package_caches_are_left(full):
    assert full.out("sh", "-c", "ls /var/lib/apt/lists | grep -v -x -e lock -e partial | wc -l") == "0\n"


def test_hostile_values_reach_the_image_literally(hostile):
    env = dict(hostile.plan.env)
    for key in ("QUOTES", "DOLLAR", "BACKSLASH", "SPACES", "EMPTY"):
        assert hostile.out("printenv", key) == env[key] + "\n", key
    assert hostile.out("cat", "/opt/odd dir/it's $(x) \"q\" \\b.txt") == "payload 'quoted' $(not run)\n"
    assert hostile.out("cat", "/opt/new\nline %post/sub/file") == "deep\n"
    assert hostile.out("cat", "/opt/into/it's $(x).txt") == "payload 'quoted' $(not run)\n"
    assert hostile.out("cat", "/opt/build-out") == "it's $HOME  \\\n%post\n`id`\n"


def test_hostile_command_arguments_arrive_literally(hostile):
    assert hostile.out() == "[line1\nline2]\n[$(id) 'q']\n[\n%environment\n]\n"


def test_hostile_runtime_env_arrives_literally(hostile):
    value = "it's \"$HOME\" `id` $(id) \\ ,; %post\nnext"
    proc = hostile.run("printenv", "RUNTIME", env={"RUNTIME": value})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == value + "\n"


@pytest.mark.parametrize("engine", [pytest.param(e, marks=m) for e, m in ENGINE_MARKS.items()])
def test_a_step_failing_inside_an_and_list_fails_the_build_and_nothing_is_cached(engine, tmp_path):
    """Issue 11: `make && make install` failing in make used to build and cache a broken image."""
    directory = shared_dir("stardock-andlist-")
    name = f"andlist-{uuid.uuid4().hex[:8]}"
    try:
        spec = write_spec(directory, f"name: {name}\nbuild:\n  - echo before > /before\n"
                                     "  - false && echo never-echoed\n  - echo after > /after\n")
        proc = stardock("build", str(spec), "--engine", engine)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "build step failed (exit 1): false && echo never-echoed" in proc.stderr
        site = load_site()
        assert not [e for e in Cache(site.cache, site.trusted_builders).entries() if e.meta.get("name") == name]
        listed = json.loads(stardock("images", "--json").stdout)
        assert name not in {row["name"] for row in listed}
    finally:
        remove(directory)
