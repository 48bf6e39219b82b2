"""The shipped catalog: every entry valid, the StarDock menu covered; site catalogs add and override."""
from __future__ import annotations

from pathlib import Path

import pytest

from stardock_hpc.catalog import load_catalog
from stardock_hpc.errors import UsageError
from stardock_hpc.resources import data_dir

STARDOCK_MENU = {"iraf", "pyraf", "ds9", "sextractor", "astropy", "swarp", "topcat", "montage", "r"}
COMPANIONS = {"scamp", "psfex", "wcstools", "cfitsio", "photutils"}


def test_every_shipped_entry_loads_and_is_complete():
    catalog = load_catalog()
    files = sorted(p.stem for p in data_dir("definitions").glob("*.yaml"))
    assert catalog.names() == files
    for app in catalog.apps.values():
        recipe = app.recipe("debian")
        assert recipe.apt or recipe.pip, app.name  # it installs something
        assert app.smoke.strip() and app.summary.strip()
        assert [a.name for a in catalog.resolve([app.name])][-1] == app.name


def test_the_stardock_menu_and_companions_are_covered():
    assert STARDOCK_MENU | COMPANIONS <= set(load_catalog().names())


def test_requirements_are_installed_first():
    names = [a.name for a in load_catalog().resolve(["photutils", "pyraf"])]
    assert names.index("astropy") < names.index("photutils") and names.index("iraf") < names.index("pyraf")


def test_a_site_catalog_adds_and_overrides_apps(tmp_path: Path):
    (tmp_path / "astropy.yaml").write_text(
        "name: astropy\nsummary: the site's own astropy\ninstall:\n  debian: {apt: [python3-astropy, python3-scipy]}\n"
        "smoke: python3 -c 'import astropy'\n")
    (tmp_path / "gnuastro.yaml").write_text(
        "name: gnuastro\nsummary: GNU Astronomy Utilities\ninstall:\n  debian: {apt: [gnuastro]}\n"
        "smoke: astfits --version\n")
    catalog = load_catalog([tmp_path])
    assert catalog.apps["astropy"].summary == "the site's own astropy"
    assert "gnuastro" in catalog and "sextractor" in catalog


def test_a_bad_site_entry_names_its_file_and_key(tmp_path: Path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\nsummary: x\ninstall:\n  debian: {apt: [Not-A-Package]}\nsmoke: 'true'\n")
    catalog = load_catalog([tmp_path])  # read when used: by a spec, the listing or `site check`
    assert "broken" in catalog.names()
    with pytest.raises(UsageError, match=rf"{bad}:4: install.debian.apt\[0\]"):
        catalog.resolve(["broken"])
    with pytest.raises(UsageError, match=rf"{bad}:4: install.debian.apt\[0\]"):
        assert catalog.apps is None  # raises first


def test_entry_name_must_match_its_file(tmp_path: Path):
    (tmp_path / "one.yaml").write_text("name: two\nsummary: x\ninstall: {debian: {apt: [jq]}}\nsmoke: 'true'\n")
    with pytest.raises(UsageError, match="must match the file name 'one.yaml'"):
        load_catalog([tmp_path]).app("one")


def test_a_spec_reads_only_the_definitions_it_uses(tmp_path: Path, monkeypatch):
    import stardock_hpc.catalog as catalog_module

    read = []
    real = catalog_module.load_app
    monkeypatch.setattr(catalog_module, "load_app", lambda path: read.append(path.stem) or real(path))
    catalog = load_catalog()
    assert "astropy" in catalog and len(catalog.names()) > 5 and read == []
    apps = catalog.resolve(["astropy"])
    assert [a.name for a in apps][-1] == "astropy" and sorted(read) == sorted(a.name for a in apps)
