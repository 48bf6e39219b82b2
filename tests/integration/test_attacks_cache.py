"""Issue 9, the shared image cache and builds: each test is a hostile second user's steps.

The victim is the test user; the attacker is the second test user (OTHER), who can write in the
cache's 1777 directories like anybody else. Each test uses a private cache (owned by the victim,
1777 like a site's) and a private site file, so attacks do not disturb each other or the shared
cache. Entries are planted by hand where no engine is needed (`stardock sbatch --dry-run --image`
reads the cache and renders the job script without running anything).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import signal
import subprocess
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
from clitools import OTHER, remove, shared_dir, stardock, stardock_argv, write_spec

from stardock_hpc.builder import key_for
from stardock_hpc.catalog import load_catalog
from stardock_hpc.engines import get_engine
from stardock_hpc.inputs import plan_for
from stardock_hpc.site import load_site

from slurmtools import sh

ME = os.getuid()
OTHER_UID = pwd.getpwnam(OTHER).pw_uid
LAYOUT = ("entries", "tmp", "locks", "used", "inuse")
ARTIFACT = {"podman": "image.oci.tar", "apptainer": "image.sif"}


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def tiny(name: str, *build: str) -> str:
    steps = ", ".join(json.dumps(s) for s in build)
    return f"name: {name}\nbuild: [{steps}]\ncommand: [cat, /stamp]\n"


def attacker(code: str, **values) -> subprocess.CompletedProcess:
    """Run Python code as the other user; `V` holds the values."""
    prelude = "import hashlib, json, os, stat, sys, time\nV = json.loads(sys.argv[1])\n"
    proc = sh(["sudo", "-n", "-u", OTHER, "--", "/usr/bin/python3", "-c", prelude + textwrap.dedent(code),
               json.dumps(values)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


PLANT = """
def plant(entry, meta, artifact_name, data, artifact_at=None):
    os.makedirs(entry, exist_ok=True)
    where = artifact_at or os.path.join(entry, artifact_name)
    os.makedirs(os.path.dirname(where), exist_ok=True)
    with open(where, "wb") as fh:
        fh.write(data.encode())
    meta = dict(meta, artifact_sha256=hashlib.sha256(data.encode()).hexdigest())
    with open(os.path.join(entry, "meta.json"), "w") as fh:
        json.dump(meta, fh)
"""


def fake_meta(key: str, name: str, engine: str = "podman", artifact: Optional[str] = None) -> dict:
    return {"key": key, "engine": engine, "name": name, "artifact": artifact or ARTIFACT[engine],
            "definition": "Containerfile", "spec": "spec.yaml", "created": 0, "size": 4,
            "builder": "x", "base": "debian:bookworm", "apps": [], "versions": {"apt": {}, "pip": {}},
            "image_tag": f"localhost/stardock/{name}:{key[:16]}" if engine == "podman" else None}


@dataclass
class Private:
    dir: Path
    root: Path
    site: Path

    def entries(self) -> Path:
        return self.root / "entries"

    def key(self, spec: Path, engine: str = "podman") -> str:
        site = load_site(str(self.site))
        _env, plan = plan_for(spec, site, load_catalog(site.catalog))
        return key_for(plan, get_engine(engine))

    def spec(self, text: str) -> Path:
        return write_spec(self.dir / "spec", text)

    def mine(self, key: str) -> list:
        """The victim's real entry directories for key."""
        return [p for p in self.entries().iterdir() if p.name.startswith(f"{key}-u{ME}")
                and not p.is_symlink() and p.is_dir() and p.stat().st_uid == ME]

    def run(self, *args: str, user: Optional[str] = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return stardock(*args, "--site", str(self.site), user=user, timeout=timeout)


def make_private(extra: str = "", layout: bool = True) -> Private:
    directory = shared_dir("stardock-attack-")
    root = directory / "cache"
    root.mkdir()
    root.chmod(0o1777)
    if layout:  # what the cache's owner (here the victim) sets up
        for name in LAYOUT:
            (root / name).mkdir()
            (root / name).chmod(0o1777)
    base = load_site().base(None)
    site = directory / "site.yaml"
    site.write_text(f"cache: {root}\nbases:\n  debian:bookworm: {{archive: {base.archive}}}\n{extra}")
    site.chmod(0o644)
    return Private(directory, root, site)


def destroy(private: Private) -> None:
    sh(["sudo", "-n", "-u", OTHER, "--", "chmod", "-R", "u+w", str(private.root)])
    sh(["sudo", "-n", "-u", OTHER, "--", "find", str(private.root), "-mindepth", "1", "-user", OTHER, "-delete"])
    sh(["chmod", "-R", "u+w", str(private.dir)])
    remove(private.dir)


@pytest.fixture
def private():
    made = []

    def make(extra: str = "", layout: bool = True) -> Private:
        made.append(make_private(extra, layout))
        return made[-1]
    yield make
    for p in made:
        destroy(p)


TRUST_OTHER = f"trusted_builders:\n  users: [{OTHER}]\n"


def dry_run_image(p: Private, key: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return p.run("sbatch", "--dry-run", "--image", key, "--wrap", "true", timeout=timeout)


def victim_entry(p: Private, key: str, name: str) -> Path:
    """A valid entry of the victim's own, made by hand (runs nothing: dry runs only)."""
    entry = p.entries() / f"{key}-u{ME}"
    entry.mkdir()
    data = b"fake"
    (entry / "image.oci.tar").write_bytes(data)
    meta = dict(fake_meta(key, name), artifact_sha256=hashlib.sha256(data).hexdigest())
    (entry / "meta.json").write_text(json.dumps(meta))
    entry.chmod(0o555)
    return entry


# --- 1. trust through symbolic links and artifact paths -----------------------------------------
@pytest.mark.parametrize("target", ["dev-shm", "cache-root"])
def test_an_entry_planted_as_a_link_to_a_sticky_directory_is_never_used(private, target):
    p = private()
    n = nonce()
    key = p.key(p.spec(tiny(f"link-{n}", f"echo {n} > /stamp")))
    # /dev/shm is root's (root is trusted); the cache root is the victim's own
    where, owner = (Path("/dev/shm"), 0) if target == "dev-shm" else (p.root, ME)
    evil = f"/dev/shm/stardock-evil-{n}.tar"
    attacker(PLANT + """
plant(V["where"], V["meta"], None, "evil", artifact_at=V["evil"])
os.symlink(V["where"], os.path.join(V["entries"], V["name"]))
""", where=str(where), evil=evil, entries=str(p.entries()), name=f"{key}-u{owner}",
             meta=fake_meta(key, f"link-{n}", artifact=evil))
    try:
        dry = dry_run_image(p, key)
        assert dry.returncode != 0 and evil not in dry.stdout, dry.stdout
        assert "symbolic link" in dry.stderr and "Traceback" not in dry.stderr, dry.stderr
        listing = p.run("images", "--json")
        assert listing.returncode == 0 and json.loads(listing.stdout) == [], listing.stdout
        if target == "dev-shm":  # and a build of that key builds (and runs) the victim's own image
            built = json.loads(p.run("build", str(p.dir / "spec" / "stardock.yaml"), "--json").stdout)
            assert built["built"] is True and evil not in built["artifact"]
            entry = Path(built["artifact"]).parent
            assert not entry.is_symlink() and entry.stat().st_uid == ME and entry.parent == p.entries()
    finally:
        attacker("""
for f in V["files"]:
    try: os.unlink(f)
    except FileNotFoundError: pass
""", files=[evil, str(where / "meta.json")])


@pytest.mark.parametrize("artifact", ["absolute", "dotdot"])
def test_an_artifact_outside_its_entry_is_refused(private, artifact):
    p = private(TRUST_OTHER)  # even a builder the site trusts cannot point outside the entry
    n = nonce()
    key = "a" * 64
    elsewhere = p.entries() / f"{key}-u{OTHER_UID}.elsewhere"
    path = str(elsewhere / "evil.oci.tar") if artifact == "absolute" else f"../{elsewhere.name}/evil.oci.tar"
    attacker(PLANT + """
plant(V["entry"], V["meta"], None, "evil", artifact_at=V["at"])
""", entry=str(p.entries() / f"{key}-u{OTHER_UID}"), at=str(elsewhere / "evil.oci.tar"),
             meta=fake_meta(key, f"path-{n}", artifact=path))
    dry = dry_run_image(p, key)
    assert dry.returncode != 0 and "evil" not in dry.stdout, dry.stdout
    assert "artifact" in dry.stderr and "Traceback" not in dry.stderr, dry.stderr


# --- 2. metadata into terminals and job scripts --------------------------------------------------
def test_metadata_with_control_characters_reaches_no_terminal_and_no_script(private):
    p = private(TRUST_OTHER)
    key = "b" * 64
    hostile = "ok\nrm -rf ~ #\x1b]0;owned\x07\x1b[2J"
    attacker(PLANT + """
plant(V["entry"], V["meta"], "image.oci.tar", "data")
""", entry=str(p.entries() / f"{key}-u{OTHER_UID}"), meta=fake_meta(key, hostile))
    listing = p.run("images")
    assert listing.returncode == 0, listing.stderr
    for stream in (listing.stdout, listing.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and "\nrm -rf" not in stream, stream
    rows = json.loads(p.run("images", "--json").stdout)
    assert all("\n" not in (r.get("name") or "") for r in rows)
    dry = dry_run_image(p, key)
    assert "rm -rf" not in dry.stdout and "\x1b" not in dry.stdout + dry.stderr, dry.stdout
    assert dry.returncode != 0 and "name" in dry.stderr, dry.stderr


# --- 4. denial of service ------------------------------------------------------------------------
def test_a_fifo_as_metadata_hangs_nobody(private):
    p = private()
    key = "c" * 64
    own = victim_entry(p, key, "fine")
    attacker("""
d = os.path.join(V["entries"], V["name"])
os.mkdir(d)
os.mkfifo(os.path.join(d, "meta.json"))
os.chmod(d, 0o755)
""", entries=str(p.entries()), name=f"{key}-u{OTHER_UID}")
    listing = p.run("images", "--json", timeout=30)  # a hang raises TimeoutExpired
    assert listing.returncode == 0 and [r["key"] for r in json.loads(listing.stdout)] == [key]
    dry = dry_run_image(p, key[:20], timeout=30)
    assert dry.returncode == 0 and str(own) in dry.stdout, dry.stderr


def test_a_decoy_named_after_a_full_key_does_not_make_it_ambiguous(private):
    p = private()
    key, other_key = "d" * 64, "e" * 64
    victim_entry(p, key, "real")
    attacker(PLANT + """
plant(os.path.join(V["entries"], V["key"] + "-u" + str(os.getuid()) + ".decoy"), V["meta"], "image.oci.tar", "x")
plant(os.path.join(V["entries"], V["key"]), V["meta"], "image.oci.tar", "x")
""", entries=str(p.entries()), key=key, meta=fake_meta(other_key, "decoy"))
    dry = dry_run_image(p, key)
    assert dry.returncode == 0, dry.stderr
    assert "real" in dry.stdout and "decoy" not in dry.stdout


@pytest.mark.podman
def test_squatted_entry_names_and_foreign_leftovers_in_tmp_do_not_stop_a_build(private):
    p = private()
    n = nonce()
    spec = p.spec(tiny(f"squat-{n}", f"echo {n} > /stamp"))
    key = p.key(spec)
    attacker("""
base = os.path.join(V["entries"], V["name"])
for suffix in [""] + [".%d" % i for i in range(1, 100)]:
    os.mkdir(base + suffix)
left = os.path.join(V["tmp"], V["name"] + ".squat")   # looks like a leftover of the victim's build
os.mkdir(left)
open(os.path.join(left, "f"), "w").close()
os.chmod(left, 0o755)
open(os.path.join(V["tmp"], V["name"] + ".file"), "w").close()
""", entries=str(p.entries()), tmp=str(p.root / "tmp"), name=f"{key}-u{ME}")
    first = p.run("build", str(spec), "--json")
    assert first.returncode == 0, first.stderr
    built = json.loads(first.stdout)
    assert built["built"] is True and built["key"] == key
    entry = Path(built["artifact"]).parent
    assert entry.stat().st_uid == ME and entry.parent == p.entries() and entry in p.mine(key)
    again = json.loads(p.run("build", str(spec), "--json").stdout)
    assert again["built"] is False and again["artifact"] == built["artifact"]


@pytest.mark.podman
def test_planted_lock_links_are_not_followed(private):
    p = private()
    n = nonce()
    spec = p.spec(tiny(f"locklink-{n}", f"echo {n} > /stamp"))
    key = p.key(spec)
    precious = p.dir / "precious"
    precious.write_text("mine\n")
    precious.chmod(0o600)
    attacker("""
for name in V["names"]:
    os.symlink(V["precious"], os.path.join(V["locks"], name))
""", locks=str(p.root / "locks"), precious=str(precious), names=[f"{key}.lock", f"{key}.u{ME}.lock"])
    proc = p.run("build", str(spec), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (precious.stat().st_mode & 0o777) == 0o600 and precious.read_text() == "mine\n"


@pytest.mark.podman
def test_a_lock_held_by_another_user_does_not_block_a_build(private):
    p = private()
    n = nonce()
    spec = p.spec(tiny(f"held-{n}", f"echo {n} > /stamp"))
    key = p.key(spec)
    code = """
import fcntl
fds = []
for name in V["names"]:
    fd = os.open(os.path.join(V["locks"], name), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fds.append(fd)
print("held", flush=True)
time.sleep(120)
"""
    prelude = "import json, os, sys, time\nV = json.loads(sys.argv[1])\n"
    values = {"locks": str(p.root / "locks"), "names": [f"{key}.lock", f"{key}.u{ME}.lock"]}
    holder = subprocess.Popen(["sudo", "-n", "-u", OTHER, "--", "/usr/bin/python3", "-c",
                               prelude + textwrap.dedent(code), json.dumps(values)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = p.run("build", str(spec), "--json", timeout=90)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["built"] is True
    finally:
        sh(["sudo", "-n", "-u", OTHER, "--", "kill", str(holder_child(holder.pid))])
        holder.wait(timeout=30)


def holder_child(sudo_pid: int) -> int:
    """The python process sudo started (sudo itself belongs to root)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == sudo_pid:
                return int(entry)
    return sudo_pid


@pytest.mark.podman
def test_a_build_waiting_for_its_own_lock_says_so_and_gives_up(private):
    p = private('policy: {build_timeout: "0:04"}\n')
    n = nonce()
    spec = p.spec(tiny(f"wait-{n}", f"echo {n} > /stamp"))
    key = p.key(spec)
    lock = p.root / "locks" / f"{key}.u{ME}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another build of ours holds it
        t0 = time.monotonic()
        proc = p.run("build", str(spec), timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert time.monotonic() - t0 < 30
        assert "waiting" in proc.stderr and "policy.build_timeout" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not p.mine(key)
    finally:
        os.close(fd)


@pytest.mark.podman
@pytest.mark.slurm
def test_planted_used_and_inuse_files_are_tolerated_and_never_followed(private):
    p = private()
    n = nonce()
    spec = p.spec(tiny(f"inuse-{n}", f"echo {n} > /stamp"))
    entry = f"{p.key(spec)}-u{ME}"  # the name the victim's entry will have: anybody can compute it
    through_link = p.dir / "created-through-a-link"  # where the victim can write (their home, say)
    attacker("""
os.symlink(V["target"], os.path.join(V["used"], V["entry"] + ".u" + str(V["me"])))
stamp = os.path.join(V["used"], V["entry"] + ".u0")     # claims root used it, far in the future
open(stamp, "w").close()
os.utime(stamp, (4102444800, 4102444800))
d = os.path.join(V["inuse"], V["entry"])                 # a foreign directory in inuse/
os.mkdir(d)
os.chmod(d, 0o755)
""", target=str(through_link), used=str(p.root / "used"), inuse=str(p.root / "inuse"), entry=entry, me=ME)
    first = p.run("build", str(spec), "--json")
    assert first.returncode == 0, first.stderr
    built = json.loads(first.stdout)
    assert Path(built["artifact"]).parent.name == entry
    again = p.run("build", str(spec), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["built"] is False, again.stderr
    assert not through_link.exists()
    info = json.loads(p.run("images", "inspect", built["key"]).stdout)
    assert info["last_used"] < 4102444800
    job = None
    try:
        sub = p.run("sbatch", "--parsable", "--hold", "--output=/dev/null", "--image", built["key"], "--wrap", "true")
        assert sub.returncode == 0 and "internal error" not in sub.stderr, sub.stderr
        job = sub.stdout.strip().split(";")[0]
        info = json.loads(p.run("images", "inspect", built["key"]).stdout)
        assert job in info["jobs"]
        kept = p.run("images", "prune", "--older-than", "0")
        assert kept.returncode == 0 and Path(built["artifact"]).exists(), kept.stderr
    finally:
        if job:
            sh(["scancel", job])


def test_prune_follows_no_planted_link(private):
    p = private()
    key = "f" * 64
    precious = p.dir / "precious"
    precious.mkdir()
    precious.chmod(0o1777)  # a sticky directory of the victim's (the cache root is another)
    (precious / "keep").write_text("keep\n")
    attacker(PLANT + """
plant(V["precious"], V["meta"], "image.oci.tar", "x")
os.symlink(V["precious"], os.path.join(V["entries"], V["key"] + "-u" + str(V["me"])))
os.symlink(V["precious"], os.path.join(V["tmp"], V["key"] + "-u" + str(V["me"]) + ".old"))
os.utime(os.path.join(V["tmp"], V["key"] + "-u" + str(V["me"]) + ".old"), (0, 0), follow_symlinks=False)
os.symlink(V["precious"], os.path.join(V["inuse"], V["key"] + "-u" + str(V["me"])))
""", precious=str(precious), meta=fake_meta(key, "planted"), entries=str(p.entries()), tmp=str(p.root / "tmp"),
             inuse=str(p.root / "inuse"), key=key, me=ME)
    proc = p.run("images", "prune", "--older-than", "0")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert (precious.stat().st_mode & 0o7777) == 0o1777
    assert (precious / "keep").read_text() == "keep\n" and (precious / "meta.json").exists()
    assert (p.root.stat().st_mode & 0o7777) == 0o1777


# --- the layout -------------------------------------------------------------------------------
@pytest.mark.podman
def test_a_layout_directory_made_by_another_user_is_refused(private):
    p = private(layout=False)
    n = nonce()
    spec = p.spec(tiny(f"layout-{n}", f"echo {n} > /stamp"))
    attacker("""
d = os.path.join(V["root"], "entries")
os.mkdir(d)
os.chmod(d, 0o1777)
""", root=str(p.root))
    proc = p.run("build", str(spec))
    assert proc.returncode != 0, proc.stderr
    assert "entries" in proc.stderr and OTHER in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not list(p.entries().iterdir())
    check = p.run("site", "check")
    assert check.returncode != 0 and OTHER in check.stdout, check.stdout


def test_a_user_cannot_set_up_a_cache_they_do_not_own(private):
    p = private(layout=False)
    n = nonce()
    spec = p.spec(tiny(f"notmine-{n}", f"echo {n} > /stamp"))
    proc = p.run("build", str(spec), user=OTHER)
    assert proc.returncode != 0 and "stardock images init" in proc.stderr, proc.stderr
    assert not [d for d in LAYOUT if (p.root / d).exists()]
    init = p.run("images", "init")
    assert init.returncode == 0, init.stderr
    for name in LAYOUT:
        st = (p.root / name).lstat()
        assert st.st_uid == ME and (st.st_mode & 0o7777) == 0o1777
    check = p.run("site", "check")
    assert "cache layout" in check.stdout and "fail  cache layout" not in check.stdout, check.stdout


# --- 5. build timeout and stopped builds -------------------------------------------------------
def working_containers() -> set:
    out = sh(["podman", "ps", "-a", "--external", "--format", "{{.ID}} {{.Names}}"])
    return {line for line in out.stdout.splitlines() if "working-container" in line}


def processes_with(marker: str) -> list:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and "pytest" not in cmd:
                found.append(f"{entry}: {cmd}")
    return found


def lock_is_free(p: Private, key: str) -> bool:
    path = p.root / "locks" / f"{key}.u{ME}.lock"
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def assert_nothing_left(p: Private, key: str, marker: str, containers_before: set) -> None:
    assert not p.mine(key), "an entry was published"
    assert not [x for x in (p.root / "tmp").iterdir() if x.name.startswith(f"{key}-u{ME}")], "staging left"
    assert lock_is_free(p, key)
    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_with(marker)
    assert not working_containers() - containers_before


ENGINES = [pytest.param("podman", marks=pytest.mark.podman), pytest.param("apptainer", marks=pytest.mark.apptainer)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_build_over_the_build_timeout_is_stopped_and_caches_nothing(private, engine):
    p = private('policy: {build_timeout: "0:20"}\n')
    n = nonce()
    marker = f"{int(n[:6], 16) % 1000 + 3000}.{n[6:9].encode().hex()}"
    spec = p.spec(tiny(f"slow-{n}", f"sleep {marker}", f"echo {n} > /stamp"))
    key = p.key(spec, engine)
    before = working_containers()
    t0 = time.monotonic()
    proc = p.run("build", str(spec), "--engine", engine, timeout=150)
    took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    assert "policy.build_timeout" in proc.stderr and "0:20" in proc.stderr and str(p.site) in proc.stderr
    assert "nothing was cached" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert took < 90, took
    assert_nothing_left(p, key, f"sleep {marker}", before)


@pytest.mark.podman
def test_sigterm_to_a_build_stops_the_engine_and_caches_nothing(private):
    p = private()
    n = nonce()
    marker = f"{int(n[:6], 16) % 1000 + 5000}.{n[6:9].encode().hex()}"
    spec = p.spec(tiny(f"term-{n}", f"sleep {marker}", f"echo {n} > /stamp"))
    key = p.key(spec)
    before = working_containers()
    proc = subprocess.Popen(stardock_argv("build", str(spec), "--site", str(p.site)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd="/tmp")
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not processes_with(f"sleep {marker}"):
        time.sleep(0.2)
    assert processes_with(f"sleep {marker}"), "the build step never started"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "nothing was cached" in out and "Traceback" not in out, out
    assert_nothing_left(p, key, f"sleep {marker}", before)
