"""`stardock deps` (deps.py) without an image: what ELF files need, what an image's probe says it
has, Debian's names for library packages, the resolver's answers, and --add editing a spec while
leaving the rest of it (comments too) as it was. The image and the mirror: tests/integration/test_deps.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from stardock_hpc.deps import (
    ImageHas,
    add_apt_packages,
    candidates,
    lacking,
    needs_of,
    parse_probe,
    parse_resolved,
    resolve_args,
)
from stardock_hpc.elfdeps import ElfInfo
from stardock_hpc.errors import UsageError
from stardock_hpc.spec import parse_spec


def elf(path, needed=(), soname=None, interp="/lib64/ld-linux-x86-64.so.2", machine="x86_64"):
    return ElfInfo(path, machine, 64, interp, tuple(needed), soname, ())


@pytest.mark.parametrize("soname, stem, names", [
    ("libcfitsio.so.10", "libcfitsio", ["libcfitsio10", "libcfitsio10t64"]),
    ("libwcs.so.7", "libwcs", ["libwcs7", "libwcs7t64"]),
    ("libfftw3.so.3", "libfftw3", ["libfftw3-3", "libfftw3-3t64"]),
    ("libgtk-3.so.0", "libgtk-3", ["libgtk-3-0", "libgtk-3-0t64"]),
    ("libstdc++.so.6", "libstdc++", ["libstdc++6", "libstdc++6t64"]),
    ("libSDL2-2.0.so.0", "libsdl2-2.0", ["libsdl2-2.0-0", "libsdl2-2.0-0t64"]),
    ("libfoo.so", "libfoo", ["libfoo"]),
    ("ld-linux-x86-64.so.2", "ld-linux-x86-64", ["ld-linux-x86-64-2", "ld-linux-x86-64-2t64"]),
])
def test_debian_names_shared_library_packages_after_their_soname(soname, stem, names):
    assert candidates(soname) == (stem, names)


def test_what_files_need_less_what_they_provide_each_other():
    files = [elf("bin/prog", ["libmine.so.1", "libcfitsio.so.10", "libc.so.6"]),
             elf("lib/libmine.so.1", ["libwcs.so.7", "libc.so.6"], soname="libmine.so.1", interp=None),
             elf("bin/static", [], interp=None)]
    needs = needs_of(files)
    assert sorted(needs.libraries) == ["libc.so.6", "libcfitsio.so.10", "libwcs.so.7"]
    assert needs.libraries["libc.so.6"] == ["bin/prog", "lib/libmine.so.1"]
    assert needs.interpreters == {"/lib64/ld-linux-x86-64.so.2": ["bin/prog"]}
    assert needs.static == ["bin/static"]
    with pytest.raises(UsageError, match="no ELF programs"):
        needs_of([])


def test_the_image_lacks_what_ldconfig_does_not_list_for_the_right_word_size():
    probe = ("so libc.so.6 libc6,x86-64\nso libz.so.1 libc6\nso libm.so.6 libc6,x86-64\n"
             "interp /lib64/ld-linux-x86-64.so.2 yes\ninterp /lib/ld-musl-x86_64.so.1 no\ngarbage line\n")
    has = parse_probe(probe)
    assert has.interpreters == {"/lib64/ld-linux-x86-64.so.2": True, "/lib/ld-musl-x86_64.so.1": False}
    needs = needs_of([elf("p", ["libc.so.6", "libz.so.1", "libwcs.so.7"])])
    # only a 32-bit libz is there: a 64-bit program still lacks it
    assert lacking(needs, has, {}) == ["libwcs.so.7", "libz.so.1"]
    assert lacking(needs, ImageHas({}, {}), {}) == ["libc.so.6", "libwcs.so.7", "libz.so.1"]


def test_hostile_library_names_never_reach_the_resolver_script():
    args, refused = resolve_args(["libok.so.1", "lib$(reboot).so", "-o/etc/x", "a|b", "lib ok.so", ""])
    assert args == ["libok.so.1|libok|libok1,libok1t64"]
    assert refused == ["lib$(reboot).so", "-o/etc/x", "a|b", "lib ok.so", ""]


def test_the_resolvers_answers():
    provides, none = parse_resolved("provides libwcs.so.7 libwcs7\nnone libodd.so.1\nnoise\n")
    assert provides == {"libwcs.so.7": "libwcs7"} and none == ["libodd.so.1"]
    with pytest.raises(UsageError, match="could not be fetched"):
        parse_resolved("error the package index could not be fetched: E: no network\n")


SPECS = {
    "none": ("# my analysis\nname: prog\napps: [astropy]  # the catalog's\n",
             "# my analysis\nname: prog\napps: [astropy]  # the catalog's\n"
             "packages:\n  apt: [libwcs7, libcfitsio10]\n"),
    "flow": ("name: prog\npackages:\n  pip: [numpy]\n  apt: [curl]   # for downloads\nbuild:\n  - make\n",
             "name: prog\npackages:\n  pip: [numpy]\n  apt: [curl, libwcs7, libcfitsio10]   # for "
             "downloads\nbuild:\n  - make\n"),
    "block": ("name: prog\npackages:\n  apt:\n    - curl  # one\n    - wget\n  pip: [numpy]\n",
              "name: prog\npackages:\n  apt:\n    - curl  # one\n    - wget\n    - libwcs7\n    - libcfitsio10\n"
              "  pip: [numpy]\n"),
    "no-apt": ("name: prog\npackages:\n    pip: [numpy]\n",
               "name: prog\npackages:\n    apt: [libwcs7, libcfitsio10]\n    pip: [numpy]\n"),
    "no-newline": ("name: prog", "name: prog\npackages:\n  apt: [libwcs7, libcfitsio10]\n"),
    "already": ("name: prog\npackages:\n  apt: [libwcs7, libcfitsio10]\n",
                "name: prog\npackages:\n  apt: [libwcs7, libcfitsio10]\n"),
    "one-more": ("name: prog\npackages:\n  apt: [libwcs7]\n",
                 "name: prog\npackages:\n  apt: [libwcs7, libcfitsio10]\n"),
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_add_writes_the_packages_and_leaves_the_rest_as_it_was(case):
    before, after = SPECS[case]
    changed = add_apt_packages(before, ["libwcs7", "libcfitsio10"], "stardock.yaml")
    assert changed == after
    env = parse_spec(changed, Path("stardock.yaml"), apps=["astropy"])
    assert {"libwcs7", "libcfitsio10"} <= set(env.packages.apt)


@pytest.mark.parametrize("text, message", [
    ("packages: {apt: [a]}\nname: x\n", "block mapping"),
    ("name: x\npackages:\n  apt: curl\n", "packages.apt: a list"),
    ("name: x\npackages:\n  apt: [a,\n    b]\n", "one line"),
    ("- a\n- b\n", "mapping"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_add_refuses_what_it_cannot_change_in_place(text, message):
    with pytest.raises(UsageError, match=message):
        add_apt_packages(text, ["libwcs7"], "stardock.yaml")
