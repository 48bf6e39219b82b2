"""Resolution into a build plan and the meaning the renderers give it (text details: golden)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stardock_hpc.catalog import App, Catalog, Recipe
from stardock_hpc.errors import UsageError
from stardock_hpc.plan import resolve
from stardock_hpc.render import render_apptainer, render_containerfile
from stardock_hpc.render.apptainer import sh_word
from stardock_hpc.render.containerfile import copy_word, quote
from stardock_hpc.site import parse_site
from stardock_hpc.spec import parse_spec


def app(name, apt=(), pip=(), env=None, requires=()):
    return App(name, f"{name} app", "", tuple(requires), {"debian": Recipe(tuple(apt), tuple(pip))},
               env or {}, f"{name} --version")


CATALOG = Catalog({
    "iraf": app("iraf", apt=["iraf"], env={"iraf": "/usr/lib/iraf/"}),
    "pyraf": app("pyraf", apt=["python3-pyraf"], requires=["iraf"]),
    "photutils": app("photutils", pip=["photutils"]),
})
SITE = parse_site("bases:\n  debian:bookworm: {archive: /b.tar}\n", Path("/site.yaml"))


def plan(tmp_path, text, site=SITE, catalog=CATALOG):
    path = tmp_path / "stardock.yaml"
    path.write_text(text)
    return resolve(parse_spec(text, path, apps=catalog.names()), site, catalog)


def test_required_apps_come_first_once(tmp_path):
    p = plan(tmp_path, "name: a\napps: [pyraf, iraf]\n")
    assert [a.name for a in p.apps] == ["iraf", "pyraf"]
    assert p.catalog_layer.apt == ("iraf", "python3-pyraf")


def test_requirement_loops_are_reported():
    loop = Catalog({"a": app("a", requires=["b"]), "b": app("b", requires=["a"])})
    with pytest.raises(UsageError, match="loop: a -> b -> a"):
        loop.resolve(["a"])


def test_pip_brings_python_venv_and_certificates_once(tmp_path):
    p = plan(tmp_path, "name: a\napps: [photutils]\npackages: {pip: [six]}\n")
    assert p.catalog_layer.apt == ("python3", "python3-venv", "ca-certificates")
    assert p.user_layer.apt == () and p.user_layer.pip == ("six",)
    assert p.env["PATH"].startswith("/opt/stardock/venv/bin:")


def test_app_env_is_set_and_the_spec_may_override_it(tmp_path):
    assert plan(tmp_path, "name: a\napps: [iraf]\n").env["iraf"] == "/usr/lib/iraf/"
    assert plan(tmp_path, "name: a\napps: [iraf]\nenv: {iraf: /opt/iraf/}\n").env["iraf"] == "/opt/iraf/"


def test_site_policy_can_forbid_build_steps(tmp_path):
    strict = parse_site("policy: {custom_build: false}\n", Path("/strict.yaml"))
    with pytest.raises(UsageError, match="does not allow custom build steps"):
        plan(tmp_path, "name: a\nbuild: [make]\n", site=strict)


def test_layer_order_is_the_same_in_both_formats(tmp_path):
    (tmp_path / "f").write_text("x")
    p = plan(tmp_path, "name: a\napps: [iraf]\npackages: {apt: [jq]}\nfiles: [{src: f, dest: /opt/f}]\n"
             "build: [make]\n")
    for text, marks in ((render_containerfile(p), ["install -y --no-install-recommends iraf", "jq",
                                                    'COPY ["files/0"', "/.stardock/build.sh\"]", "spec.yaml"]),
                        (render_apptainer(p), ["install -y --no-install-recommends iraf", "jq",
                                               "cp -a /.stardock/files/0", "bash -e /.stardock/build.sh",
                                               "%labels"])):
        positions = [text.index(m) for m in marks]
        assert positions == sorted(positions), (marks, positions)


def test_environment_is_exported_for_the_apptainer_build_too(tmp_path):
    text = render_apptainer(plan(tmp_path, "name: a\nenv: {K: v}\n"))
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("%"):
            current = line.split()[0]
            sections[current] = []
        elif current:
            sections[current].append(line.strip())
    assert "export K=v" in sections["%environment"] and "export K=v" in sections["%post"]


@pytest.mark.parametrize("value", ["plain", "it's", 'say "hi"', "$HOME `id` $(id)", "back\\slash\\",
                                   "two\nlines", "\n%post\n", "", "  spaces  ", "tab\there"])
def test_apptainer_words_are_literal_in_sh_and_one_line(value):
    word = sh_word(value)
    assert "\n" not in word
    prog = f"nl=$(printf '\\n_'); nl=${{nl%_}}; printf '%s' {word}"
    assert subprocess.run(["/bin/sh", "-c", prog], capture_output=True, text=True).stdout == value


def test_containerfile_words_escape_what_buildah_expands():
    assert quote('a"b$c\\d') == '"a\\"b\\$c\\\\d"'
    assert copy_word("/o/it's $(x) \"q\" \\b") == "/o/it\\'s \\$(x) \\\"q\\\" \\\\b"
