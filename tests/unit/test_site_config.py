"""Site config: where it is found, what it resolves to."""
from __future__ import annotations

import getpass
import os
import pwd
from pathlib import Path

import pytest

from stardock_hpc import site as sitemod
from stardock_hpc.errors import UsageError
from stardock_hpc.site import Volume, find_site, load_site, parse_site


def test_search_order_option_then_environment_then_etc(tmp_path, monkeypatch):
    etc = tmp_path / "etc-site.yaml"
    etc.write_text("engine: apptainer\n")
    monkeypatch.setattr(sitemod, "SYSTEM_SITE", etc)
    assert find_site("/x/given.yaml", {"STARDOCK_SITE_CONFIG": "/y.yaml"}) == (Path("/x/given.yaml"), "--site option")
    assert find_site(None, {"STARDOCK_SITE_CONFIG": "/y.yaml"}) == (Path("/y.yaml"), "$STARDOCK_SITE_CONFIG")
    assert find_site(None, {}) == (etc, str(etc))
    loaded = load_site(None, {})
    assert loaded.engine == "apptainer" and loaded.source == f"{etc} (from {etc})"


def test_without_any_config_the_built_in_defaults_apply(tmp_path, monkeypatch):
    monkeypatch.setattr(sitemod, "SYSTEM_SITE", tmp_path / "absent.yaml")
    site = load_site(None, {})
    assert site.path is None and site.source.startswith("built-in defaults")
    assert site.engine == "podman" and site.base(None).ref == "docker.io/library/debian:bookworm"
    assert site.policy.network is False and site.policy.custom_build is True


def test_values_set_in_the_file_are_told_from_defaults(tmp_path):
    site = parse_site("engine: apptainer\npolicy: {network: true}\n", tmp_path / "s.yaml")
    assert {"engine", "policy", "policy.network"} <= site.explicit
    assert "policy.custom_build" not in site.explicit and "cache" not in site.explicit


def test_single_base_is_the_default(tmp_path):
    site = parse_site("bases:\n  debian:bookworm: {archive: /b.tar}\n", tmp_path / "s.yaml")
    assert site.default_base == "debian:bookworm"
    assert site.base(None).archive == Path("/b.tar") and site.base(None).family == "debian"
    with pytest.raises(UsageError, match="offered: debian:bookworm"):
        site.base("ubuntu:jammy")


def test_volume_paths_expand_user_uid_gid_group():
    me = getpass.getuser()
    pw = pwd.getpwnam(me)
    vol = Volume("scratch", "/scratch/{user}/{uid}-{gid}", "rw")
    assert vol.host_path(me) == Path(f"/scratch/{me}/{pw.pw_uid}-{pw.pw_gid}")


def test_volume_access_lists():
    me = getpass.getuser()
    primary = __import__("grp").getgrgid(os.getgid()).gr_name
    assert Volume("a", "/a").allows(me)
    assert Volume("a", "/a", users=(me,)).allows(me)
    assert not Volume("a", "/a", users=("somebody-else",)).allows(me)
    assert Volume("a", "/a", groups=(primary,)).allows(me)
    assert not Volume("a", "/a", groups=("no-such-group-x",)).allows(me)
