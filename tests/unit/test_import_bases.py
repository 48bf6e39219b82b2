"""`stardock import` and the recipe's base (issue 11, defect 4), its stages, and the catalog's
apps (defect 5). One behaviour for bases: a base the site offers is used as it is; a
Debian-family image becomes the site's nearest Debian base, said first, with what the image had
carried as the first build items; another family is refused (exit 2) unless --base chooses."""
from __future__ import annotations

from pathlib import Path

import pytest

from stardock_hpc import cli as cli_module
from stardock_hpc.catalog import load_catalog
from stardock_hpc.errors import UsageError
from stardock_hpc.importer import import_recipe, render_yaml
from stardock_hpc.site import BaseImage, parse_site
from stardock_hpc.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "tests" / "golden" / "site.yaml"     # offers debian:bookworm (default) and debian:trixie
SITE_BASES = parse_site(SITE.read_text(), SITE).bases


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def recipe(tmp_path: Path, text: str, name: str = "Dockerfile") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def imported(path: Path, catalog, **kw):
    result = import_recipe(path, catalog=catalog, bases=SITE_BASES, **kw)
    parse_spec(render_yaml(result), path.parent / "stardock.yaml", apps=catalog.names(), bases=SITE_BASES)
    return result


@pytest.fixture
def stardock(capsys):
    def run(*args):
        with pytest.raises(SystemExit) as exc:
            cli_module.main([*args, "--site", str(SITE)])
        out = capsys.readouterr()
        return exc.value.code, out.out, out.err
    return run


# --- Debian-family images ----------------------------------------------------------------------

@pytest.mark.parametrize("image, base", [
    ("ubuntu:22.04", "debian:bookworm"),
    ("debian:11-slim", "debian:bookworm"),
    ("debian:13", "debian:trixie"),                      # the same release, where the site has it
    ("docker.io/library/debian:trixie-slim", "debian:trixie"),
    ("python:3.11", "debian:bookworm"),
    ("python:3.12-slim-trixie", "debian:trixie"),
    ("python:3.14-slim@sha256:486b8092bfb12997e10d4920897213a06563449c951c5506c2a2cfaf591c599f", "debian:bookworm"),
    ("continuumio/miniconda3", "debian:bookworm"),
    ("gcc:12.2.0", "debian:bookworm"),
    ("jupyter/base-notebook", "debian:bookworm"),
])
def test_a_debian_family_image_becomes_the_sites_nearest_base_and_that_is_said_first(
        tmp_path, catalog, stardock, image, base):
    path = recipe(tmp_path, f"FROM {image}\nRUN make\n")
    result = imported(path, catalog)
    assert result.spec["base"] == base
    assert len(result.changes) == 1 and result.changes[0].startswith(f"line 1: FROM {image}")
    assert f"-> base {base} (the site's nearest Debian base" in result.changes[0]
    assert "# THE BASE IS NOT THE RECIPE'S:" in render_yaml(result)
    code, _out, err = stardock("import", str(path))
    assert code == 0 and err.splitlines()[0].startswith(f"stardock: base changed: line 1: FROM {image}")


def test_a_base_the_site_offers_is_used_as_it_is(tmp_path, catalog):
    result = imported(recipe(tmp_path, "FROM registry.example.org/library/debian:trixie\nRUN make\n"), catalog)
    assert result.spec["base"] == "debian:trixie" and not result.changes
    assert result.spec["build"] == ["make"]


def test_what_a_python_image_had_comes_first(tmp_path, catalog):
    slim = imported(recipe(tmp_path, "FROM python:3.7-slim\nRUN pip install -r /dev/null\n"), catalog)
    assert slim.spec["build"][:2] == [{"apt": ["python3-dev"]}, {"pip": ["pip"]}]   # python, pip: the venv's
    full = imported(recipe(tmp_path, "FROM python:3.8-buster\nRUN python -c 'import sys'\n"), catalog)
    assert "build-essential" in full.spec["build"][0]["apt"] and full.spec["build"][1] == {"pip": ["pip"]}
    assert "Packages of Debian buster may be missing or renamed in debian:bookworm" in full.changes[0]
    assert "Not carried: the image's own Python 3.8" in full.changes[0]


def test_a_conda_image_brings_conda_and_its_pip_stays_conda_s(tmp_path, catalog):
    result = imported(recipe(tmp_path, "FROM continuumio/miniconda3\nRUN conda install -y numpy && pip install tqdm\n"),
                      catalog)
    build = result.spec["build"]
    assert "bash /tmp/miniconda.sh -b -p /opt/conda" in build
    assert build[-2:] == ["conda install -y numpy", "pip install tqdm"]
    assert result.spec["env"]["PATH"].startswith("/opt/conda/bin:")
    assert "from repo.anaconda.com" in result.changes[0]


def test_an_image_whose_name_does_not_say_is_placed_by_the_package_manager_the_recipe_runs(tmp_path, catalog):
    result = imported(recipe(tmp_path, "FROM bioinfor:latest\nRUN apt-get update && apt-get install -y r-base\n"),
                      catalog)
    assert result.spec["base"] == "debian:bookworm"
    assert "bioinfor does not say what it is built on; the recipe runs apt-get (line 2)" in result.changes[0]
    with pytest.raises(UsageError) as exc:
        imported(recipe(tmp_path, "FROM ghcr.io/ucsd-ets/datascience-notebook:2025.1\nRUN pip install astropy\n"),
                 catalog)
    assert "cannot tell what ghcr.io/ucsd-ets/datascience-notebook is built on" in exc.value.message
    assert "--base NAME" in str(exc.value.hint)


# --- other families ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, name, said", [
    ("FROM centos:7\nRUN yum -y install wget\n", "Dockerfile", "CentOS/RHEL"),
    ("FROM rockylinux:9\nRUN dnf -y install wget\n", "Dockerfile", "CentOS/RHEL"),
    ("FROM lsstsqre/centos:7-stack-lsst_distrib-w_latest\n", "Dockerfile", "CentOS/RHEL"),
    ("FROM alpine:3.19\nRUN apk add wget\n", "Dockerfile", "Alpine"),
    ("FROM python:3.11-alpine\nRUN pip install numpy\n", "Dockerfile", "Alpine"),
    ("FROM private/thing:1\nRUN yum -y install wget\n", "Dockerfile", "CentOS/RHEL"),
    ("BootStrap: yum\nOSVersion: 7\nMirrorURL: http://mirror.centos.org/centos-7/7/os/x86_64/\n"
     "%post\n    yum -y install make\n", "x.def", "Bootstrap: yum"),
    ("Bootstrap: zypper\nOSVersion: 15.5\n%post\n    zypper install -y make\n", "x.def", "SUSE"),
])
def test_another_family_is_refused_with_exit_2_and_the_reason(tmp_path, stardock, text, name, said):
    path = recipe(tmp_path, text, name)
    code, out, err = stardock("import", str(path))
    assert code == 2 and out == ""
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and said in errors[0] and "only debian-family bases" in errors[0]
    assert "--base NAME" in err


def test_base_chooses(tmp_path, stardock, catalog):
    path = recipe(tmp_path, "FROM centos:7\nRUN make\n")
    code, out, err = stardock("import", str(path), "--base", "debian:trixie")
    assert code == 0
    assert err.splitlines()[0] == ("stardock: base changed: line 1: FROM centos:7 -> base debian:trixie "
                                   "(chosen with --base; centos is CentOS/RHEL (yum, dnf, rpm): its commands "
                                   "may not work there)")
    assert parse_spec(out, tmp_path / "stardock.yaml", apps=catalog.names()).base == "debian:trixie"
    code, _out, err = stardock("import", str(path), "--base", "ubuntu:22.04")
    assert code == 2 and "--base ubuntu:22.04: not a base this site offers (debian:bookworm, debian:trixie)" in err
    result = imported(recipe(tmp_path, "FROM python:3.11-slim\nRUN make\n"), catalog, base="debian:trixie")
    assert result.spec["base"] == "debian:trixie" and result.spec["build"][1] == {"pip": ["pip"]}


def test_a_site_that_offers_the_family_gets_it(tmp_path, catalog):
    bases = {"debian:bookworm": BaseImage("debian:bookworm", "debian", ref="docker.io/library/debian:bookworm"),
             "ubuntu:22.04": BaseImage("ubuntu:22.04", "debian", ref="docker.io/library/ubuntu:22.04")}
    result = import_recipe(recipe(tmp_path, "FROM ubuntu:22.04\nRUN make\n"), catalog=catalog, bases=bases)
    assert result.spec["base"] == "ubuntu:22.04" and not result.changes


# --- stages and instructions Docker rejects ----------------------------------------------------

def test_the_final_stage_is_imported_with_the_stages_it_is_built_from(tmp_path, catalog):
    path = recipe(tmp_path, "FROM python:3.11-slim AS base\n"           # 1
                  "ENV APP=/app\n"                                      # 2
                  "RUN pip install numpy\n"                             # 3
                  "FROM golang:1.21 AS tools\n"                         # 4
                  "RUN go build -o /out/tool ./...\n"                   # 5
                  "FROM base AS final\n"                                # 6
                  "COPY --from=tools /out/tool /usr/local/bin/tool\n"   # 7
                  "RUN tool --version && echo $APP\n")                  # 8
    result = imported(path, catalog)
    assert result.spec["build"] == [{"apt": ["python3-dev"]}, {"pip": ["pip", "numpy"]},
                                    "tool --version", "echo $APP"]
    assert result.spec["env"] == {"APP": "/app"}
    assert [(i.line, i.instruction.split()[0]) for i in result.not_carried] == [(4, "FROM"), (7, "COPY")]
    assert "copies what build stage 'tools' (lines 4-5) built" in result.not_carried[1].reason
    assert any("built on stage base (lines 1-3)" in n for n in result.notes)


def test_a_line_docker_rejects_is_refused_naming_it(tmp_path, stardock):
    path = recipe(tmp_path, "FROM ubuntu\nRUN apt-get update && \\\napt-get install -y \\\nclang-10\n"
                  "clang-format-10 \\\npython3-pip\n")
    code, _out, err = stardock("import", str(path))
    assert code == 2
    assert "line 5: unknown instruction CLANG-FORMAT-10" in err and "end of line 4 missing?" in err


# --- catalog apps ------------------------------------------------------------------------------

def test_packages_that_are_catalog_apps_become_apps_wherever_they_are_installed(tmp_path, catalog):
    docker = imported(recipe(tmp_path, "FROM debian\n"
                             "RUN apt-get update && apt-get install -y sextractor scamp imagemagick\n"
                             "RUN make\n"
                             "RUN apt-get install -y --no-install-recommends swarp saods9\n"), catalog)
    assert docker.spec["apps"] == ["sextractor", "scamp", "swarp", "ds9"]
    assert docker.spec["build"] == [{"apt": ["imagemagick"], "recommends": True}, "make"]
    notes = "\n".join(docker.notes)
    assert "line 2: apt package sextractor -> catalog app sextractor (sextractor is Debian's old name of " \
           "source-extractor)" in notes
    assert "line 4: apt package saods9 -> catalog app ds9, which also installs xvfb, xauth" in notes
    assert "add {apt: [source-extractor, scamp], recommends: true}" in notes
    post = imported(recipe(tmp_path, "Bootstrap: docker\nFrom: debian:bookworm\n%post\n"
                           "    apt-get update\n    apt-get install -y --no-install-recommends source-extractor\n",
                           "x.def"), catalog)
    assert post.spec["apps"] == ["sextractor"] and "build" not in post.spec
    # but a package from a repository the recipe adds may be another build of it: not the catalog's
    added = imported(recipe(tmp_path, "FROM debian:bookworm\n"
                            "RUN echo 'deb https://example.org/astro stable main' > /etc/apt/sources.list.d/a.list\n"
                            "RUN apt-get update && apt-get install -y swarp\n"), catalog)
    assert "apps" not in added.spec and added.spec["build"][-1] == "apt-get install -y swarp"
