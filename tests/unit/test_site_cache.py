"""The parsed-site cache (site.ParsedSiteCache): a command reads a site file's YAML only when
the user's private runtime directory holds no entry made from exactly that text by this code; an
entry is the same Site as the parse, and a changed file (even at once and to the same size), a
planted link, a corrupt or foreign entry, or a directory others can enter all mean the file is
parsed again."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stardock_hpc.site import ParsedSiteCache, Site, load_site, parse_site, site_from_settings, site_settings

FULL = """engine: apptainer
cache: /srv/cache
bases:
  debian:bookworm: {archive: /srv/bases/bookworm.oci.tar}
  debian:trixie: {ref: registry.example.org/debian:trixie}
default_base: debian:trixie
volumes:
  archive: {path: /lustre/archive, mode: ro, groups: [astro], description: the survey}
  scratch: {path: "/lustre/scratch/{user}", mode: rw, users: [ann, bob]}
mount_root: /data
outputs: "/lustre/scratch/{user}/out"
records: "/home/{user}/.stardock/jobs"
node_storage: "/tmp/sd-{uid}"
node_storage_max: 5G
catalog: [/etc/stardock/definitions]
ca_certificates: [/etc/ssl/proxy.crt]
scheduler: {backend: rest, rest_url: "http://slurm:6820", rest_api: v0.0.38, rest_token: env, partition: batch}
policy:
  network: true
  node_network: false
  custom_build: false
  pip: false
  limits: {mem: 64G, cpus: 8, time: "1-00:00:00", pids: 1000}
  build_timeout: "2:00:00"
  inputs: {schemes: [https], hosts: ["*.example.org"], max_bytes: 1G, retries: 1}
trusted_builders: {users: [svc], groups: [admins]}
"""


@pytest.mark.parametrize("text", [FULL, "engine: podman\n", "{}\n"])
def test_an_entry_is_the_same_site_as_the_parse(text):
    site = parse_site(text, Path("/etc/site.yaml"), "here")
    again = site_from_settings(json.loads(json.dumps(site_settings(site))), site.path, site.source,
                               sorted(site.explicit))
    assert again == site


@pytest.fixture
def runtime(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return d


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_second_load_comes_from_the_cache_and_a_changed_file_is_read_again(tmp_path, runtime, monkeypatch):
    site_file = write(tmp_path / "site.yaml", FULL)
    env = {"STARDOCK_SITE_CONFIG": str(site_file), "XDG_RUNTIME_DIR": str(runtime)}
    first = load_site(None, env)
    entries = list((runtime / "stardock").iterdir())
    assert len(entries) == 1 and oct(entries[0].stat().st_mode)[-3:] == "600"
    import stardock_hpc.site as site_module

    def no_parse(*_a, **_k):
        raise AssertionError("parsed again")
    monkeypatch.setattr(site_module, "_from_document", no_parse)
    assert load_site(None, env) == first
    monkeypatch.undo()
    write(site_file, FULL.replace("engine: apptainer", "engine: podman   "))  # the same size, at once
    assert site_file.stat().st_size == len(FULL)
    assert load_site(None, env).engine == "podman"


def test_the_cache_keeps_the_site_files_used_last_and_no_more(tmp_path, runtime):
    files = [write(tmp_path / f"site-{i}.yaml", FULL) for i in range(ParsedSiteCache.MAX_ENTRIES + 5)]
    for i, site_file in enumerate(files):
        load_site(str(site_file), {"XDG_RUNTIME_DIR": str(runtime)})
        kept = list((runtime / "stardock").glob("site-*.json"))
        assert len(kept) == min(i + 1, ParsedSiteCache.MAX_ENTRIES)
    (runtime / "stardock" / "other").write_text("not ours to bound")
    load_site(str(files[0]), {"XDG_RUNTIME_DIR": str(runtime)})  # an old one, parsed and kept again
    names = {p.name for p in (runtime / "stardock").iterdir()}
    assert "other" in names and len(names) == ParsedSiteCache.MAX_ENTRIES + 1
    newest = max((runtime / "stardock").glob("site-*.json"), key=lambda p: p.stat().st_mtime_ns)
    assert json.loads(newest.read_text())["key"]["path"] == str(files[0])


def test_doubtful_entries_and_directories_are_never_used(tmp_path, runtime):
    site_file = write(tmp_path / "site.yaml", "engine: apptainer\n")
    env = {"STARDOCK_SITE_CONFIG": str(site_file), "XDG_RUNTIME_DIR": str(runtime)}
    cache = ParsedSiteCache.for_user(env)
    assert cache is not None
    key = cache.key(site_file, f"{site_file} (from $STARDOCK_SITE_CONFIG)")
    assert key is not None
    planted = Site(engine="podman")
    # an entry for another file, a corrupt one, a link to one: each ignored, the file parsed
    cache.put({**key, "file": [0, 0]}, planted, "engine: apptainer\n")
    other = next((runtime / "stardock").iterdir())
    os.rename(other, runtime / "stardock" / cache._name(key).name)
    assert load_site(None, env).engine == "apptainer"
    cache._name(key).write_text("{not json")
    assert load_site(None, env).engine == "apptainer"
    real = tmp_path / "elsewhere.json"
    cache.put(key, planted, "engine: apptainer\n")
    os.rename(cache._name(key), real)
    cache._name(key).symlink_to(real)
    assert load_site(None, env).engine == "apptainer"
    # a runtime directory others may enter is not used at all
    runtime.chmod(0o755)
    assert ParsedSiteCache.for_user(env) is None
    assert ParsedSiteCache.for_user({"XDG_RUNTIME_DIR": "relative"}) is None
    assert ParsedSiteCache.for_user({}) is None
