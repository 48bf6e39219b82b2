"""stardock.lock (issue 16): canonical, checked key by key, read from what an image prints."""
from __future__ import annotations

import json

import pytest

from stardock_hpc.errors import UsageError
from stardock_hpc.lockfile import Lock, Packages, PipPin, diff_packages, parse_lock, parse_packages

SPEC = "a" * 64
HASH = "b" * 64


def lock(**changes) -> Lock:
    apt = changes.pop("apt", {"jq": "1.6-2.1+deb12u2", "libc6": "2.36-9+deb12u14", "tzdata": "1:2025b-0"})
    pip = changes.pop("pip", [PipPin("six", "1.16.0", HASH), PipPin("pip", "23.0.1")])
    return Lock(changes.pop("spec", SPEC), "debian:bookworm", "sha256:" + "c" * 64, (("astropy", "d" * 64),),
                Packages.of(apt, pip))


def test_the_text_is_canonical_and_reads_back_to_the_same_lock():
    one = lock()
    again = parse_lock(one.text(), "stardock.lock")
    assert again == one and again.text() == one.text() and again.digest() == one.digest()
    # the order the packages were found in does not matter
    shuffled = lock(apt={"tzdata": "1:2025b-0", "libc6": "2.36-9+deb12u14", "jq": "1.6-2.1+deb12u2"},
                    pip=[PipPin("pip", "23.0.1"), PipPin("six", "1.16.0", HASH)])
    assert shuffled.text() == one.text()
    assert lock(pip=[PipPin("six", "1.15.0", HASH), PipPin("pip", "23.0.1")]).digest() != one.digest()


def test_pins_fix_every_debian_package_and_pip_installs_only_hashed_archives():
    one = lock()
    assert "Package: tzdata\nPin: version 1:2025b-0\nPin-Priority: 1001\n" in one.apt_pins()
    assert one.pip_requirements() == f"six==1.16.0 --hash=sha256:{HASH}\n"  # pip itself came with the venv
    assert one.apt_version("jq") == "1.6-2.1+deb12u2" and one.apt_version("jq=1.6") == "1.6-2.1+deb12u2"
    with pytest.raises(UsageError, match="no version of the Debian package 'bc'"):
        one.apt_version("bc")


@pytest.mark.parametrize("edit, key", [
    (lambda d: d.update(format="stardock-lock/9"), "format"),
    (lambda d: d.update(extra=1), "extra: unknown key"),
    (lambda d: d.update(spec_sha256="abc"), "spec_sha256"),
    (lambda d: d["apt"].update(jq="1.6 2"), "apt.jq"),
    (lambda d: d["apt"].update({"Bad Name": "1"}), "apt.Bad Name"),
    (lambda d: d["pip"].update(six={"version": "1.16.0", "sha256": "xyz"}), "pip.six.sha256"),
    (lambda d: d["pip"].update(six={"version": "1.16.0; rm -rf /"}), "pip.six.version"),
    (lambda d: d.update(base={"name": "debian:bookworm"}), "base"),
])
def test_a_bad_lock_is_refused_naming_the_file_and_the_key(edit, key):
    data = json.loads(lock().text())
    edit(data)
    with pytest.raises(UsageError) as err:
        parse_lock(json.dumps(data), "/home/u/stardock.lock")
    assert str(err.value).startswith(f"/home/u/stardock.lock: {key}")


def test_not_json_is_one_clear_error():
    with pytest.raises(UsageError, match="stardock.lock: not a stardock lock file"):
        parse_lock("apt: [jq]\n", "stardock.lock")


def test_what_an_image_prints_becomes_its_package_set():
    out = ("apt jq 1.6-2.1+deb12u2\napt libc6 2.36-9+deb12u14\n"
           "pip six 1.16.0\npip PyYAML 6.0.1\npip pip 23.0.1\n"
           f"hash six 1.16.0 {HASH}\nhash pyyaml 6.0.1 {'e' * 64}\nhash six 1.15.0 {'f' * 64}\n"
           "garbage line\nhash six 1.16.0 not-a-hash\n")
    found = parse_packages(out)
    assert found.apt == (("jq", "1.6-2.1+deb12u2"), ("libc6", "2.36-9+deb12u14"))
    assert found.pip == (PipPin("pip", "23.0.1"), PipPin("PyYAML", "6.0.1", "e" * 64), PipPin("six", "1.16.0", HASH))


def test_differences_name_each_package_once_with_both_versions():
    a = lock().packages
    b = Packages.of({"jq": "1.6-2.1+deb12u2", "libc6": "2.36-9+deb12u15", "bc": "1.07"},
                    [PipPin("six", "1.15.0"), PipPin("pip", "23.0.1")])
    assert diff_packages(a, b, "A", "B") == [
        "apt bc: - (A), 1.07 (B)", "apt libc6: 2.36-9+deb12u14 (A), 2.36-9+deb12u15 (B)",
        "apt tzdata: 1:2025b-0 (A), - (B)", "pip six: 1.16.0 (A), 1.15.0 (B)"]
    assert diff_packages(a, a) == []


def test_a_lock_of_another_version_of_the_spec_is_refused_before_anything_is_built(tmp_path):
    from pathlib import Path

    from stardock_hpc.catalog import load_catalog
    from stardock_hpc.plan import resolve
    from stardock_hpc.site import parse_site
    from stardock_hpc.spec import load_spec

    golden = Path(__file__).parents[1] / "golden"
    site = parse_site((golden / "site.yaml").read_text(), golden / "site.yaml")
    spec = tmp_path / "stardock.yaml"
    spec.write_text("name: x\npackages: {apt: [jq]}\n")
    catalog = load_catalog()
    env = load_spec(spec, apps=catalog.names())
    with pytest.raises(UsageError, match="the lock was made for another version of this spec"):
        resolve(env, site, catalog, lock())
    plan = resolve(env, site, catalog, lock(spec=env.digest()))
    assert plan.labels["org.stardock.lock-sha256"] == plan.lock.digest()
