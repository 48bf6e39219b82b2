"""`stardock import` changes no meaning silently (issue 11, defect 3): what the recipe does is
carried as it is, or the report names the line and says what differs."""
from __future__ import annotations

from pathlib import Path

import pytest

from stardock_hpc.catalog import load_catalog
from stardock_hpc.importer import import_recipe, render_yaml
from stardock_hpc.plan import resolve
from stardock_hpc.render.apptainer import render_apptainer
from stardock_hpc.site import Site
from stardock_hpc.spec import parse_spec


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def imported(tmp_path: Path, text: str, catalog, name: str = "Dockerfile", files=()):
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(f"{f}\n")
    path = tmp_path / name
    path.write_text(text)
    result = import_recipe(path, catalog=catalog)
    env = parse_spec(render_yaml(result), tmp_path / "stardock.yaml", apps=catalog.names())
    return result, env


def copied(build):
    """(src, dest) of every files: item of build:."""
    return [(f["src"], f["dest"]) for item in build if isinstance(item, dict) for f in item.get("files", [])]


# --- apt and pip --------------------------------------------------------------------------------

@pytest.mark.parametrize("install, item", [
    ("apt-get install -y gfortran", {"apt": ["gfortran"], "recommends": True}),   # apt's default
    ("apt install -y gfortran", {"apt": ["gfortran"], "recommends": True}),
    ("apt-get install -y --no-install-recommends gfortran", {"apt": ["gfortran"]}),
    ("apt-get install -y -o APT::Install-Recommends=false gfortran", {"apt": ["gfortran"]}),
])
def test_recommended_packages_are_installed_as_the_recipe_says(tmp_path, catalog, install, item):
    result, env = imported(tmp_path, f"FROM debian:bookworm\nRUN apt-get update && {install}\n", catalog)
    assert result.spec["build"] == [item]
    assert env.build[0].recommends == ("recommends" in item)


@pytest.mark.parametrize("flag", ["--upgrade", "-U", "--force-reinstall", "--ignore-installed"])
def test_pip_that_replaces_what_is_installed_keeps_its_flag(tmp_path, catalog, flag):
    # stardock's venv sees Debian's python3-numpy: without --upgrade pip would keep that one
    result, _env = imported(tmp_path, "FROM debian:bookworm\n"
                            "RUN apt-get update && apt-get install -y --no-install-recommends python3-numpy\n"
                            f"RUN pip install {flag} numpy\n", catalog)
    assert result.spec["build"][-1] == f"pip install {flag} numpy"
    assert {"pip": ["pip"]} in result.spec["build"]   # the venv exists before it, first on PATH


@pytest.mark.parametrize("recipe", [
    "FROM debian:bookworm\nRUN /opt/conda/bin/pip install numpy\n",
    "FROM debian:bookworm\nENV PATH=/opt/conda/bin:$PATH\nRUN pip install numpy\n",
    "FROM debian:bookworm\nRUN /opt/venv/bin/python -m pip install numpy\n",
])
def test_the_pip_of_another_python_is_kept_as_written(tmp_path, catalog, recipe):
    result, _env = imported(tmp_path, recipe, catalog)
    assert result.spec["build"] == [recipe.splitlines()[-1][4:]]
    assert any("pip of another Python" in note for note in result.notes)


def test_the_pip_of_debians_python_goes_to_stardocks_venv(tmp_path, catalog):
    result, _env = imported(tmp_path, "FROM debian:bookworm\nRUN /usr/bin/pip3 install numpy\n", catalog)
    assert result.spec["build"] == [{"pip": ["numpy"]}]


# --- the build context --------------------------------------------------------------------------

def test_dockerignore_is_honoured(tmp_path, catalog):
    (tmp_path / ".dockerignore").write_text("# build output\n*.log\ndata/*.fits\n!data/keep.fits\n.git\n")
    result, env = imported(tmp_path, "FROM debian:bookworm\nCOPY . /app\n", catalog,
                           files=["run.py", "debug.log", "data/big.fits", "data/keep.fits", "data/notes.txt",
                                  ".git/HEAD", "src/a.py"])
    taken = sorted(copied(result.spec["build"]))
    assert taken == [(".dockerignore", "/app/.dockerignore"), ("Dockerfile", "/app/Dockerfile"),
                     ("data/keep.fits", "/app/data/keep.fits"), ("data/notes.txt", "/app/data/notes.txt"),
                     ("run.py", "/app/run.py"), ("src", "/app/src")]
    note = next(n for n in result.notes if ".dockerignore leaves out" in n)
    assert "debug.log" in note and "data/big.fits" in note and ".git" in note and note.startswith("line 2:")


@pytest.mark.parametrize("patterns, path, excluded", [
    (["*.log"], "debug.log", True),
    (["*.log"], "logs/debug.log", False),                 # * does not cross a /
    (["**/*.log"], "logs/deep/debug.log", True),
    (["**/*.log"], "debug.log", True),
    (["/build"], "build/out.o", True),                    # a leading / is the context's root
    (["data"], "data/a/b.fits", True),                    # an excluded directory excludes what is in it
    (["data/*", "!data/keep.fits"], "data/keep.fits", False),
    (["!data/keep.fits", "data/*"], "data/keep.fits", True),   # the last matching line decides
    (["fil?.[ab]"], "file.a", True),
    (["fil?.[!ab]"], "file.a", False),
    (["# a comment", "", "  spaced.txt  "], "spaced.txt", True),
])
def test_dockerignore_patterns_mean_what_they_mean_to_docker(patterns, path, excluded):
    # imported here: the module that reads .dockerignore is new (the other tests fail without it)
    from stardock_hpc.importer.buildcontext import Ignore

    assert Ignore(patterns).excluded(path) is excluded


def test_a_file_the_dockerignore_excludes_is_not_found_as_under_docker(tmp_path, catalog):
    (tmp_path / ".dockerignore").write_text("secrets.txt\n")
    result, _env = imported(tmp_path, "FROM debian:bookworm\nCOPY secrets.txt /etc/\n", catalog, files=["secrets.txt"])
    assert "build" not in result.spec
    assert "excluded by .dockerignore" in result.not_carried[0].reason


def test_add_star_of_plain_files_is_a_directory_copy(tmp_path, catalog):
    result, _env = imported(tmp_path, "FROM debian:bookworm\nADD * /app/\n", catalog, files=["a.py", "b.cfg"])
    assert result.spec["build"] == [{"files": [{"src": ".", "dest": "/app"}]}]


def test_add_star_with_directories_is_expanded_and_said(tmp_path, catalog):
    # Docker copies the contents of a matched directory, not the directory: only expanding says that
    result, _env = imported(tmp_path, "FROM debian:bookworm\nADD * /app/\n", catalog, files=["a.py", "lib/b.py"])
    assert copied(result.spec["build"]) == [("Dockerfile", "/app/Dockerfile"), ("a.py", "/app/a.py"),
                                            ("lib", "/app/")]
    assert any(n.startswith("line 2: ADD * /app/: the wildcard is expanded now") for n in result.notes)


# --- Apptainer's %setup and %files --------------------------------------------------------------

def test_a_directory_setup_makes_receives_files_by_name(tmp_path, catalog):
    result, _env = imported(tmp_path, "Bootstrap: docker\nFrom: debian:bookworm\n"
                            "%setup\n    mkdir -p ${SINGULARITY_ROOTFS}/opt/code\n"
                            "%files\n    run.py /opt/code\n    lib /opt/\n", catalog, name="x.def",
                            files=["run.py", "lib/util.py"])
    assert result.spec["build"] == ["mkdir -p /opt/code",
                                    {"files": [{"src": "run.py", "dest": "/opt/code/run.py"},
                                               {"src": "lib", "dest": "/opt/lib"}]}]
    assert not result.not_carried


def test_setup_copying_the_recipes_files_into_the_image_is_carried(tmp_path, catalog):
    result, _env = imported(tmp_path, "Bootstrap: docker\nFrom: debian:bookworm\n"
                            "%post\n    make -C /opt/wf\n"
                            "%setup\n    mkdir $SINGULARITY_ROOTFS/opt/wf\n    cp -a * $SINGULARITY_ROOTFS/opt/wf/\n"
                            "    ls /tmp\n", catalog, name="x.def", files=["Makefile"])
    assert result.spec["build"] == ["mkdir -p /opt/wf", {"files": [{"src": ".", "dest": "/opt/wf"}]},
                                    "make -C /opt/wf"]                # %setup runs first, wherever written
    assert [str(i) for i in result.not_carried] == [
        "line 8: %setup: ls /tmp (runs on the build host as root; stardock never runs steps outside the image "
        "(only its mkdir, touch and cp into the image are carried))"]


# --- the command ----------------------------------------------------------------------------------

def runscript(env) -> str:
    plan = resolve(env, Site(), load_catalog())
    return render_apptainer(plan).split("%runscript", 1)[1].split("\n%", 1)[0]


@pytest.mark.parametrize("lines, command", [
    (['ENTRYPOINT ["/usr/bin/tini", "--"]', 'CMD ["ds9"]'], ["/usr/bin/tini", "--", "ds9"]),
    (['ENTRYPOINT ["process_dir"]'], ["process_dir"]),
])
def test_the_report_says_how_run_time_arguments_meet_an_entrypoint(tmp_path, catalog, lines, command):
    result, env = imported(tmp_path, "FROM debian:bookworm\n" + "\n".join(lines) + "\n", catalog)
    assert result.spec["command"] == command
    note = next(n for n in result.notes if "ENTRYPOINT" in n)
    assert note.startswith("line 2: ENTRYPOINT") and "arguments given at run time replace the whole command" in note
    assert 'if [ "$#" -gt 0 ]; then exec "$@"; fi' in runscript(env)   # what the spec does: replace


def test_the_report_says_what_becomes_of_the_runscripts_arguments(tmp_path, catalog):
    result, env = imported(tmp_path, "Bootstrap: docker\nFrom: debian:bookworm\n"
                           '%runscript\n    exec python3 /opt/run.py "$@"\n', catalog, name="x.def")
    assert result.spec["command"] == ["python3", "/opt/run.py"]
    assert result.notes == ["line 3: %runscript passes its arguments to python3; the spec's command does not: "
                            "arguments given at run time replace the command"]
    assert 'if [ "$#" -gt 0 ]; then exec "$@"; fi' in runscript(env)


# --- RUN --mount, and nothing listed twice -------------------------------------------------------

def test_a_run_that_needs_its_bind_mount_is_not_carried_with_it(tmp_path, catalog):
    result, _env = imported(tmp_path, "FROM debian:bookworm\n"
                            "RUN --mount=type=bind,source=src,target=/src make -C /src install\n"
                            "RUN --mount=type=cache,target=/root/.cache/pip make test\n", catalog)
    assert result.spec["build"] == ["make test"]
    assert [(i.line, i.instruction.split()[1]) for i in result.not_carried] == [
        (2, "--mount=type=bind,source=src,target=/src")]
    assert "needs --mount=type=bind" in result.not_carried[0].reason
    assert any("a cache mount only speeds the step up" in n for n in result.notes)


def test_nothing_is_listed_twice(tmp_path, catalog):
    import io
    import tarfile
    for name in ("a", "b"):
        with tarfile.open(tmp_path / f"{name}.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo("x")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    result, _env = imported(tmp_path, "FROM debian:bookworm\n"
                            "ADD *.tar.gz /opt/\n"
                            "RUN apt-get install -y openssh-server && apt-get install -y openssh-server vim\n"
                            "RUN --mount=type=cache,target=/x --mount=type=cache,target=/y make\n", catalog)
    shown = [str(i) for i in result.not_carried]
    assert len(shown) == len(set(shown)) == 3
    assert [i.instruction for i in result.not_carried][:2] == ["ADD a.tar.gz /opt/", "ADD b.tar.gz /opt/"]
    assert len(result.notes) == len(set(result.notes))


def test_a_file_an_earlier_step_makes_is_not_taken_for_a_missing_copy(tmp_path, catalog):
    # singularityhub's miniconda3 recipe: the requirements file comes from the git clone before it
    result, _env = imported(tmp_path, "Bootstrap: docker\nFrom: debian:bookworm\n%post\n"
                            "    git clone https://example.org/tool.git /opt/tool\n"
                            "    cd /opt/tool\n"
                            "    pip3 install -r requirements.txt\n"
                            "%runscript\n    # nothing to run\n", catalog, name="x.def")
    assert result.spec["build"][-1] == "pip3 install -r requirements.txt" and not result.not_carried
    assert "command" not in result.spec     # a runscript of comments runs nothing


def test_the_report_names_what_the_build_downloads_beyond_debian_and_pypi(tmp_path, catalog):
    result, _env = imported(tmp_path, "FROM debian:bookworm\n"
                            "RUN git clone https://github.com/astromatic/swarp.git && pip install numpy\n"
                            "RUN wget -q https://deb.debian.org/debian/README && conda install -y numpy\n", catalog)
    assert result.notes[-1] == ("the build steps download from beyond Debian's mirror and PyPI, which the site's "
                                "builds must reach: github.com (line 2); conda's channels (line 3)")
