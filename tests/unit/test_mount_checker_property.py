"""The mount checker over hostile trees and requests (hypothesis): whatever it accepts is a real
directory inside the volume, with no link, no ',' or ':' in its path, bound where asked, never
wider than the site allows; and the node finds exactly that object again, or refuses."""
from __future__ import annotations

import getpass
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.binds import BindError, open_beneath
from stardock_hpc.jobs.mounts import parse_mount
from stardock_hpc.site import parse_site

NAMES = st.sampled_from(["a", "b", "data", "x,y", "p:q", "it's", 'q"', "sp ace", "new\nline", "...", "-r",
                         "$(id)", "é", "\\", "a,b:c", ".hidden", "*"])
# a link target: inside the volume (relative or absolute), out of it, or to a hostile name
LINK_TARGETS = st.sampled_from(["a", "../a", "../../outside", "/VOL/a", "/VOL/x,y", "/OUT", "/OUT/x,y", "..",
                                ".", "/etc", "b/../a", "x,y", "p:q", "missing", "../VOL/a"])
NODES = st.lists(st.tuples(st.lists(NAMES, min_size=1, max_size=3), st.one_of(st.none(), LINK_TARGETS)),
                 min_size=1, max_size=8)
REQUESTS = st.lists(st.one_of(NAMES, st.sampled_from(["..", ".", "", "/"])), max_size=4)


def build(base: Path, nodes) -> Path:
    vol, out = base / "vol", base / "out"
    for d in (vol, out, out / "x,y"):
        d.mkdir(exist_ok=True)
    for parts, link in nodes:
        path = vol.joinpath(*parts)
        try:
            if link is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(link.replace("/VOL", str(vol)).replace("/OUT", str(out)), path)
        except OSError:
            pass  # a name used twice, as a link and as a directory: the first one stays
    return vol


def site_for(vol: Path, mode: str):
    return parse_site(f"volumes:\n  v: {{path: '{vol}', mode: {mode}}}\nmount_root: /data\n", Path("site.yaml"))


@settings(max_examples=1500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=NODES, request=REQUESTS, mode=st.sampled_from(["ro", "rw"]),
       asked=st.sampled_from(["", ":ro", ":rw"]))
def test_what_the_checker_accepts_is_exactly_what_the_node_binds(nodes, request, mode, asked):
    base = Path(tempfile.mkdtemp(prefix="stardock-mounts-"))
    try:
        vol = build(base, nodes)
        text = "v" + ("/" + "/".join(request) if request else "") + asked
        try:
            m = parse_mount(text, site_for(vol, mode), getpass.getuser())
        except UsageError:
            return  # refused, with a message: fine
        real_vol = vol.resolve()
        host = m.host
        assert os.path.realpath(host) == str(host), "a link is left in the bound path"
        assert host == real_vol or real_vol in host.parents, "the bound path leaves the volume"
        assert "," not in str(host) and ":" not in str(host)
        assert ".." not in m.target.split("/") and m.target.startswith("/data/v")
        assert m.readonly or (mode == "rw" and asked != ":ro"), "wider than the site allows"
        fd = open_beneath(m.root, m.sub, "test")
        try:
            assert os.path.samestat(os.fstat(fd), os.stat(host))
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(nodes=NODES, request=st.lists(NAMES, min_size=1, max_size=3), swap_at=st.integers(0, 2),
       target=LINK_TARGETS)
def test_a_component_swapped_for_a_link_after_the_check_is_refused_on_the_node(nodes, request, swap_at, target):
    base = Path(tempfile.mkdtemp(prefix="stardock-mounts-"))
    try:
        vol = build(base, nodes)
        try:
            m = parse_mount("v/" + "/".join(request), site_for(vol, "rw"), getpass.getuser())
        except UsageError:
            return
        parts = m.sub.split("/") if m.sub else []
        if not parts:
            return
        victim = m.root.joinpath(*parts[:min(swap_at, len(parts) - 1) + 1])
        victim.rename(base / "moved-away")
        os.symlink(target.replace("/VOL", str(vol)).replace("/OUT", str(base / "out")), victim)
        with pytest.raises(BindError, match="symbolic link"):
            os.close(open_beneath(m.root, m.sub, "test"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
