"""`stardock deps` for a program of the user's own (issue 17, item 3): a C program built on the
host against libcfitsio and wcslib; deps finds the libraries the spec's image lacks and the
packages of its base that provide them (the same packages the host's dpkg names: the testbed's
base is the host's release), --add writes them into the spec, the image then builds, and the
program runs in a Slurm job. Real builds from Debian's mirror."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from clitools import remove, shared_dir, stardock, stardock_json, write_spec

from slurmtools import wait_job

pytestmark = [pytest.mark.slurm, pytest.mark.podman]
PROG_C = r"""#include <stdio.h>
#include <fitsio.h>
#include <wcslib/wcslib.h>
int main(void) {
    float version;
    struct wcsprm wcs;
    wcs.flag = -1;
    fits_get_version(&version);
    if (wcsini(1, 2, &wcs)) return 2;
    printf("cfitsio %.2f wcs naxis %d\n", version, wcs.naxis);
    wcsfree(&wcs);
    return 0;
}
"""
SPEC = "# a program of my own\nname: deps-test\nfiles:\n  - {src: prog, dest: /usr/local/bin/prog}\n"


def host_package(library: str) -> str:
    """The host's package of a library the program links (dpkg -S on the host)."""
    found = [p for p in Path("/usr/lib/x86_64-linux-gnu").glob(library) if p.exists()]
    assert found, library
    out = subprocess.run(["dpkg", "-S", str(found[0])], capture_output=True, text=True, check=True).stdout
    return out.split(":", 1)[0]


@pytest.fixture(scope="module")
def work():
    if shutil.which("gcc") is None or not Path("/usr/include/fitsio.h").exists() or \
            not Path("/usr/include/wcslib/wcslib.h").exists():
        pytest.skip("the host lacks gcc, libcfitsio-dev or wcslib-dev (the testbed installs them)")
    path = shared_dir("stardock-deps-")
    (path / "prog.c").write_text(PROG_C)
    subprocess.run(["gcc", "-O2", "-o", str(path / "prog"), str(path / "prog.c"), "-lcfitsio", "-lwcs", "-lm"],
                   check=True)
    write_spec(path, SPEC)
    (path / "prog").chmod(0o755)  # write_spec made every file 0644
    yield path
    remove(path)


def test_deps_finds_adds_and_the_program_then_runs_in_a_job(work):
    spec = work / "stardock.yaml"
    before = stardock_json("deps", str(work / "prog"), "--spec", str(spec), "--engine", "podman")
    # the image lacks the two libraries (the base has libc); they are named after the host's packages
    expected = {"libcfitsio.so.10": host_package("libcfitsio.so.10"), "libwcs.so.7": host_package("libwcs.so.7")}
    assert before["packages"] == expected, before
    assert before["unresolved"] == [] and before["interpreters_missing"] == [] and "libc.so.6" in before["present"]
    assert spec.read_text() == SPEC  # --spec only looks
    failed = stardock("exec", "--image", before["key"], "--", "prog")
    assert failed.returncode != 0 and "cannot open shared object file" in failed.stderr + failed.stdout

    added = stardock_json("deps", str(work), "--add", str(spec), "--engine", "podman")
    assert added["add"] == sorted(expected.values())
    text = spec.read_text()
    assert text.startswith(SPEC) and "packages:\n  apt: [" in text, text  # the rest as it was, comment too
    after = stardock_json("deps", str(work / "prog"), "--spec", str(spec), "--engine", "podman")
    assert after["packages"] == {} and after["unresolved"] == [] and after["key"] != before["key"]
    assert set(expected) <= set(after["present"])

    proc = stardock("sbatch", "--parsable", "--env", str(spec), "--engine", "podman", "-t", "5",
                    "--output=prog-%j.out", "--wrap", "prog", cwd=work)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    rows = wait_job(job, timeout=600)
    out = (work / f"prog-{job}.out").read_text()
    assert rows[job]["State"] == "COMPLETED" and "wcs naxis 2" in out, out


def test_what_no_package_provides_is_listed_and_the_exit_is_1(work):
    """A library of the user's own that the program needs but was not given: unresolved, exit 1."""
    d = shared_dir("stardock-deps-own-")
    try:
        (d / "lib.c").write_text("int stardock_private_answer(void) { return 42; }\n")
        (d / "main.c").write_text("int stardock_private_answer(void);\nint main(void) { return "
                                  "stardock_private_answer() - 42; }\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libstardockprivate.so.1", "-o",
                        str(d / "libstardockprivate.so.1"), str(d / "lib.c")], check=True)
        subprocess.run(["gcc", "-o", str(d / "main"), str(d / "main.c"), str(d / "libstardockprivate.so.1")],
                       check=True)
        spec = write_spec(d / "env", "name: deps-own\n")
        proc = stardock("deps", str(d / "main"), "--spec", str(spec), "--engine", "podman")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "libstardockprivate.so.1: no package of the base provides it" in proc.stdout, proc.stdout
        # given with the program, its own library is not needed from the image
        both = stardock_json("deps", str(d / "main"), str(d / "libstardockprivate.so.1"), "--spec", str(spec),
                             "--engine", "podman")
        assert both["unresolved"] == [] and both["packages"] == {}
    finally:
        remove(d)
