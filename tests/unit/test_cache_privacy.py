"""The cache publishes only what may be published (issue 23): who may read an entry is decided
from its inputs and its builder, recorded in meta.json, and set as the entry's modes before the
rename that publishes it; another user's private entry is never offered.

Run as root here, so what the kernel would refuse another user is played by the mode bits the
decision reads (tests/integration/test_attacks_cache_privacy.py runs it as the other user)."""
from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from stardock_hpc.cache import PRIVATE, PUBLIC, Cache, CacheError
from stardock_hpc.cache.entries import Invalid, validate_meta
from stardock_hpc.catalog import Catalog
from stardock_hpc.errors import UsageError
from stardock_hpc.plan import resolve
from stardock_hpc.site import Trust, parse_site
from stardock_hpc.spec import parse_spec
from stardock_hpc.visibility import decide, unreadable

UID = os.getuid()
KEY = "a" * 64


@pytest.fixture
def open_dir():
    """A directory everybody may enter (pytest's own tmp_path lies under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="stardock-privacy-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def made(path: Path, text: str = "x\n", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def plan_in(directory: Path, extra: str = "", spec_mode: int = 0o644):
    base = made(directory / "base.oci.tar", "base")
    site = parse_site(f"bases:\n  debian:bookworm: {{archive: {base}}}\n", directory / "site.yaml")
    spec = made(directory / "proj" / "stardock.yaml", f"name: demo\n{extra}", spec_mode)
    return spec, resolve(parse_spec(spec.read_text(), spec), site, Catalog({}))


# --- who may read an input ------------------------------------------------------------------
def test_a_file_everybody_can_reach_and_read_is_readable(open_dir):
    assert unreadable(made(open_dir / "a" / "f")) is None


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660])
def test_a_file_only_its_owner_or_group_reads_is_not(open_dir, mode):
    """Group-readable is not readable by everybody."""
    problem = unreadable(made(open_dir / "f", mode=mode))
    assert problem and "not readable by others" in problem and f"{mode:04o}" in problem


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o744])
def test_an_ancestor_others_cannot_enter_closes_everything_below(open_dir, mode):
    f = made(open_dir / "closed" / "deep" / "f")
    (open_dir / "closed").chmod(mode)
    problem = unreadable(f)
    assert problem and str(open_dir / "closed") in problem and "closed to others" in problem


def test_a_directory_needs_every_file_and_directory_in_it_readable(open_dir):
    tree = open_dir / "tree"
    made(tree / "a" / "ok")
    assert unreadable(tree) is None
    made(tree / "a" / "b" / "secret", mode=0o600)
    assert "secret" in (unreadable(tree) or "")
    (tree / "a" / "b" / "secret").chmod(0o644)
    (tree / "a" / "b").chmod(0o751)  # enterable but not listable: its names are not everybody's
    assert str(tree / "a" / "b") in (unreadable(tree) or "")


def test_links_are_judged_where_they_lead_or_as_links_inside_a_tree(open_dir):
    hidden = open_dir / "hidden"
    secret = made(hidden / "secret")
    hidden.chmod(0o700)
    link = open_dir / "link"
    link.symlink_to(secret)
    assert str(hidden) in (unreadable(link) or "")       # a source reached through a link: its real path
    tree = open_dir / "tree"
    made(tree / "f")
    (tree / "to-secret").symlink_to(secret)               # copied as a link: only its text goes along
    assert unreadable(tree) is None


def test_a_fifo_in_a_tree_is_not_a_readable_file(open_dir):
    tree = open_dir / "tree"
    made(tree / "f")
    os.mkfifo(tree / "pipe")
    assert "not a regular file" in (unreadable(tree) or "")


def test_a_missing_input_is_not_taken_for_a_readable_one(open_dir):
    assert "cannot be checked" in (unreadable(open_dir / "nothing") or "")


# --- the decision ------------------------------------------------------------------------------
def test_a_trusted_builder_with_readable_inputs_publishes(open_dir):
    spec, plan = plan_in(open_dir)
    seen = decide(spec, plan, "alice", True)
    assert seen.scope == PUBLIC and "trusted" in seen.reason


def test_a_builder_nobody_else_trusts_keeps_the_entry_private(open_dir):
    spec, plan = plan_in(open_dir)
    seen = decide(spec, plan, "mallory", False)
    assert seen.scope == PRIVATE and "mallory is not one of the site's trusted builders" in seen.reason


@pytest.mark.parametrize("what", ["spec", "spec-dir", "files", "files-tree", "lock", "base"])
def test_any_input_others_cannot_read_makes_it_private(open_dir, what):
    made(open_dir / "proj" / "data" / "in.txt")
    spec, plan = plan_in(open_dir, "files: [{src: data, dest: /opt/data}]\n")
    lock = made(open_dir / "proj" / "stardock.lock")
    closed = {"spec": spec, "spec-dir": spec.parent, "files": open_dir / "proj" / "data" / "in.txt",
              "files-tree": open_dir / "proj" / "data", "lock": lock, "base": plan.base.archive}[what]
    assert decide(spec, plan, "alice", True).scope == PUBLIC
    closed.chmod(0o700 if closed.is_dir() else 0o600)
    if what == "lock":  # the lock counts for a --locked build only
        assert decide(spec, plan, "alice", True, lock).scope == PUBLIC  # plan.lock is None here
        plan = plan.__class__(**{**plan.__dict__, "lock": object()})
    seen = decide(spec, plan, "alice", True, lock)
    assert seen.scope == PRIVATE and "others cannot read" in seen.reason and str(closed) in seen.reason


def test_a_build_with_secrets_is_private_whatever_its_inputs(open_dir):
    spec, plan = plan_in(open_dir, "build: [make]\nsecrets: [{id: token, env: TOKEN}]\n")
    seen = decide(spec, plan, "alice", True)
    assert seen.scope == PRIVATE and "secrets token" in seen.reason


def test_the_site_trust_decides_who_is_a_trusted_builder(tmp_path):
    """Everybody's trust, not the builder's own: one trusts oneself, the others do not."""
    nobody, group = pwd.getpwnam("nobody"), grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    assert Cache(tmp_path).trusted_builder(0)
    assert Cache(tmp_path, uid=nobody.pw_uid).trusted(nobody.pw_uid)
    assert not Cache(tmp_path, uid=nobody.pw_uid).trusted_builder(nobody.pw_uid)
    assert Cache(tmp_path, Trust(users=("nobody",))).trusted_builder(nobody.pw_uid)
    assert Cache(tmp_path, Trust(groups=(group,))).trusted_builder(nobody.pw_uid)


# --- publication ---------------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path) -> Cache:
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o1777)
    c = Cache(root)
    c.ensure_layout()
    return c


def staged_build(cache: Cache) -> Path:
    stage = cache.dir("tmp") / f"{KEY}-u{UID}.test"
    stage.mkdir(mode=0o700)
    for name in ("image.oci.tar", "Containerfile", "spec.yaml", "stardock.lock"):
        made(stage / name, f"{name}\n", 0o644)
    return stage


def meta(scope=None) -> dict:
    m = {"key": KEY, "engine": "podman", "name": "demo", "artifact": "image.oci.tar", "created": 1.0,
         "image_tag": f"localhost/stardock/demo:{KEY[:16]}"}
    if scope:
        m.update(visibility=scope, visibility_reason="a test")
    return m


KEEP = ["image.oci.tar", "Containerfile", "spec.yaml", "stardock.lock"]


@pytest.mark.parametrize("scope, dir_mode, file_mode", [(PUBLIC, 0o555, 0o444), (PRIVATE, 0o500, 0o400),
                                                          (None, 0o500, 0o400)])
def test_an_entry_has_its_modes_before_it_is_published_and_after(cache, monkeypatch, scope, dir_mode, file_mode):
    stage = staged_build(cache)
    seen = []
    real_rename = os.rename

    def rename(src, dst, **kw):  # what anybody could see at the moment the entry appears
        seen.append({p.name: stat.S_IMODE(p.lstat().st_mode) for p in [stage, *stage.iterdir()]})
        return real_rename(src, dst, **kw)
    monkeypatch.setattr(os, "rename", rename)
    entry = cache.publish(stage, KEY, meta(scope), keep=KEEP)
    [before] = seen
    others = 0o077 if scope != PUBLIC else 0o022
    assert all(mode & others == 0 for mode in before.values()), before  # nothing wider at the rename
    assert before[stage.name] == dir_mode | 0o200
    assert all(before[n] == file_mode for n in before if n != stage.name)
    assert stat.S_IMODE(entry.path.stat().st_mode) == dir_mode
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in entry.path.iterdir()} == \
        {n: file_mode for n in [*KEEP, "meta.json"]}
    recorded = json.loads((entry.path / "meta.json").read_text())
    assert entry.visibility == recorded["visibility"] == (scope or PRIVATE) and recorded["visibility_reason"]


def test_removing_a_private_entry_never_opens_it(cache, monkeypatch):
    entry = cache.publish(staged_build(cache), KEY, meta(PRIVATE), keep=KEEP)
    modes = []
    real = os.fchmod
    monkeypatch.setattr(os, "fchmod", lambda fd, mode: (modes.append(mode), real(fd, mode))[1])
    cache.remove(entry)
    assert modes and all(m & 0o077 == 0 for m in modes) and not entry.path.exists()


# --- what others are offered --------------------------------------------------------------------
def plant(cache: Cache, uid: int, scope=None) -> Path:
    entry = cache.dir("entries") / f"{KEY}-u{uid}"
    entry.mkdir()
    data = b"image"
    (entry / "image.oci.tar").write_bytes(data)
    (entry / "meta.json").write_text(json.dumps({**meta(scope), "artifact_sha256": hashlib.sha256(data).hexdigest()}))
    os.chown(entry, uid, uid)
    for p in entry.iterdir():
        os.chown(p, uid, uid)
    return entry


NOBODY = pwd.getpwnam("nobody")
AS_ROOT = pytest.mark.root  # plays another user's entry with chown


@AS_ROOT
def test_another_users_private_entry_is_neither_listed_nor_found_nor_run(cache):
    other = NOBODY.pw_uid
    plant(cache, other, PRIVATE)
    me = Cache(cache.root, Trust(users=(NOBODY.pw_name,)), uid=UID)  # even a builder we trust
    assert me.trusted(other) and me.scan() == ([], [])   # not even named as skipped
    assert me.lookup(KEY) is None
    with pytest.raises(UsageError, match="no image"):
        me.find(KEY[:10])
    with pytest.raises(CacheError, match="private to its builder"):
        me.entry_for_run(cache.dir("entries") / f"{KEY}-u{other}", other, hashlib.sha256(b"image").hexdigest())
    theirs = Cache(cache.root, uid=other)
    assert [e.name for e in theirs.scan()[0]] == [f"{KEY}-u{other}"] and theirs.lookup(KEY) is not None
    assert [e.name for e in me.entries()] == [f"{KEY}-u{other}"]  # root's prune still reaches it


@AS_ROOT
def test_an_entry_recorded_before_visibility_existed_counts_as_public(cache):
    plant(cache, NOBODY.pw_uid)
    me = Cache(cache.root, Trust(users=(NOBODY.pw_name,)), uid=UID)
    [entry] = me.scan()[0]
    assert entry.visibility == PUBLIC and me.lookup(KEY) == entry


def test_an_entry_unreadable_to_us_is_called_private_when_its_name_is_its_owners(cache, monkeypatch):
    plant(cache, UID, PRIVATE)
    import stardock_hpc.cache.reading as reading

    def denied(*_a, **_k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(reading, "open_dir_at", denied)
    with pytest.raises(reading.PrivateEntry):
        with cache._layout("entries") as efd:
            cache._read_entry(efd, f"{KEY}-u{UID}")


# --- meta.json --------------------------------------------------------------------------------------
@pytest.mark.parametrize("over, why", [
    ({"visibility": "everybody", "visibility_reason": "x"}, "visibility"),
    ({"visibility": PUBLIC}, "go together"),
    ({"visibility_reason": "x"}, "go together"),
    ({"visibility": PRIVATE, "visibility_reason": 5}, "visibility_reason"),
    ({"visibility": PRIVATE, "visibility_reason": "x" * 5000}, "visibility_reason"),
])
def test_visibility_in_meta_is_validated(over, why):
    m = {**meta(), "artifact_sha256": "0" * 64, **over}
    with pytest.raises(Invalid, match=why):
        validate_meta(m, KEY)
    assert validate_meta({**meta(PRIVATE), "artifact_sha256": "0" * 64}, KEY)["visibility"] == PRIVATE
