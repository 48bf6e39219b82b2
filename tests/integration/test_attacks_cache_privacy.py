"""Issue 23, item 4: the shared cache publishes only what may be published. Each test is the
attacker's steps: the second test user (OTHER) goes after what the victim (the test user) built.

An entry built from inputs others cannot read (the spec, a `files:` source), with build secrets,
or by a builder the site does not trust is private to its builder: the attacker reads nothing of
it (spec.yaml, the definition, meta.json, the artifact, its run form), is never offered it, and
builds its own entry of the same key; the victim still runs it, in a job on a node. A build
secret's value is in no file of the entry, no layer of the image and no line of the build's
output, while the build step did read it. The same spec readable by everybody, built by a
trusted builder, is everybody's to read and run.

Each test uses a private cache and site of its own (as test_attacks_cache.py does).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pwd
import re
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from clitools import OTHER, own_log, stardock, write_spec
from test_attacks_cache import Private, attacker, destroy, make_private

from slurmtools import sh, wait_job

ME = os.getuid()
VICTIM = pwd.getpwuid(ME).pw_name
TRUST_VICTIM = f"trusted_builders:\n  users: [{VICTIM}]\n"
ENTRY_FILES = ("meta.json", "spec.yaml", "Containerfile", "apptainer.def", "stardock.lock", "image.oci.tar",
               "image.sif", "image.sqfs")
MASK = "********"
PODMAN = pytest.param("podman", marks=pytest.mark.podman)
APPTAINER = pytest.param("apptainer", marks=pytest.mark.apptainer)


@pytest.fixture
def private() -> Iterator:
    made: List[Private] = []

    def make(extra: str = "") -> Private:
        made.append(make_private(extra))
        return made[-1]
    yield make
    for p in made:
        destroy(p)


def nonce() -> str:
    return uuid.uuid4().hex[:12]


def built(p: Private, spec: Path, engine: str, env: Optional[Dict[str, str]] = None,
          user: Optional[str] = None) -> Dict:
    proc = stardock("build", str(spec), "--engine", engine, "--json", "--site", str(p.site), user=user,
                    env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# What the attacker tries on an entry: list it, open every file stardock puts there, and read
# everything readable under the whole cache looking for the victim's values.
SPY = """
entry = V["entry"]
out = {"listed": None, "opened": [], "found": []}
try:
    out["listed"] = os.listdir(entry)
except PermissionError:
    pass
for name in V["files"]:
    try:
        with open(os.path.join(entry, name), "rb") as fh:
            fh.read(1)
        out["opened"].append(name)
    except (PermissionError, FileNotFoundError):
        pass
for root, dirs, files in os.walk(V["cache"]):
    for name in files + dirs:
        path = os.path.join(root, name)
        if any(v in name for v in V["values"]):
            out["found"].append(path)
        try:
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as fh:
                    data = fh.read()
                if any(v.encode() in data for v in V["values"]):
                    out["found"].append(path)
        except OSError:
            pass
print(json.dumps(out))
"""


def spied(p: Private, entry: Path, values: List[str]) -> Dict:
    return json.loads(attacker(SPY, entry=str(entry), files=list(ENTRY_FILES), cache=str(p.root),
                               values=values).stdout)


def offered_to_the_attacker(p: Private, key: str) -> List[str]:
    """How the attacker could come to use the entry: list, inspect, submit, run here."""
    ways = []
    listing = p.run("images", "--json", user=OTHER)
    assert listing.returncode == 0, listing.stderr
    if any(r["key"] == key for r in json.loads(listing.stdout)):
        ways.append("listed")
    if p.run("images", "inspect", key, user=OTHER).returncode == 0:
        ways.append("inspect")
    dry = p.run("sbatch", "--dry-run", "--image", key, "--wrap", "true", user=OTHER)
    if dry.returncode == 0:
        ways.append("sbatch")
    return ways


def run_job_on_a_node(p: Private, key: str, what: str) -> str:
    """The entry's owner runs it in a Slurm job (a node that never saw it starts it from the cache)."""
    out = p.dir / f"job-{nonce()}.out"
    sub = p.run("sbatch", "--parsable", "--image", key, f"--output={out}", "--wrap", what)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    rows = wait_job(job, timeout=300)
    assert rows[job]["State"].startswith("COMPLETED"), (rows, out.read_text() if out.exists() else "")
    return own_log(out.read_text())


# --- private inputs --------------------------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.parametrize("kind, engine", [
    pytest.param(kind, engine, marks=pytest.mark.podman if engine == "podman" else pytest.mark.apptainer,
                 id=f"{kind}-{engine}")
    for kind in ("spec-0600", "files-in-a-0700-dir") for engine in ("podman", "apptainer")
] + [pytest.param("untrusted-builder", "podman", marks=pytest.mark.podman, id="untrusted-builder-podman")])
def test_the_attacker_reads_and_runs_nothing_of_an_entry_built_from_private_inputs(private, kind, engine):
    p = private("" if kind == "untrusted-builder" else TRUST_VICTIM)
    n = nonce()
    token, licence = f"glpat-{nonce()}{nonce()}", f"LIC-{nonce()}"
    project = p.dir / "project"
    text = (f"name: private-{kind}-{n}\n"
            f"build: ['git ls-remote https://oauth2:{token}@gitlab.invalid/x.git || true', 'echo {n} > /stamp']\n"
            f"env: {{LICENCE_KEY: '{licence}'}}\ncommand: [cat, /stamp]\n")
    if kind == "files-in-a-0700-dir":
        text += "files: [{src: closed/data.txt, dest: /opt/data.txt}]\n"
    spec = write_spec(project, text)  # everybody may read it and its directory...
    if kind == "spec-0600":
        spec.chmod(0o600)            # ...but this spec
    elif kind == "files-in-a-0700-dir":
        (project / "closed").mkdir()
        (project / "closed" / "data.txt").write_text(f"{token}\n")
        (project / "closed" / "data.txt").chmod(0o644)  # readable itself, in a directory others cannot enter
        (project / "closed").chmod(0o700)
    out = built(p, spec, engine)
    entry = Path(out["artifact"]).parent
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["visibility"] == "private", meta
    assert ("not one of the site's trusted builders" if kind == "untrusted-builder" else "others cannot read") \
        in meta["visibility_reason"]
    assert entry.stat().st_mode & 0o777 == 0o500
    assert all(f.stat().st_mode & 0o777 == 0o400 for f in entry.iterdir())

    seen = spied(p, entry, [token, licence])
    assert seen == {"listed": None, "opened": [], "found": []}, seen
    assert offered_to_the_attacker(p, out["key"]) == []

    # the victim's own jobs run it, on a node
    assert run_job_on_a_node(p, out["key"], "cat /stamp").strip() == n
    if engine == "podman" and kind == "spec-0600":
        # the attacker with the same spec text builds an entry of their own (the same key)
        theirs = p.dir / "theirs"
        theirs.mkdir(mode=0o777)
        theirs.chmod(0o777)  # a place the attacker may write in
        attacker("""
open(V["dir"] + "/stardock.yaml", "w").write(V["text"])
""", dir=str(theirs), text=text)
        again = built(p, theirs / "stardock.yaml", engine, user=OTHER)
        assert again["key"] == out["key"] and again["built"] is True, again
        assert Path(again["artifact"]).parent.name == f"{out['key']}-u{pwd.getpwnam(OTHER).pw_uid}"


@pytest.mark.parametrize("engine", [PODMAN, APPTAINER])
def test_a_trusted_builders_entry_from_public_inputs_is_everybodys(private, engine):
    p = private(TRUST_VICTIM)
    n = nonce()
    spec = write_spec(p.dir / "public", f"name: public-{n}\nbuild: ['echo {n} > /stamp']\ncommand: [cat, /stamp]\n")
    out = built(p, spec, engine)
    entry = Path(out["artifact"]).parent
    assert entry.stat().st_mode & 0o777 == 0o555
    seen = spied(p, entry, [n])
    assert seen["listed"] is not None and {"meta.json", "spec.yaml", Path(out["artifact"]).name} <= set(seen["opened"])
    assert sorted(offered_to_the_attacker(p, out["key"])) == ["inspect", "listed", "sbatch"]
    info = json.loads(p.run("images", "inspect", out["key"], user=OTHER).stdout)
    assert info["visibility"] == "public" and "trusted builder" in info["visibility_reason"]
    ran = stardock("exec", "--image", out["key"], "--", "cat", "/stamp", user=OTHER,
                   env={"STARDOCK_SITE_CONFIG": str(p.site)}, timeout=300)
    assert ran.returncode == 0 and ran.stdout.strip() == n, ran.stderr


# --- build secrets ---------------------------------------------------------------------------------
def layers_text(archive: Path) -> bytes:
    """Every blob of an OCI archive, decompressed: the layers' files as they are in the image."""
    out = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                out.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return b"".join(out)


def squashfs_tree(image: Path, where: Path) -> Path:
    """The root file system of a squashfs (the run form), or of a SIF's squashfs partition."""
    source = image
    if image.suffix == ".sif":
        listing = sh(["apptainer", "sif", "list", str(image)])
        assert listing.returncode == 0, listing.stderr
        start, end = next(map(int, m.groups()) for m in re.finditer(r"\|(\d+)-(\d+)\s*\|FS", listing.stdout))
        source = where / "part.sqfs"
        with open(image, "rb") as fh:
            fh.seek(start)
            source.write_bytes(fh.read(end - start))
    tree = where / "tree"
    sh(["unsquashfs", "-no-xattrs", "-ignore-errors", "-d", str(tree), str(source)])
    return tree


def files_holding(tree: Path, values: List[bytes]) -> List[str]:
    found = []
    for root, _dirs, files in os.walk(tree):
        for name in files:
            path = Path(root) / name
            try:
                data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            except OSError:
                continue
            if any(v in data for v in values):
                found.append(str(path.relative_to(tree)))
    return found


@pytest.mark.parametrize("engine", [PODMAN, APPTAINER])
def test_a_build_secret_reaches_the_build_step_and_nothing_else(private, engine, tmp_path):
    p = private(TRUST_VICTIM)
    n = nonce()
    token, licence = f"glpat-{nonce()}{nonce()}", f"LIC-{nonce()}-{nonce()}"
    vault = p.dir / "vault"
    vault.mkdir(mode=0o700)
    (vault / "token").write_text(token)
    (vault / "token").chmod(0o600)
    steps = ["sha256sum /run/secrets/token | cut -d' ' -f1 > /token.sha256",
             'echo "the token is $(cat /run/secrets/token)"', 'echo "the licence is $(cat /run/secrets/licence)"',
             f"echo {n} > /stamp"]
    spec = write_spec(p.dir / "project", f"name: secret-{n}\nbuild: {json.dumps(steps)}\ncommand: [cat, /stamp]\n"
                      f"secrets:\n  - {{id: token, file: {vault / 'token'}}}\n  - {{id: licence, env: DEMO_LICENCE}}\n")
    proc = stardock("build", str(spec), "--engine", engine, "--site", str(p.site), env={"DEMO_LICENCE": licence},
                    timeout=600)
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert token not in log and licence not in log and f"the token is {MASK}" in log, log[-3000:]
    key = proc.stdout.split("key: ", 1)[1].split()[0]
    entry = Path(proc.stdout.split("artifact: ", 1)[1].split()[0]).parent
    values = [token.encode(), licence.encode()]
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["visibility"] == "private" and "secrets token, licence" in meta["visibility_reason"]
    for f in entry.iterdir():  # as the owner, who can read them all
        assert not any(v in f.read_bytes() for v in values), f
    assert b"id: token" in (entry / "spec.yaml").read_bytes()
    digest = hashlib.sha256(token.encode()).hexdigest().encode()
    if engine == "podman":
        layers = layers_text(entry / "image.oci.tar")
        assert digest in layers and not any(v in layers for v in values)  # read by the step, kept by no layer
    forms = [entry / name for name in ("image.sqfs", "image.sif") if (entry / name).exists()]
    for n_form, form in enumerate(forms):
        (tmp_path / str(n_form)).mkdir()
        tree = squashfs_tree(form, tmp_path / str(n_form))
        assert (tree / "token.sha256").read_bytes().strip() == digest
        assert files_holding(tree, values) == []
        shutil.rmtree(tmp_path / str(n_form), ignore_errors=True)
    ran = stardock("exec", "--image", key, "--", "cat", "/token.sha256", env={"STARDOCK_SITE_CONFIG": str(p.site)},
                   timeout=300)
    assert ran.returncode == 0 and ran.stdout.strip() == digest.decode(), ran.stderr
    assert spied(p, entry, [token, licence]) == {"listed": None, "opened": [], "found": []}
    # a cache hit needs no secret; a build does, and its absence is named (never a value)
    (vault / "token").unlink()
    hit = stardock("build", str(spec), "--engine", engine, "--site", str(p.site), timeout=120)
    assert hit.returncode == 0 and "nothing to build" in hit.stderr, hit.stderr
    spec.write_text(spec.read_text().replace(f"echo {n} > /stamp", f"echo {n}-2 > /stamp"))
    missing = stardock("build", str(spec), "--engine", engine, "--site", str(p.site), env={"DEMO_LICENCE": licence},
                       timeout=120)
    assert missing.returncode == 2 and "secrets: token" in missing.stderr and licence not in missing.stderr


@pytest.mark.podman
def test_the_secret_staging_directory_is_gone_after_a_failed_build(private):
    p = private(TRUST_VICTIM)
    n = nonce()
    token = f"tok-{nonce()}{nonce()}"
    (p.dir / "token").write_text(token)
    spec = write_spec(p.dir / "project", f"name: failing-{n}\nbuild: ['cat /run/secrets/token; exit 3']\n"
                      f"secrets: [{{id: token, file: {p.dir / 'token'}}}]\n")
    before = staged_secret_dirs()
    proc = stardock("build", str(spec), "--engine", "podman", "--site", str(p.site), timeout=600)
    assert proc.returncode == 1 and token not in proc.stdout + proc.stderr and MASK in proc.stderr, proc.stderr
    assert staged_secret_dirs() - before == set()  # only this suite's builds use secrets


def staged_secret_dirs() -> set:
    found = set()
    for parent in (Path(f"/run/user/{ME}"), Path("/tmp")):
        try:
            found |= {p for p in parent.iterdir() if p.name.startswith("stardock-secrets-") and p.owner() == VICTIM}
        except OSError:
            pass
    return found
