"""What exactly ran (issue 16): stardock.lock, builds from it by another user into an empty
cache with both engines, a lock the mirror cannot satisfy, a changed pip version, and a job's
provenance read back after its image was pruned. Real builds (Debian's mirror and PyPI)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Dict

import pytest
from clitools import ENGINES, OTHER, remove, shared_dir, stardock, stardock_json, user_env, write_spec

from stardock_hpc.cache import Cache
from stardock_hpc.site import load_site

from slurmtools import sh, wait_job

SIX_OLD = "1.15.0"


@pytest.fixture(scope="module")
def work():
    path = shared_dir("stardock-lock-")
    nonce = f"{time.time_ns()}"
    # the nonce in the last step: a build of its own every run (its entry is pruned at the end), whose
    # package layers Podman still takes from its layer cache
    write_spec(path, "name: lock-test\npackages:\n  apt: [jq]\n  pip: [six==1.16.0]\n"
               f"build: ['echo {nonce} > /etc/lock-test-nonce']\n")
    yield path
    remove(path)
    cache = site_cache()  # this module's own images (a nonce each run): nothing else builds lock-test
    for entry in [e for e in cache.entries() if e.owner == os.getuid() and e.meta.get("name") == "lock-test"]:
        cache.remove(entry)


@pytest.fixture(scope="module")
def locked(work) -> Dict:
    """`stardock lock` by the test user (it builds the spec with Podman first)."""
    out = stardock_json("lock", str(work / "stardock.yaml"), "--engine", "podman")
    lock_file = work / "stardock.lock"
    assert out["lock"] == str(lock_file)
    lock_file.chmod(0o644)
    text = lock_file.read_text()
    assert out["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    return {**out, "text": text, "data": json.loads(text)}


@pytest.fixture(scope="module")
def other_cache(work):
    """An empty cache, where only the other user builds."""
    root = shared_dir("stardock-lock-cache-")
    root.chmod(0o1777)
    site = work / "other-site.yaml"  # the testbed's site (its bases, its CA certificates) but this cache
    text = Path(os.environ["STARDOCK_SITE_CONFIG"]).read_text()
    site.write_text(re.sub(r"(?m)^cache: .*$", f"cache: {root}", text))
    site.chmod(0o644)
    assert stardock("images", "init", "--site", str(site)).returncode == 0  # its owner sets it up, empty
    yield site
    sh(["sudo", "-n", "-u", OTHER, "--", "chmod", "-R", "u+w", str(root)])
    sh(["sudo", "-n", "-u", OTHER, "--", "rm", "-rf", str(root / "entries"), str(root / "tmp")])
    remove(root)


@pytest.fixture(scope="module")
def other_builds(work, locked, other_cache) -> Dict[str, Dict]:
    return {}


def test_the_lock_names_every_package_with_its_exact_version(work, locked):
    data = locked["data"]
    assert data["format"] == "stardock-lock/1" and data["base"]["name"] == "debian:bookworm"
    assert data["base"]["digest"].startswith("sha256:")
    assert data["apt"]["jq"] and data["apt"]["libc6"] and len(data["apt"]) > 80  # the base's packages too
    assert data["pip"]["six"]["version"] == "1.16.0" and len(data["pip"]["six"]["sha256"]) == 64
    info = stardock_json("images", "inspect", locked["key"])
    assert info["lock_sha256"] == locked["sha256"] and info["versions"]["apt"] == data["apt"]
    # the same image locked again gives the same bytes
    again = stardock_json("lock", str(work / "stardock.yaml"), "--engine", "podman", "-o", str(work / "again.lock"))
    assert (work / "again.lock").read_text() == locked["text"] and again["key"] == locked["key"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_locked_build_by_another_user_into_an_empty_cache_installs_exactly_the_locked_versions(
        work, locked, other_cache, other_builds, engine):
    out = stardock_json("build", str(work / "stardock.yaml"), "--locked", "--engine", engine,
                        "--site", str(other_cache), user=OTHER)
    assert out["built"] is True and out["locked"] is True
    assert out["lock_sha256"] == locked["sha256"]  # the image the other user built has the same lock
    assert out["key"] != locked["key"]  # a locked build is another build (pinned), not a cache hit
    other_builds[engine] = out
    info = stardock_json("images", "inspect", out["key"], "--site", str(other_cache), user=OTHER)
    data = locked["data"]
    assert info["versions"]["apt"] == data["apt"]
    assert info["versions"]["pip"] == {name: item["version"] for name, item in data["pip"].items()}
    assert info["locked"] is True
    # the image carries its lock, and its digest as a label
    tag = f"localhost/stardock/lock-test:{out['key'][:16]}"
    argv = ["podman", "run", "--rm", "--pull=never", tag] if engine == "podman" else \
        ["apptainer", "exec", out["artifact"]]
    inside = as_other(*argv, "cat", "/.stardock/stardock.lock")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout == locked["text"]
    label = as_other("podman", "image", "inspect", "--format", '{{index .Labels "org.stardock.lock-sha256"}}', tag) \
        if engine == "podman" else as_other("apptainer", "inspect", "--labels", out["artifact"])
    assert label.returncode == 0 and locked["sha256"] in label.stdout, label.stdout + label.stderr


def test_a_lock_naming_a_version_the_mirror_lacks_fails_naming_it_and_caches_nothing(work, locked):
    bad = dict(locked["data"], apt={**locked["data"]["apt"], "jq": "9.9-9"})
    path = work / "bad.lock"
    path.write_text(json.dumps(bad, indent=1, sort_keys=True) + "\n")
    path.chmod(0o644)
    cache = site_cache()
    uid = Path(work).stat().st_uid
    before = sorted(e.name for e in cache.entries() if e.owner == uid)  # the user's: the other lanes build too
    staged = {p.name for p in (cache.root / "tmp").iterdir() if p.stat().st_uid == uid}  # other tests' leftovers
    proc = stardock("build", str(work / "stardock.yaml"), "--locked", "--lock", str(path), "--engine", "podman")
    assert proc.returncode in (1, 2), proc.stderr
    error = next(line for line in proc.stderr.splitlines() if line.startswith("stardock: error:"))
    assert "jq=9.9-9" in error and "not on the package mirror" in error, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(e.name for e in cache.entries() if e.owner == uid) == before
    assert {p.name for p in (cache.root / "tmp").iterdir() if p.stat().st_uid == uid} <= staged  # its staging went


def test_one_pip_version_changed_in_the_lock_gives_another_key_and_diff_shows_exactly_it(
        work, locked, other_builds):
    downloads = work / "downloads"  # the archive pip would install for that version, and its hash
    got = sh([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
              str(downloads), f"six=={SIX_OLD}"])
    assert got.returncode == 0, got.stderr
    [wheel] = downloads.glob("six-*.whl")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    changed = dict(locked["data"], pip={**locked["data"]["pip"], "six": {"version": SIX_OLD, "sha256": sha}})
    path = work / "changed.lock"
    path.write_text(json.dumps(changed, indent=1, sort_keys=True) + "\n")
    path.chmod(0o644)
    out = stardock_json("build", str(work / "stardock.yaml"), "--locked", "--lock", str(path), "--engine", "podman")
    assert out["built"] is True and out["lock_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    if "podman" in other_builds:  # the same lock unchanged: the key the other user's build had
        assert out["key"] != other_builds["podman"]["key"]
    assert out["key"] != locked["key"]
    diff = stardock_json("images", "diff", locked["key"], out["key"])
    assert diff["differences"] == [f"pip six: 1.16.0 (image {locked['key'][:12]}), {SIX_OLD} (image {out['key'][:12]})"]
    same = stardock("images", "diff", locked["key"][:14], locked["key"])
    assert same.returncode == 0 and same.stdout.startswith("no differences"), same.stdout + same.stderr


@pytest.mark.slurm
@pytest.mark.podman
def test_a_jobs_provenance_is_read_back_after_its_image_was_pruned(work, locked):
    script = work / "job.sh"
    script.write_text("#!/bin/sh\njq --version\n")
    proc = stardock("sbatch", "--parsable", "--image", locked["key"], "-t", "2", f"--output={work}/job-%j.out",
                    str(script), cwd=work)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    assert wait_job(job)[job]["State"] == "COMPLETED"
    meta = stardock_json("images", "inspect", locked["key"])
    cache = site_cache()
    cache.remove(cache.lookup(locked["key"]))
    assert cache.lookup(locked["key"]) is None
    [row] = stardock_json("status", job)
    prov = row["provenance"]
    assert prov["key"] == locked["key"] and prov["lock_sha256"] == locked["sha256"]
    assert prov["spec_sha256"] == meta["spec_sha256"] == locked["data"]["spec_sha256"]
    assert prov["base_digest"] == meta["base_digest"] == locked["data"]["base"]["digest"]
    assert prov["artifact_sha256"] == meta["artifact_sha256"] and prov["image"] == meta["image_tag"]
    # the package set too: the job's lock was kept with its record
    same = stardock_json("images", "diff", job, job)
    assert same["differences"] == [] and same["a"] == f"job {job}"


def site_cache() -> Cache:
    site = load_site()
    return Cache(site.cache, site.trusted_builders)


def as_other(*argv: str):
    env = [f"{k}={v}" for k, v in user_env(OTHER).items()]
    return sh(["sudo", "-n", "-u", OTHER, "--", "env", "-i", *env, "sh", "-c", 'cd /tmp && exec "$@"', "sh", *argv])
