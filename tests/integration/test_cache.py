"""Unprivileged builds and the shared content-addressed cache, with real engines (issue 4)."""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from clitools import OTHER, remove, shared_dir, stardock, stardock_argv, stardock_json, write_spec

from stardock_hpc.cache import Cache
from stardock_hpc.site import load_site
from stardock_hpc.spec import load_spec

from slurmtools import sh

pytestmark = pytest.mark.podman


@pytest.fixture
def spec_dir():
    path = shared_dir()
    yield path
    remove(path)


REMOVE_OWN_NEW = """import sys
from stardock_hpc.cache import Cache
from stardock_hpc.site import load_site
site = load_site()
cache = Cache(site.cache, site.trusted_builders)
before = set(sys.argv[1:])
for entry in cache.entries():
    if entry.owner == cache.uid and entry.path.name not in before:
        cache.remove(entry)
"""


def entry_names() -> list:
    return sorted(p.name for p in cache().dir("entries").iterdir())


@pytest.fixture(autouse=True)
def own_entries_removed():
    """Each test here builds images of its own (a nonce each: first-time behaviour): the entries
    it made, the test user's and the other user's, go when it ends (this lane runs one test at a
    time: what is new is the test's)."""
    before = entry_names()
    yield
    for user in (None, OTHER):
        argv = [sys.executable, "-c", REMOVE_OWN_NEW, *before]
        if user:
            argv = ["sudo", "-n", "-u", user, "--", "env", f"STARDOCK_SITE_CONFIG={os.environ['STARDOCK_SITE_CONFIG']}",
                    f"HOME=/home/{user}", *argv]
        sh(argv, cwd="/tmp")


def _uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def podman_builds_since(t: float) -> int:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t - 1))
    out = subprocess.run(["podman", "events", "--stream=false", "--since", since, "--filter", "type=image",
                          "--filter", "event=build"], capture_output=True, text=True, check=True)
    return len([line for line in out.stdout.splitlines() if line.strip()])


def cache() -> Cache:
    site = load_site()
    return Cache(site.cache, site.trusted_builders)


def lock_is_free(key: str) -> bool:
    path = cache().lock_path(key)  # locks are per user (issue 9)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def tiny(name: str, *build: str) -> str:
    steps = ", ".join(json.dumps(s) for s in build)
    return f"name: {name}\nbuild: [{steps}]\ncommand: [cat, /stamp]\n"


def test_second_build_of_an_unchanged_spec_runs_no_engine(spec_dir):
    n = nonce()
    spec = write_spec(spec_dir, tiny(f"hit-{n}", f"echo {n} > /stamp"))
    first = stardock_json("build", str(spec))
    assert first["built"] is True
    t = time.time()
    second = stardock_json("build", str(spec))
    assert second["built"] is False
    assert (second["key"], second["artifact"]) == (first["key"], first["artifact"])
    assert podman_builds_since(t) == 0


def test_two_users_with_one_spec_share_one_key_and_one_artifact(spec_dir):
    n = nonce()
    spec = write_spec(spec_dir, tiny(f"shared-{n}", f"echo {n} > /stamp"))
    mine = stardock_json("build", str(spec))
    theirs = stardock_json("build", str(spec), user=OTHER)
    assert theirs["key"] == mine["key"] and theirs["artifact"] == mine["artifact"]
    assert theirs["built"] is False and theirs["builder"] == os.environ["USER"]
    # and the other user can really load and run it, rootless, in their own store
    load = sh(["sudo", "-n", "-u", OTHER, "--", "env", f"XDG_RUNTIME_DIR=/run/user/{_uid(OTHER)}",
               f"HOME=/home/{OTHER}", "sh", "-c",
               f"cd / && id=$(podman load -q -i {mine['artifact']} | awk '{{print $NF}}') && "
               f"podman run --rm --pull=never --network=none $id"])
    assert load.returncode == 0, load.stderr
    assert load.stdout.strip().endswith(n)


def key_of(spec: Path) -> str:
    from stardock_hpc.builder import key_for
    from stardock_hpc.catalog import load_catalog
    from stardock_hpc.engines import get_engine
    from stardock_hpc.inputs import plan_for

    site = load_site()
    _env, plan = plan_for(spec, site, load_catalog(site.catalog))
    return key_for(plan, get_engine("podman"))


def test_eight_concurrent_builds_of_one_spec_build_once(spec_dir):
    n = nonce()
    spec = write_spec(spec_dir, tiny(f"concurrent-{n}", f"echo {n} > /stamp"))
    key = key_of(spec)
    t = time.time()
    # the test holds the key's build lock until all eight wait for it: they meet there, every run
    c = cache()
    c.ensure_layout()
    with c.lock(key):
        procs = [subprocess.Popen(stardock_argv("build", str(spec)), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd="/tmp") for _ in range(8)]
        errs: list = [[] for _ in procs]

        def read(i: int) -> None:
            for line in procs[i].stderr:
                errs[i].append(line)

        readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(8)]
        for r in readers:
            r.start()
        deadline = time.time() + 300
        while sum(any("waiting for another build" in line for line in e) for e in errs) < 8:
            assert time.time() < deadline and all(p.poll() is None for p in procs), errs
            time.sleep(0.1)
    results = []
    for p, reader, err in zip(procs, readers, errs):
        out = p.stdout.read()
        p.wait(timeout=900)
        reader.join(60)
        assert p.returncode == 0, "".join(err)
        fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        results.append({"key": fields["key"], "artifact": fields["artifact"],
                        "built": any(": built in " in line for line in err)})
    assert sum(r["built"] for r in results) == 1
    assert len({r["key"] for r in results}) == 1 and len({r["artifact"] for r in results}) == 1
    assert podman_builds_since(t) == 1


def test_a_killed_build_leaves_nothing_a_later_build_trips_on(spec_dir):
    n = nonce()
    # the step says it started; the build is killed then, in the middle of the step
    step = f"echo step-started-{n}; sleep 3"  # not a wait: a step that takes a while (the rebuild runs it)
    spec = write_spec(spec_dir, tiny(f"killed-{n}", step, f"echo {n} > /stamp"))
    proc = subprocess.Popen(stardock_argv("build", str(spec)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd="/tmp")
    assert proc.stdout is not None
    for line in proc.stdout:  # kill it in the middle of the user's build step (its output: "  | LINE")
        if line.rstrip("\n").endswith(f"| step-started-{n}"):
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    key = key_of(spec)
    c = cache()
    again = stardock_json("build", str(spec))
    assert again["built"] is True and again["key"] == key
    assert [e.key for e in c.entries() if e.key == key] == [key]
    assert c.lookup(key) is not None and c.verify(c.lookup(key))
    assert not list(c.dir("tmp").glob(f"{key}-u{os.getuid()}.*")), "the killed build's leftovers remain"
    assert lock_is_free(key)


def test_a_failing_user_step_is_reported_and_leaves_no_entry(spec_dir):
    n = nonce()
    spec = write_spec(spec_dir, tiny(f"fails-{n}", "echo before", "false", "echo never"))
    before = {p.name for p in cache().dir("tmp").iterdir()}
    proc = stardock("build", str(spec))
    assert proc.returncode == 1
    assert "stardock: error: podman build failed (exit 1): build step failed (exit 1): false" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not [e for e in cache().entries() if e.meta.get("name") == f"fails-{n}"]
    assert {p.name for p in cache().dir("tmp").iterdir()} == before
    again = stardock("build", str(spec), "--quiet", timeout=600)  # no stale lock: fails again, promptly
    assert again.returncode == 1


def test_changing_only_build_steps_reuses_every_layer_before_them(spec_dir):
    n = nonce()
    (spec_dir / "input.txt").write_text(n)
    head = f"name: layers-{n}\npackages: {{apt: [jq]}}\nfiles: [{{src: input.txt, dest: /opt/input.txt}}]\n"
    write_spec(spec_dir, head + "build: ['cp /opt/input.txt /stamp']\n")
    assert stardock("build", str(spec_dir / "stardock.yaml")).returncode == 0
    spec = write_spec(spec_dir, head + "build: ['cp /opt/input.txt /stamp', 'echo changed >> /stamp']\n")
    proc = stardock("build", str(spec))
    assert proc.returncode == 0, proc.stderr
    steps = {}
    current = None
    for line in proc.stderr.splitlines():
        body = line.removeprefix("  | ")
        if body.startswith("STEP "):
            current = body
            steps[current] = False
        elif current and body.startswith("--> Using cache"):
            steps[current] = True
    cached = [s for s, hit in steps.items() if hit]
    rebuilt = [s for s, hit in steps.items() if not hit and not s.split(": ", 1)[1].startswith("FROM")]
    assert any("apt-get install" in s for s in cached), steps
    assert any("files/0" in s for s in cached), steps
    assert rebuilt and "build.sh" in rebuilt[0], steps


def test_tampered_artifact_is_never_used(spec_dir):
    n = nonce()
    spec = write_spec(spec_dir, tiny(f"tamper-{n}", f"echo {n} > /stamp"))
    first = stardock_json("build", str(spec))
    artifact = Path(first["artifact"])
    entry_dir = artifact.parent
    entry_dir.chmod(0o755)
    artifact.chmod(0o644)
    with open(artifact, "ab") as fh:
        fh.write(b"poison")
    again = stardock_json("build", str(spec))
    assert again["built"] is True, "a changed artifact must not be used"
    assert cache().verify(cache().lookup(again["key"]))


def test_entries_of_untrusted_or_impersonating_builders_are_not_used(spec_dir):
    private_cache = shared_dir("stardock-cache-")
    private_cache.chmod(0o1777)
    base = load_site().base(None)
    site = spec_dir / "site.yaml"
    site.write_text(f"cache: {private_cache}\nbases:\n  debian:bookworm: {{archive: {base.archive}}}\n")
    site.chmod(0o644)
    assert stardock("images", "init", "--site", str(site)).returncode == 0  # the cache's owner sets it up
    n = nonce()
    spec = write_spec(spec_dir, tiny(f"trust-{n}", f"echo {n} > /stamp"))
    try:
        theirs = stardock_json("build", str(spec), "--site", str(site), user=OTHER)
        assert theirs["built"] is True
        # the other user also squats the entry name that claims to be ours
        ours_name = private_cache / "entries" / f"{theirs['key']}-u{os.getuid()}"
        squat = sh(["sudo", "-n", "-u", OTHER, "--", "cp", "-r", str(Path(theirs["artifact"]).parent),
                    str(ours_name)])
        assert squat.returncode == 0, squat.stderr
        mine = stardock_json("build", str(spec), "--site", str(site))
        assert mine["built"] is True and mine["key"] == theirs["key"]
        assert mine["artifact"] != theirs["artifact"] and Path(mine["artifact"]).parent != ours_name
        assert Path(mine["artifact"]).parent.stat().st_uid == os.getuid()
    finally:
        # the other user's files first, wherever they are (locks, marks, entries, staging); then ours
        sh(["sudo", "-n", "-u", OTHER, "--", "chmod", "-R", "u+w", str(private_cache)])
        sh(["sudo", "-n", "-u", OTHER, "--", "rm", "-rf", str(private_cache)])
        remove(private_cache)
        assert not private_cache.exists()


@pytest.fixture
def private_cache(spec_dir):
    """A cache of the test's own and a site naming it: what prune removes there is only the test's
    (on the testbed's cache it would remove every entry of the user, the suite's kept images too)."""
    root = spec_dir / "cache"
    root.mkdir()
    for name in ("", "entries", "tmp", "locks", "used", "inuse"):
        (root / name).mkdir(exist_ok=True)
        (root / name).chmod(0o1777 if name else 0o755)
    site = yaml.safe_load(Path(os.environ["STARDOCK_SITE_CONFIG"]).read_text())
    site["cache"] = str(root)
    path = spec_dir / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    path.chmod(0o644)
    yield path
    subprocess.run(["chmod", "-R", "u+w", str(root)], capture_output=True)


def test_prune_never_removes_an_image_a_queued_job_will_run(spec_dir, private_cache):
    n = nonce()
    spec = write_spec(spec_dir / "spec", tiny(f"prune-{n}", f"echo {n} > /stamp"))
    site = ["--site", str(private_cache)]
    built = stardock_json("build", str(spec), *site)
    c = Cache(load_site(str(private_cache)).cache, load_site(str(private_cache)).trusted_builders)
    entry = c.lookup(built["key"])
    held = subprocess.run(["sbatch", "--parsable", "--hold", "--output=/dev/null", "--wrap", "true"],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        c.register_use(entry, held)
        dry = stardock("images", "prune", "--older-than", "0", "--dry-run", *site)
        assert dry.returncode == 0 and built["key"][:12] not in dry.stdout
        kept = stardock("images", "prune", "--older-than", "0", *site)
        assert kept.returncode == 0 and Path(built["artifact"]).exists()
    finally:
        subprocess.run(["scancel", held], check=True)
    deadline = time.time() + 30
    while time.time() < deadline and sh(["squeue", "-h", "-j", held]).stdout.strip():
        time.sleep(0.2)
    gone = stardock("images", "prune", "--older-than", "0", *site)
    assert gone.returncode == 0 and f"removing {built['key'][:12]}" in gone.stdout
    assert not Path(built["artifact"]).exists()
    assert c.lookup(built["key"]) is None


def test_images_list_and_inspect_report_provenance(spec_dir):
    n = nonce()
    spec = write_spec(spec_dir, f"name: inspect-{n}\npackages: {{apt: [jq]}}\n")
    built = stardock_json("build", str(spec))
    listing = stardock_json("images")
    row = next(r for r in listing if r["key"] == built["key"])
    assert row["name"] == f"inspect-{n}" and row["engine"] == "podman" and row["trusted"] is True
    info = json.loads(stardock("images", "inspect", built["key"][:14]).stdout)
    assert info["versions"]["apt"]["jq"].startswith("1.6")
    assert info["base_digest"].startswith("sha256:") and info["builder"] == os.environ["USER"]
    assert info["verified"] is True and info["size"] > 0
    assert info["spec_sha256"] == load_spec(spec).digest()
    text = stardock("images")
    assert built["key"][:12] in text.stdout


@pytest.mark.apptainer
def test_apptainer_builds_a_sif_into_the_cache_once(spec_dir):
    n = nonce()
    spec = write_spec(spec_dir, tiny(f"sif-{n}", f"echo {n} > /stamp"))
    first = stardock_json("build", str(spec), "--engine", "apptainer")
    assert first["built"] is True and first["artifact"].endswith(".sif") and first["engine"] == "apptainer"
    second = stardock_json("build", str(spec), "--engine", "apptainer")
    assert second["built"] is False and second["artifact"] == first["artifact"]
    run = sh(["apptainer", "-s", "run", first["artifact"]])
    assert run.stdout.strip() == n
    podman = stardock_json("build", str(spec))
    assert podman["key"] != first["key"], "keys are per engine"
