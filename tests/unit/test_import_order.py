"""`stardock import` keeps the recipe's order (issue 11, defect 2): build: is the recipe, top to
bottom, with apt, pip and files items where the recipe installs or copies. Each test is what a
real recipe does that broke when files came before every build step and apt before every step."""
from __future__ import annotations

from pathlib import Path

import pytest

from stardock_hpc.catalog import load_catalog
from stardock_hpc.importer import import_recipe, render_yaml
from stardock_hpc.spec import parse_spec


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def imported(tmp_path: Path, text: str, catalog, name: str = "Dockerfile", files=()):
    """Import the recipe `text` (with `files` beside it) and check the spec as `stardock build` would."""
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(f"{f}\n")
    path = tmp_path / name
    path.write_text(text)
    result = import_recipe(path, catalog=catalog)
    parse_spec(render_yaml(result), tmp_path / "stardock.yaml", apps=catalog.names())
    return result


def position(build, wanted) -> int:
    """Index of the first item of build: that is `wanted` (a string) or has key `wanted` (a dict)."""
    return next(i for i, item in enumerate(build)
                if item == wanted or (isinstance(item, dict) and wanted in item))


def test_a_copy_into_a_directory_a_run_made_comes_after_the_run(tmp_path, catalog):
    # pyobs-archive: mkdir, then COPY into it; with the copy first, `mkdir` fails (File exists)
    result = imported(tmp_path, "FROM debian:bookworm\n"
                      "RUN mkdir /pyobs-archive\n"
                      "WORKDIR /pyobs-archive\n"
                      "COPY requirements.txt /pyobs-archive/\n"
                      "RUN useradd -m astro\n"
                      "COPY login.cl /home/astro/\n", catalog, files=["requirements.txt", "login.cl"])
    build = result.spec["build"]
    assert position(build, "mkdir /pyobs-archive") < build.index(
        {"files": [{"src": "requirements.txt", "dest": "/pyobs-archive/requirements.txt"}]})
    assert position(build, "useradd -m astro") < build.index(
        {"files": [{"src": "login.cl", "dest": "/home/astro/login.cl"}]})   # after useradd -m made the home
    assert "files" not in result.spec and "packages" not in result.spec


@pytest.mark.parametrize("adds_repo", [
    "wget -q https://repo.example.org/ex-release.deb && dpkg -i ex-release.deb",
    "echo 'deb https://repo.example.org stable main' > /etc/apt/sources.list.d/ex.list",
    "curl -fsSL https://repo.example.org/key.asc | gpg --dearmor -o /usr/share/keyrings/ex.gpg",
])
def test_apt_from_a_repository_an_earlier_run_adds_installs_after_it(tmp_path, catalog, adds_repo):
    result = imported(tmp_path, "FROM debian:bookworm\n"
                      "RUN apt-get update && apt-get install -y --no-install-recommends wget curl gnupg\n"
                      f"RUN {adds_repo}\n"
                      "RUN apt-get update && apt-get install -y ex-tool\n", catalog)
    build = result.spec["build"]
    assert build[0] == {"apt": ["wget", "curl", "gnupg"]}
    assert build[-2:] == ["apt-get update", "apt-get install -y ex-tool"]   # as written, after the repository


def test_an_apt_source_copied_in_comes_before_the_install_from_it(tmp_path, catalog):
    result = imported(tmp_path, "FROM debian:bookworm\n"
                      "COPY ex.list /etc/apt/sources.list.d/\n"
                      "RUN apt-get update && apt-get install -y ex-tool\n", catalog, files=["ex.list"])
    build = result.spec["build"]
    assert build[0] == {"files": [{"src": "ex.list", "dest": "/etc/apt/sources.list.d/ex.list"}]}
    assert build[1:] == ["apt-get update", "apt-get install -y ex-tool"]


def test_after_an_install_in_the_middle_of_a_run_the_shell_is_put_back(tmp_path, catalog):
    # an apt item ends stardock's shell: the WORKDIR and the ARG the rest of the RUN uses come back
    result = imported(tmp_path, "FROM debian:bookworm\n"
                      "ARG V=1.2\n"
                      "WORKDIR /src\n"
                      "RUN echo $V > v && apt-get install -y --no-install-recommends jq && cat v && jq . v\n",
                      catalog)
    assert result.spec["build"] == ["mkdir -p /src", "cd /src", "export V=1.2", "echo $V > v",
                                    {"apt": ["jq"]},
                                    "cd /src", "export V=1.2", "cat v", "jq . v"]


def test_post_keeps_its_directory_across_an_install(tmp_path, catalog):
    result = imported(tmp_path, "Bootstrap: docker\nFrom: debian:bookworm\n%post\n"
                      "    cd /opt\n"
                      "    apt-get install -y --no-install-recommends make\n"
                      "    make\n", catalog, name="tool.def")
    assert result.spec["build"] == ["cd /opt", {"apt": ["make"]}, "cd /opt", "make"]


@pytest.mark.parametrize("before", [". /opt/env.sh", "cd \"$(mktemp -d)\"", "eval \"$(conda shell.bash hook)\""])
def test_an_install_after_a_change_the_importer_cannot_put_back_stays_as_written(tmp_path, catalog, before):
    result = imported(tmp_path, "FROM debian:bookworm\n"
                      f"RUN {before} && apt-get install -y jq && make\n", catalog)
    build = result.spec["build"]
    assert not any(isinstance(item, dict) for item in build)
    assert build[1:] == ["apt-get update", "apt-get install -y jq", "make"]   # the lists are gone by then
    assert any("apt-get update` added" in note for note in result.notes)


def test_pip_runs_in_the_order_of_the_recipe_between_steps(tmp_path, catalog):
    result = imported(tmp_path, "FROM debian:bookworm\n"
                      "RUN apt-get update && apt-get install -y --no-install-recommends libhdf5-dev\n"
                      "RUN make -C /opt/lib install\n"
                      "RUN pip install h5py\n"
                      "RUN h5dump --version\n", catalog)
    assert result.spec["build"] == [{"apt": ["libhdf5-dev"]}, "make -C /opt/lib install", {"pip": ["h5py"]},
                                    "h5dump --version"]
