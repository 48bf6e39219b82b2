"""The environment spec model: what valid specs mean (bad ones: test_bad_inputs.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from stardock_hpc.errors import UsageError
from stardock_hpc.spec import parse_spec


def spec(tmp_path: Path, text: str, **kw):
    path = tmp_path / "stardock.yaml"
    path.write_text(text)
    return parse_spec(text, path, **kw)


def test_minimal_spec_has_empty_defaults(tmp_path):
    env = spec(tmp_path, "name: m51\n")
    assert (env.name, env.base, env.apps, env.files, env.build, env.env, env.command, env.labels) == \
        ("m51", None, (), (), (), {}, None, {})
    assert env.packages.apt == () and env.packages.pip == ()


def test_build_string_is_one_step_and_command_string_runs_in_sh(tmp_path):
    env = spec(tmp_path, "name: a\nbuild: |\n  cd /opt\n  make\ncommand: run --fast\n")
    assert env.build == ("cd /opt\nmake\n",)  # a script is one step: its exit status decides
    assert env.command == ("/bin/sh", "-c", "run --fast")


def test_yaml_numbers_in_env_and_labels_become_strings(tmp_path):
    env = spec(tmp_path, "name: a\nenv: {OMP_NUM_THREADS: 4, RATIO: 0.5}\nlabels: {version: 2}\n")
    assert env.env == {"OMP_NUM_THREADS": "4", "RATIO": "0.5"}
    assert env.labels == {"version": "2"}


def test_digest_ignores_comments_formatting_and_mapping_order(tmp_path):
    a = spec(tmp_path, "name: a\nenv: {X: '1', Y: '2'}\napps: [astropy]\n")
    b = spec(tmp_path, "# a comment\napps:\n  - astropy\nenv:\n  Y: '2'\n  X: '1'\nname: a\n")
    assert a.digest() == b.digest()
    c = spec(tmp_path, "name: a\nenv: {X: '1', Y: '3'}\napps: [astropy]\n")
    assert c.digest() != a.digest()


def test_app_order_is_meaningful_and_kept(tmp_path):
    assert spec(tmp_path, "name: a\napps: [swarp, astropy]\n").apps == ("swarp", "astropy")


def test_files_resolve_relative_to_the_spec_directory(tmp_path):
    (tmp_path / "pipe line").mkdir()
    env = spec(tmp_path, "name: a\nfiles: [{src: 'pipe line', dest: /opt/p}]\n")
    assert env.files[0].source == (tmp_path / "pipe line").resolve()


def test_unknown_key_suggests_the_close_one_and_names_file_line_and_allowed(tmp_path):
    with pytest.raises(UsageError) as err:
        spec(tmp_path, "name: a\n\ncomand: [x]\n")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'stardock.yaml'}:3: comand: unknown key 'comand'")
    assert "allowed keys: name, base, apps, packages, files, build, env, command, labels" in msg
    assert "did you mean 'command'?" in msg


def test_apps_and_bases_are_checked_when_known(tmp_path):
    expected = r"apps\[1\]: 'swrap' is not one of: astropy, swarp \(did you mean 'swarp'\?\)"
    with pytest.raises(UsageError, match=expected):
        spec(tmp_path, "name: a\napps: [astropy, swrap]\n", apps=["swarp", "astropy"])
    with pytest.raises(UsageError, match=r"base: 'debian:sid' is not one of: debian:bookworm"):
        spec(tmp_path, "name: a\nbase: debian:sid\n", bases=["debian:bookworm"])
