"""Another user makes the names of your node-local directories first (issue 23, item 3): your
node storage (/var/tmp/stardock-UID), your jobs' runtime directory (/tmp/stardock-runtime-UID) and
Podman's lock name (/dev/shm/libpod_rootless_lock_UID), as a directory, a link into your home, or
a file. Each test is the attacker's steps (the second test user, through sudo, on the node with
`srun -w`) against the victim (the test user): the victim's jobs still run, with both engines,
their log says which private directory they used instead, the attacker's objects stay as they
were, and nothing of the victim's lands in them. A node's /tmp, /var/tmp and /dev/shm are its own
(README: the testbed)."""
from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Dict

import pytest
import yaml
from clitools import OTHER, remove, shared_dir, stardock, stardock_json, write_spec

from slurmtools import sh, wait_job

pytestmark = [pytest.mark.slurm, pytest.mark.podman]
ENGINES = [pytest.param("podman", id="podman"), pytest.param("apptainer", id="apptainer",
                                                              marks=pytest.mark.apptainer)]
KINDS = ["directory", "link", "file"]
NODE = "node1"
UID = os.getuid()
HOME = Path(os.path.expanduser("~"))
STORAGE = "/var/tmp/sdsq-{uid}"  # a node storage of these tests' own (the real one exists); short: see userdirs

# The attacker's steps, run by sh with $1 = the name, $2 = where a link leads
PLANT = {"directory": 'mkdir -m 0777 "$1" && chmod 0777 "$1"', "link": 'ln -s "$2" "$1"',
         "file": 'echo theirs > "$1"'}
LOOK = 'stat -c "%U %F" "$1"; if [ -L "$1" ]; then readlink "$1"; elif [ -d "$1" ]; then ls -A "$1"; else cat "$1"; fi'


def attacker(argv: list, node: str = NODE) -> subprocess.CompletedProcess:
    """As the other user, on node (a job step of theirs), or here on the login node (node="")."""
    where = ["env", f"SLURM_CONF={os.environ['SLURM_CONF']}", "srun", "-w", node, "-N1", "-n1", "-t", "2"]
    if not node:
        where = []
    return sh(["sudo", "-n", "-u", OTHER, "--", *where, *argv])


def plant(name: str, kind: str, lead_to: Path, node: str = NODE) -> str:
    """The attacker makes name first (after removing a leftover of theirs); what it looks like."""
    out = attacker(["sh", "-c", f'rm -rf "$1"; {PLANT[kind]} && {LOOK}', "plant", name, str(lead_to)], node)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{OTHER} "), out.stdout
    return out.stdout


def look(name: str, node: str = NODE) -> str:
    out = attacker(["sh", "-c", LOOK, "look", name], node)
    assert out.returncode == 0, out.stderr
    return out.stdout


def unplant(*names: str, node: str = NODE) -> None:
    """The attacker removes what they made (theirs only: the names sit in sticky directories)."""
    attacker(["sh", "-c", 'for n in "$@"; do [ "$(stat -c %U "$n" 2>/dev/null)" = "$(id -un)" ] && rm -rf "$n"; '
              'done; true', "unplant", *names], node)


# Podman as it is without stardock's drop-in (its default lock type), in a store of its own
PLAIN_PODMAN = """d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
printf '[engine]\\nlock_type = "shm"\\n' > "$d/c.conf"
XDG_RUNTIME_DIR="$d" CONTAINERS_CONF="$d/c.conf" podman --root "$d/s" --runroot "$d/r" info >/dev/null"""


def victim_on_node(script: str) -> subprocess.CompletedProcess:
    return sh(["srun", "-w", NODE, "-N1", "-n1", "-t", "2", "sh", "-c", script])


@pytest.fixture
def place():
    path = shared_dir("stardock-squat-")
    yield path
    remove(path)


@pytest.fixture
def lead_to():
    """Where the attacker's links lead: a name in the victim's home, which nothing may create."""
    target = HOME / f"squat-target-{uuid.uuid4().hex[:8]}"
    yield target
    assert not target.exists() and not target.is_symlink(), "something followed the attacker's link"


def site_file(place: Path, **changes) -> Path:
    data = yaml.safe_load(Path(os.environ["STARDOCK_SITE_CONFIG"]).read_text())
    data.update(changes)
    path = place / f"site-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o644)
    return path


def spec(place: Path) -> Path:
    return write_spec(place / "env", "name: attacks-test\n")  # the attack tests' image (a cache hit)


def run_job(place: Path, site: Path, engine: str, body: str, *options: str) -> Dict[str, str]:
    script = place / f"job-{uuid.uuid4().hex[:6]}.sh"
    script.write_text("#!/bin/bash\n" + body)
    script.chmod(0o755)
    sub = stardock("sbatch", "--site", str(site), "--parsable", "--env", str(spec(place)), "--engine", engine,
                   f"--nodelist={NODE}", "--time=3", "--output=squat-%j.out", *options, str(script), cwd=place)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    rows = wait_job(job, timeout=300)
    out = (place / f"squat-{job}.out").read_text()
    return {"state": rows[job]["State"], "out": out}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", KINDS)
def test_node_storage_and_runtime_names_made_first_by_another_user_do_not_stop_a_job(place, lead_to, engine,
                                                                                      kind):
    """The attacker makes the victim's node storage name and runtime directory name on the node
    first (one `srun mkdir`): before, every job of the victim there failed ("belongs to user ...,
    not to you") until an admin cleaned up. The job and the tasks of its step run; the log names
    the taken path, its owner and the private directory used instead."""
    storage = STORAGE.replace("{uid}", str(UID))
    runtime = f"/tmp/stardock-runtime-{UID}"  # the jobs' runtime directory where /run/user/UID is missing
    before = {name: plant(name, kind, lead_to) for name in (storage, runtime)}
    try:
        site = site_file(place, node_storage=STORAGE)
        ran = run_job(place, site, engine, 'echo "ran on $SLURM_JOB_NODELIST"\n'
                      'srun -n2 sh -c \'echo "task $SLURM_PROCID"\'\necho mine > "$STARDOCK_OUTPUT/result"\n',
                      "--nodes=1", "--ntasks=2")
        out = ran["out"]
        assert ran["state"] == "COMPLETED", out
        assert f"ran on {NODE}" in out and "task 0" in out and "task 1" in out, out
        said = [line for line in out.splitlines() if line.startswith("stardock: warning:") and storage in line]
        assert len(said) == 1, out  # once in the job's log, though its tasks set up too
        assert f"user {OTHER}" in said[0] and f"{storage}-" in said[0] and "beside it" in said[0], said
        found = re.search(r"it is not used: (/\S+), a private directory", said[0])
        assert found, said
        mine = victim_on_node(f'stat -c "%U %a" "{found.group(1)}"')
        assert mine.returncode == 0 and mine.stdout.startswith(f"{os.environ.get('USER', 'stardock')} 700"), mine
        for name, seen in before.items():
            assert look(name) == seen, f"{name} was changed"
    finally:
        unplant(storage, runtime)


@pytest.mark.parametrize("kind", KINDS)
def test_podmans_lock_name_made_first_by_another_user_does_not_stop_a_podman_job(place, lead_to, kind):
    """Podman's default locks are /dev/shm/libpod_rootless_lock_UID: made first by another user,
    every Podman command of the victim on the node failed ("failed to open 2048 locks ... permission
    denied"), and a link there made Podman open and truncate whatever it leads to. stardock runs
    Podman with file locks in its own tmp dir (engines/podman_locks.py)."""
    lock = f"/dev/shm/libpod_rootless_lock_{UID}"
    # the victim's own lock file from earlier jobs would keep the name theirs: gone, as after a reboot
    assert victim_on_node(f'[ ! -O "{lock}" ] || rm -f "{lock}"').returncode == 0
    seen = plant(lock, kind, lead_to)
    try:
        if kind != "link":  # (through the link, Podman would create or truncate the file it leads to)
            plain = victim_on_node(PLAIN_PODMAN)
            assert plain.returncode != 0 and "locks" in plain.stderr, "the squat stops Podman's default locks"
        ran = run_job(place, site_file(place), "podman", 'echo "ran on $SLURM_JOB_NODELIST"\n')
        assert ran["state"] == "COMPLETED" and f"ran on {NODE}" in ran["out"], ran["out"]
        assert look(lock) == seen
    finally:
        unplant(lock)


@pytest.mark.parametrize("engine", ENGINES)
def test_stardock_exec_on_the_login_node_with_its_node_storage_name_taken(place, lead_to, engine):
    """`stardock exec` runs here, on the login node, with the node storage the site names: the
    attacker makes that name first here."""
    storage = STORAGE.replace("{uid}", str(UID))
    seen = plant(storage, "link", lead_to, node="")
    try:
        site = site_file(place, node_storage=STORAGE)
        key = stardock_json("build", str(spec(place)), "--engine", engine, "--site", str(site))["key"]
        ran = stardock("exec", "--site", str(site), "--engine", engine, "--image", key, "--", "sh", "-c",
                       "echo ran in the container", cwd=place)
        assert ran.returncode == 0 and ran.stdout.strip() == "ran in the container", ran.stderr
        assert f"{storage} (node storage" in ran.stderr and f"user {OTHER}" in ran.stderr, ran.stderr
        assert look(storage, node="") == seen
    finally:
        unplant(storage, node="")


def test_podmans_tmp_dir_fixed_in_a_store_and_taken_after_a_reboot_is_not_used(place):
    """Podman fixes its tmp dir (lock files, the pause process's pid, events) in a store's database
    when it makes the store, and Podman 4.3 keeps it whatever XDG_RUNTIME_DIR or --tmpdir say
    later. A store made while the node had no /run/user/UID has it under /tmp/stardock-runtime-UID
    (here a name of this test's): after a reboot the attacker makes that name first, and Podman
    would keep its files in the attacker's directory. The job runs, starts the store's list of
    containers afresh (the log says so), and leaves the attacker's directory empty."""
    storage = f"/var/tmp/sdsq2-{UID}"
    runtime = f"/tmp/sdsq-rt-{uuid.uuid4().hex[:8]}"
    made = victim_on_node(f'set -e; mkdir -p -m 0700 "{storage}" "{storage}/podman"; '
                          f'rm -f "{storage}/podman/storage/libpod/bolt_state.db"; mkdir -m 0700 "{runtime}"; '
                          f'XDG_RUNTIME_DIR="{runtime}" podman --root "{storage}/podman/storage" '
                          f'--runroot "{storage}/podman/run" info >/dev/null; rm -rf "{runtime}"')  # then a reboot
    assert made.returncode == 0, made.stderr
    seen = plant(runtime, "directory", HOME)
    try:
        ran = run_job(place, site_file(place, node_storage=storage), "podman", 'echo "ran on $SLURM_JOB_NODELIST"\n')
        assert ran["state"] == "COMPLETED" and f"ran on {NODE}" in ran["out"], ran["out"]
        assert f"{runtime} (Podman's directory" in ran["out"] and f"user {OTHER}" in ran["out"], ran["out"]
        assert "started afresh" in ran["out"], ran["out"]
        assert look(runtime) == seen, "nothing of the victim's in the attacker's directory"
    finally:
        unplant(runtime)
