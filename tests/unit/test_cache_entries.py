"""The cache reads only what stardock makes (issue 9): entries, metadata, artifacts and the
bookkeeping files are judged on the object opened, never through a link; the rest is skipped.

One user here, so "another user's file" is played by what that user cannot forge: a name that
claims another uid, a link, a FIFO, metadata that is not ours to trust.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from stardock_hpc.cache import ARTIFACTS, SUBDIRS, Cache, CacheError, Entry
from stardock_hpc.cache.entries import Invalid, validate_meta
from stardock_hpc.engines import ENGINES
from stardock_hpc.errors import UsageError
from stardock_hpc.safefs import printable

UID = os.getuid()
KEY = "a" * 64


@pytest.fixture
def cache(tmp_path) -> Cache:
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o1777)
    c = Cache(root)
    c.ensure_layout()
    return c


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO read by mistake would block forever: fail instead."""
    def alarm(_signum, _frame):
        raise AssertionError("blocked")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def meta_for(key: str = KEY, data: bytes = b"image", **over) -> dict:
    meta = {"key": key, "engine": "podman", "name": "demo", "artifact": "image.oci.tar", "created": 1.0,
            "size": len(data), "artifact_sha256": hashlib.sha256(data).hexdigest(),
            "image_tag": f"localhost/stardock/demo:{key[:16]}"}
    meta.update(over)
    return meta


def plant(cache: Cache, name: str, meta=None, data: bytes = b"image", raw: bytes = b"") -> Path:
    entry = cache.dir("entries") / name
    entry.mkdir()
    (entry / "image.oci.tar").write_bytes(data)
    (entry / "meta.json").write_bytes(raw or json.dumps(meta if meta is not None else meta_for()).encode())
    return entry


def test_a_valid_entry_is_listed_verified_and_found(cache):
    plant(cache, f"{KEY}-u{UID}")
    [entry] = cache.entries()
    assert entry.key == KEY and entry.owner == UID and entry.artifact.name == "image.oci.tar"
    assert cache.verify(entry) and cache.lookup(KEY) == entry and cache.find(KEY[:8]) == entry


@pytest.mark.parametrize("target", ["dir", "root"])
def test_an_entry_that_is_a_link_is_skipped(cache, tmp_path, target):
    where = tmp_path / "elsewhere" if target == "dir" else cache.root
    where.mkdir(exist_ok=True)
    (where / "meta.json").write_text(json.dumps(meta_for()))
    (where / "image.oci.tar").write_bytes(b"image")
    (cache.dir("entries") / f"{KEY}-u{UID}").symlink_to(where)
    entries, skipped = cache.scan()
    assert entries == [] and "symbolic link" in skipped[0][1]
    assert cache.lookup(KEY) is None
    with pytest.raises(UsageError, match="symbolic link"):
        cache.find(KEY)


def test_the_uid_in_the_name_must_be_the_real_owner(cache):
    plant(cache, f"{KEY}-u{UID + 1}")
    entries, skipped = cache.scan()
    assert entries == [] and "named for uid" in skipped[0][1]


@pytest.mark.parametrize("meta, why", [
    ([1, 2], "not a JSON object"),
    (meta_for(key="b" * 64), "another key"),
    (meta_for(engine="docker"), "engine"),
    (meta_for(name="ok\nrm -rf ~"), "name"),
    (meta_for(name="\x1b]0;x\x07"), "name"),
    (meta_for(artifact="/dev/shm/evil.tar"), "artifact"),
    (meta_for(artifact="../other/image.oci.tar"), "artifact"),
    (meta_for(artifact="image.sif"), "artifact"),
    (meta_for(artifact_sha256="../x"), "artifact_sha256"),
    (meta_for(image_tag="evil;rm -rf /"), "image_tag"),
    (meta_for(image_tag=f"localhost/stardock/demo:{'b' * 16}"), "image_tag"),
    (meta_for(created="yesterday"), "created"),
])
def test_invalid_metadata_is_skipped_with_the_reason(cache, meta, why):
    plant(cache, f"{KEY}-u{UID}", meta)
    entries, skipped = cache.scan()
    assert entries == [] and why in skipped[0][1]
    with pytest.raises(UsageError) as err:
        cache.find(KEY)
    assert why in str(err.value) and "\n  entries/" in str(err.value)
    assert "\x1b" not in str(err.value) and "\nrm" not in str(err.value)


def test_metadata_that_is_a_fifo_a_link_or_huge_is_skipped_without_blocking(cache, tmp_path):
    for n, kind in enumerate(("fifo", "link", "huge", "notjson")):
        entry = cache.dir("entries") / f"{KEY}-u{UID}.{n}"
        entry.mkdir()
        if kind == "fifo":
            os.mkfifo(entry / "meta.json")
        elif kind == "link":
            (tmp_path / "m.json").write_text(json.dumps(meta_for()))
            (entry / "meta.json").symlink_to(tmp_path / "m.json")
        elif kind == "huge":
            (entry / "meta.json").write_bytes(b" " * (2 << 20))
        else:
            (entry / "meta.json").write_bytes(b"\xff{")
    entries, skipped = cache.scan()
    assert entries == [] and len(skipped) == 4


def test_an_artifact_that_is_a_link_or_changed_is_never_used(cache, tmp_path):
    entry_dir = plant(cache, f"{KEY}-u{UID}")
    [entry] = cache.entries()
    (tmp_path / "same").write_bytes(b"image")
    (entry_dir / "image.oci.tar").unlink()
    (entry_dir / "image.oci.tar").symlink_to(tmp_path / "same")  # same bytes, but not in the entry
    assert not cache.verify(entry) and cache.lookup(KEY) is None
    (entry_dir / "image.oci.tar").unlink()
    (entry_dir / "image.oci.tar").write_bytes(b"imagf")
    assert not cache.verify(entry)


def test_a_decoy_does_not_make_a_key_ambiguous(cache):
    plant(cache, f"{KEY}-u{UID}")
    plant(cache, KEY, meta_for(key="b" * 64))                       # not an entry name
    plant(cache, f"{KEY}-u{UID}.decoy", meta_for(key="b" * 64))     # another key in the metadata
    assert cache.find(KEY).name == f"{KEY}-u{UID}"


def test_publishing_never_lands_on_a_planted_name(cache, tmp_path):
    (tmp_path / "victim").mkdir()
    (cache.dir("entries") / f"{KEY}-u{UID}").symlink_to(tmp_path / "victim")
    staged = Path(cache.dir("tmp")) / "stage"
    staged.mkdir()
    (staged / "image.oci.tar").write_bytes(b"image")
    entry = cache.publish(staged, KEY, {**{k: v for k, v in meta_for().items() if k != "artifact_sha256"},
                                        "visibility": "public", "visibility_reason": "a test"},
                          keep=["image.oci.tar"])
    assert entry.name.startswith(f"{KEY}-u{UID}.") and len(entry.name.rsplit(".", 1)[1]) == 16
    assert not list((tmp_path / "victim").iterdir()) and cache.lookup(KEY) == entry
    assert (entry.path.stat().st_mode & 0o777) == 0o555


def test_bookkeeping_files_are_created_without_following_links_and_plants_do_not_count(cache, tmp_path):
    entry_dir = plant(cache, f"{KEY}-u{UID}")
    [entry] = cache.entries()
    target = tmp_path / "created-through-link"
    (cache.dir("used") / f"{entry.name}.u{UID}").symlink_to(target)
    cache.touch_used(entry)
    assert not target.exists()
    os.unlink(cache.dir("used") / f"{entry.name}.u{UID}")
    stamp = cache.dir("used") / f"{entry.name}.u{UID + 1}"   # claims another user: not its owner
    stamp.write_text("")
    os.utime(stamp, (4102444800, 4102444800))
    assert Cache(cache.root).last_used(entry) < 4102444800
    (cache.dir("inuse") / entry.name).mkdir()               # a foreign directory, the old layout
    (cache.dir("inuse") / f"{entry.name}.j77.u{UID}").symlink_to(tmp_path / "x")
    cache.register_use(entry, "42")
    cache.register_use(entry, "42")
    cache.register_use(entry, "--evil")                     # never raises, never a file
    assert cache.users_of(entry) == ["42"] and not (tmp_path / "x").exists()
    assert entry_dir.exists()


def test_register_use_never_raises(cache):
    entry = Entry(KEY, cache.dir("entries") / f"{KEY}-u{UID}", UID, meta_for())
    os.rmdir(cache.dir("inuse"))
    cache.dir("inuse").symlink_to("/tmp")
    cache.register_use(entry, "42")
    assert not Path(f"/tmp/{entry.name}.j42.u{UID}").exists()


def test_entry_for_run_checks_the_directory_owner_digest_and_artifact(cache, tmp_path):
    entry_dir = plant(cache, f"{KEY}-u{UID}")
    sha = meta_for()["artifact_sha256"]
    node = Cache(entry_dir.parent.parent)
    assert node.entry_for_run(entry_dir, UID, sha).key == KEY
    with pytest.raises(CacheError, match="uid"):
        node.entry_for_run(entry_dir, UID + 1, sha)
    with pytest.raises(CacheError, match="another artifact"):
        node.entry_for_run(entry_dir, UID, "0" * 64)
    (entry_dir / "image.oci.tar").write_bytes(b"other")
    with pytest.raises(CacheError, match="digest"):
        node.entry_for_run(entry_dir, UID, sha)
    os.rename(entry_dir, tmp_path / "moved")
    entry_dir.symlink_to(tmp_path / "moved")
    with pytest.raises(CacheError, match="symbolic link"):
        node.entry_for_run(entry_dir, UID, sha)


def test_removing_an_entry_removes_exactly_it_and_follows_no_link(cache, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    precious.chmod(0o1777)
    (precious / "keep").write_text("keep")
    entry_dir = plant(cache, f"{KEY}-u{UID}")
    (entry_dir / "sub").symlink_to(precious)
    entry_dir.chmod(0o555)
    [entry] = cache.entries()
    cache.remove(entry)
    assert not entry_dir.exists() and (precious / "keep").exists()
    assert (precious.stat().st_mode & 0o7777) == 0o1777
    assert not list(cache.dir("tmp").iterdir())


def test_removing_refuses_an_entry_swapped_since_it_was_chosen(cache, tmp_path):
    entry_dir = plant(cache, f"{KEY}-u{UID}")
    [entry] = cache.entries()
    os.rename(entry_dir, tmp_path / "old")
    entry_dir.symlink_to(tmp_path / "old")
    with pytest.raises(CacheError, match="no longer the entry"):
        cache.remove(entry)
    assert (tmp_path / "old" / "meta.json").exists()


def test_metadata_is_printed_escaped():
    assert printable("ok\nrm\x1b[2J\u202e\x07") == "ok\\nrm\\x1b[2J\\u202e\\x07"
    assert printable("é ok") == "é ok"


def test_the_artifact_names_are_the_engines():
    assert ARTIFACTS == {name: engine.artifact_name for name, engine in ENGINES.items()}
    assert SUBDIRS == ("entries", "tmp", "locks", "used", "inuse")


RUN_FORM = {"run_form": "image.sqfs", "run_form_sha256": "0" * 64, "run_form_stat": [1, 2, 3, 4],
            "image_config": {"Env": ["PATH=/usr/bin"]}}


@pytest.mark.parametrize("over, complaint", [
    ({"run_form": "../../etc/passwd"}, "run_form"),
    ({"run_form": "image.oci.tar"}, "run_form"),
    ({"run_form_sha256": "x"}, "run_form_sha256"),
    ({"run_form_stat": "now"}, "run_form_stat"),
    ({"image_config": {"Env": ["no equals sign"]}}, "image_config"),
    ({"image_config": []}, "image_config"),
])
def test_a_run_form_is_only_the_engines_own_file_with_its_digest(over, complaint):
    assert validate_meta(meta_for(**RUN_FORM), KEY)["run_form"] == "image.sqfs"
    with pytest.raises(Invalid, match=complaint):
        validate_meta(meta_for(**dict(RUN_FORM, **over)), KEY)
    with pytest.raises(Invalid, match="run_form"):
        validate_meta(meta_for(engine="apptainer", artifact="image.sif", image_tag=None, **RUN_FORM), KEY)
