"""Build secrets (issue 23): the spec names them, the builder alone reads their values (from a file
of the user's own, checked, or the build's environment), the engine gets a private staged file,
and no value reaches the build context, the definition, the cache key, the entry or the output.
The engines' real builds are in tests/integration/test_attacks_cache_privacy.py."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from typing import List

import pytest

from stardock_hpc import builder, buildsecrets, proc
from stardock_hpc.builder import build, key_for
from stardock_hpc.buildsecrets import MASK, Masker, SecretValue, read_user_file, read_values, staged
from stardock_hpc.cache import PRIVATE
from stardock_hpc.catalog import Catalog, load_catalog
from stardock_hpc.engines import get_engine
from stardock_hpc.engines.base import Engine, ImageRef
from stardock_hpc.engines.podman import BuildFailed
from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.lockfile import Packages
from stardock_hpc.plan import resolve
from stardock_hpc.safefs import Unsafe
from stardock_hpc.site import parse_site
from stardock_hpc.spec import Secret, parse_spec

UID = os.getuid()
VALUE = "glpat-Zq8v3kTn5Rw2Xy7Lm4Pb"
SITE = parse_site("bases:\n  debian:bookworm: {ref: registry.example.org/debian:12}\n", Path("/site.yaml"))
SPEC = ("name: secret-demo\nbuild: ['curl -H \"PRIVATE-TOKEN: $(cat /run/secrets/token)\" https://x/y']\n"
        "secrets:\n  - {id: token, file: token.txt}\n  - {id: licence, env: DEMO_LICENCE}\n")


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO read by mistake would block forever: fail instead."""
    def alarm(_signum, _frame):
        raise AssertionError("blocked")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def spec_at(directory: Path, text: str = SPEC) -> Path:
    path = directory / "stardock.yaml"
    path.write_text(text)
    return path


# --- the spec -----------------------------------------------------------------------------------
def test_secrets_are_named_in_the_spec_with_where_they_come_from(tmp_path):
    env = parse_spec(SPEC, spec_at(tmp_path))
    assert env.secrets == (Secret("token", file="token.txt"), Secret("licence", env="DEMO_LICENCE"))
    assert env.canonical()["secrets"] == [{"id": "token", "file": "token.txt"},
                                          {"id": "licence", "env": "DEMO_LICENCE"}]


def test_a_spec_without_secrets_keeps_its_digest():
    """Its canonical form is unchanged, so its cache key and any lock made for it still hold."""
    env = parse_spec("name: a\n", Path("/x/stardock.yaml"))
    assert "secrets" not in env.canonical()


@pytest.mark.parametrize("text, why", [
    ("secrets: [{id: t}]", "exactly one of file, env"),
    ("secrets: [{id: t, file: f, env: E}]", "exactly one of file, env"),
    ("secrets: [{id: ../t, env: E}]", "is not allowed"),
    ("secrets: [{id: 't,src=/etc/shadow', env: E}]", "is not allowed"),
    ("secrets: [{id: t, env: 'A B'}]", "is not allowed"),
    ("secrets: [{id: t, file: ~root/.token}]", "your home"),
    ("secrets: [{id: t, env: A}, {id: t, env: B}]", "listed twice"),
    ("secrets: [{id: t, value: s3cr3t}]", "unknown key 'value'"),
])
def test_bad_secrets_are_refused_with_the_key_path(tmp_path, text, why):
    with pytest.raises(UsageError, match=why):
        parse_spec(f"name: a\n{text}\n", spec_at(tmp_path, f"name: a\n{text}\n"))


def test_the_cache_key_names_the_secrets_but_holds_no_value(tmp_path):
    plan = resolve(parse_spec(SPEC, spec_at(tmp_path)), SITE, Catalog({}))
    key = key_for(plan, get_engine("podman"))
    # the plan has no value to give: the key is the same whatever the values are
    assert not any(VALUE in repr(v) for v in plan.__dict__.values())
    renamed = resolve(parse_spec(SPEC.replace("id: token", "id: token2"), tmp_path / "stardock.yaml"),
                      SITE, Catalog({}))
    assert key_for(renamed, get_engine("podman")) != key


# --- reading a value ---------------------------------------------------------------------------
def test_a_file_of_ours_is_read_and_links_other_users_made_are_not_followed(tmp_path):
    f = tmp_path / "token.txt"
    f.write_text(VALUE)
    assert read_user_file(f, UID, 100) == VALUE.encode()
    link = tmp_path / "link"
    link.symlink_to(f)
    with pytest.raises(Unsafe, match="symbolic link"):
        read_user_file(link, UID, 100)  # the file itself: never a link
    hop = tmp_path / "hop"
    hop.symlink_to(tmp_path)
    assert read_user_file(hop / "token.txt", UID, 100) == VALUE.encode()  # our own link on the way
    if UID == 0:
        os.lchown(hop, 65534, 65534)  # one another user planted
        with pytest.raises(Unsafe, match="symbolic link of uid 65534"):
            read_user_file(hop / "token.txt", UID, 100)


def test_a_file_that_is_not_ours_regular_or_small_is_refused(tmp_path):
    f = tmp_path / "token.txt"
    f.write_text(VALUE)
    with pytest.raises(Unsafe, match="belongs to uid"):
        read_user_file(f, UID + 1, 100)
    with pytest.raises(Unsafe, match="at most 5"):
        read_user_file(f, UID, 5)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(Unsafe, match="not a regular file"):
        read_user_file(tmp_path / "fifo", UID, 100)
    with pytest.raises(Unsafe, match="not a regular file"):
        read_user_file(tmp_path, UID, 100)


def test_values_come_from_the_spec_directory_the_home_or_the_environment(tmp_path):
    spec = spec_at(tmp_path)
    (tmp_path / "token.txt").write_text(VALUE)
    env = parse_spec(SPEC, spec)
    values = read_values(env.secrets, spec, {"DEMO_LICENCE": "LIC-1234-5678"})
    assert values == [SecretValue("token", VALUE.encode()), SecretValue("licence", b"LIC-1234-5678")]
    with pytest.raises(UsageError, match="DEMO_LICENCE is not set"):
        read_values(env.secrets, spec, {})
    with pytest.raises(UsageError, match="empty"):
        read_values(env.secrets, spec, {"DEMO_LICENCE": ""})
    assert buildsecrets.source_path(Secret("t", file="~/.t"), tmp_path, UID) == \
        Path(pwd.getpwuid(UID).pw_dir) / ".t"
    (tmp_path / "token.txt").unlink()
    with pytest.raises(UsageError, match="secrets: token: cannot read"):
        read_values(env.secrets, spec, {"DEMO_LICENCE": "x"})


# --- masking --------------------------------------------------------------------------------------
def test_values_are_masked_in_lines_and_errors():
    mask = Masker([SecretValue("t", VALUE.encode()), SecretValue("k", b"line-one-xx\nline-two-yy\nab\n")])
    assert mask(f"Cloning https://oauth2:{VALUE}@host/x") == f"Cloning https://oauth2:{MASK}@host/x"
    assert mask("key: line-two-yy") == f"key: {MASK}" and mask("ab cd") == "ab cd"  # too short to mask
    failed = BuildFailed("podman build", 1, f"step 1\ncurl: bad token {VALUE}\n")
    mask.error(failed)
    assert VALUE not in str(failed) and VALUE not in failed.output and MASK in str(failed)


# --- staging ---------------------------------------------------------------------------------------
def test_values_are_staged_private_and_gone_after_the_build(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    values = [SecretValue("token", VALUE.encode())]
    with staged(values, {"XDG_RUNTIME_DIR": str(runtime)}) as files:
        f = files["token"]
        assert f.read_bytes() == VALUE.encode() and f.parent.parent.parent == runtime
        assert stat.S_IMODE(f.stat().st_mode) == 0o400 and stat.S_IMODE(f.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(f.parent.parent.stat().st_mode) == 0o700
    assert not f.exists() and not f.parent.parent.exists()
    with pytest.raises(RuntimeError):
        with staged(values, {"XDG_RUNTIME_DIR": str(runtime)}) as files:
            raise RuntimeError("the build failed")
    assert not files["token"].exists()


# --- the engines get files, never values ------------------------------------------------------------
def test_the_engines_are_given_the_staged_files_never_the_values(tmp_path, monkeypatch):
    seen: List[tuple] = []

    def fake_run(argv, **kw):
        seen.append(tuple(str(a) for a in argv))
        return proc.Result(tuple(argv), 0, "", "")
    monkeypatch.setattr(proc, "run", fake_run)
    secrets = {"token": tmp_path / "s" / "token", "licence": tmp_path / "s" / "licence"}
    get_engine("apptainer").build(tmp_path, "t", tmp_path, secrets=secrets)
    assert f"--bind={tmp_path / 's'}:/run/secrets:ro" in seen[-1]
    monkeypatch.setattr("stardock_hpc.engines.podman._working_containers", lambda: {})
    get_engine("podman").build(tmp_path, "t", tmp_path, secrets=secrets)
    build_argv = next(a for a in seen if a[:2] == ("podman", "build"))
    assert f"--secret=id=token,src={secrets['token']}" in build_argv
    assert f"--secret=id=licence,src={secrets['licence']}" in build_argv


# --- a whole build: a fake engine that prints the value and looks for it --------------------------
class LeakyEngine(Engine):
    """Reads the staged secret like a build step, prints it, and reports where it found it."""
    name = "podman"
    binary = "true"
    artifact_name = "image.oci.tar"
    fail = False
    found: List[str] = []

    def prepare_base(self, base, on_line=None, *, timeout=None):
        pass

    def build(self, context, tag, out_dir, on_line=None, *, timeout=None, secrets=None):
        value = Path(secrets["token"]).read_text()
        self.found += [str(p) for p in context.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]
        assert on_line is not None
        on_line(f"STEP 2/3: cloning https://oauth2:{value}@gitlab.example.org/x.git")
        if self.fail:
            raise BuildFailed("podman build", 1, f"fatal: Authentication failed for {value}")
        (out_dir / self.artifact_name).write_bytes(b"an image built with " + b"sha256 of the value")
        return out_dir / self.artifact_name

    def image_for(self, artifact, tag):
        return ImageRef(self.name, tag)

    def run_argv(self, image, command, mounts, env, workdir, options):
        return ["true"]


@pytest.fixture
def project():
    """A project everybody can read, in a cache everybody can enter (tmp_path lies in a 0700 dir)."""
    top = Path(tempfile.mkdtemp(prefix="stardock-secrets-test-", dir="/tmp"))
    top.chmod(0o755)
    cache = top / "cache"
    cache.mkdir()
    cache.chmod(0o1777)
    (top / "site.yaml").write_text(f"cache: {cache}\nbases:\n"
                                   "  debian:bookworm: {ref: registry.example.org/debian:12}\n")
    spec = spec_at(top)
    spec.chmod(0o644)
    secret_dir = top / "private"
    secret_dir.mkdir(mode=0o700)
    (secret_dir / "token").write_text(VALUE)
    spec.write_text(SPEC.replace("file: token.txt", f"file: {secret_dir / 'token'}"))
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("fail", [False, True])
def test_no_value_reaches_the_context_the_entry_or_the_output(project, monkeypatch, fail):
    monkeypatch.setattr(builder, "image_packages", lambda *a, **k: Packages.of({}, []))
    monkeypatch.setenv("DEMO_LICENCE", "LIC-9f8e7d6c5b4a")
    site = parse_site((project / "site.yaml").read_text(), project / "site.yaml")
    engine = LeakyEngine()
    engine.fail, engine.found = fail, []
    lines: List[str] = []
    if fail:
        with pytest.raises(StardockError) as err:
            build(project / "stardock.yaml", site, load_catalog(), engine, lines.append)
        assert VALUE not in str(err.value) and MASK in str(err.value)
    else:
        result = build(project / "stardock.yaml", site, load_catalog(), engine, lines.append)
        entry = result.entry
        assert entry.visibility == PRIVATE and "secrets token, licence" in entry.meta["visibility_reason"]
        for f in entry.path.iterdir():
            data = f.read_bytes()
            assert VALUE.encode() not in data and b"LIC-9f8e7d6c5b4a" not in data, f
        assert b"secrets:" in (entry.path / "spec.yaml").read_bytes()
        assert b"--mount=type=secret,id=token" in (entry.path / "Containerfile").read_bytes()
    assert engine.found == []  # nothing in the build context holds the value
    assert lines and all(VALUE not in line for line in lines) and MASK in lines[0]
    leftovers = [p for p in Path(tempfile.gettempdir()).glob("stardock-secrets-*") if p.stat().st_uid == UID
                 and (p / "secrets" / "token").exists()]
    assert leftovers == []
