"""The suite's kept images: specs whose key never changes, built once into the testbed's shared
cache and found there by every later run (and by every lane: the testbed site trusts its test
users' group, and these specs are readable by everybody, so their entries are public).

The testbed's test command builds them first (`python tests/suiteimages.py build`, phase 1, beside
the root lane); a test that needs one asks `suite_build(NAME, ENGINE)`, a cache hit from then on.
No test removes them; `slurm/testbed/testbed test --fresh` empties the cache of the test users
first, so that a run builds them from nothing again.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed")) / "shared"

RING_C = r"""#include <mpi.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int rank, size, sum;
    char host[256];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    gethostname(host, sizeof host);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d of %d on %s sum %d\n", rank, size, host, sum);
#ifdef END_WITHOUT_FINALIZE
    /* MPICH 4.0.2 (Debian 12), ch4:ucx: MPI_Finalize can hang, a rank blocked in its PMI barrier
       never progressing a peer's UCX disconnect (seen once in ten runs on a loaded machine; fixed
       upstream by pmodels/mpich#6596). Every rank has its result once all pass the barrier. */
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    _exit(0);
#endif
    MPI_Finalize();
    return 0;
}
"""
RING_PY = """from mpi4py import MPI
import socket
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank(), op=MPI.SUM)
print(f"rank {comm.Get_rank()} of {comm.Get_size()} on {socket.gethostname()} sum {total}", flush=True)
"""


@dataclass(frozen=True)
class SuiteImage:
    spec: str                                  # stardock.yaml's text ("" : path names the spec)
    files: Dict[str, str] = field(default_factory=dict)   # beside the spec
    engines: Tuple[str, ...] = ("podman", "apptainer")
    add_apps: Tuple[str, ...] = ()             # apps a command adds to the spec (stardock notebook)
    path: str = ""                             # a spec in the source tree instead


IMAGES: Dict[str, SuiteImage] = {
    # "some image": what the modules that only need an environment to run jobs in share
    "small": SuiteImage("name: suite-small\nenv: {GREETING: hello}\nbuild: ['echo small > /stamp']\n"),
    "openmpi": SuiteImage(
        "name: steps-openmpi\napps: [openmpi]\n"
        "files:\n  - {src: ring.c, dest: /opt/mpi/ring.c}\n  - {src: ring.py, dest: /opt/mpi/ring.py}\n"
        "build:\n  - mpicc -O2 -o /usr/local/bin/mpi-ring /opt/mpi/ring.c\n",
        {"ring.c": RING_C, "ring.py": RING_PY}),
    "mpich": SuiteImage(
        "name: steps-mpich\napps: [mpich]\nfiles:\n  - {src: ring.c, dest: /opt/mpi/ring.c}\n"
        "build:\n  - mpicc.mpich -O2 -DEND_WITHOUT_FINALIZE -o /usr/local/bin/mpi-ring /opt/mpi/ring.c\n",
        {"ring.c": RING_C}, engines=("podman",)),
    # what `stardock notebook --env` builds for this spec (jupyterlab added)
    "notebook": SuiteImage("name: notebook-test\napps: [astropy]\n", add_apps=("jupyterlab",)),
    "menu": SuiteImage("", path="golden/cases/menu/stardock.yaml", engines=("podman",)),
}


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def suite_spec(name: str) -> Path:
    """The image's spec, in a directory of the user's that everybody may read (so that its entry is
    public), written only when it differs (its key then stays what it was)."""
    image = IMAGES[name]
    if image.path:
        return HERE / image.path
    directory = SHARED / f"suite-images-{_user()}" / name
    directory.mkdir(parents=True, exist_ok=True)
    for path in (directory.parent, directory):
        path.chmod(0o755)
    for rel, text in {"stardock.yaml": image.spec, **image.files}.items():
        target = directory / rel
        if not target.exists() or target.read_text() != text:
            tmp = directory / f".{rel}.tmp"
            tmp.write_text(text)
            tmp.chmod(0o644)
            os.replace(tmp, target)
    return directory / "stardock.yaml"


@functools.cache
def suite_build(name: str, engine: str = "podman") -> Dict:
    """`stardock build --json` of the image for engine (a cache hit once built): key, artifact..."""
    image = IMAGES[name]
    assert engine in image.engines, f"the suite keeps {name} for {', '.join(image.engines)} only"
    spec = suite_spec(name)
    if image.add_apps:
        code = ("import json, sys; from pathlib import Path; from stardock_hpc.builder import build; "
                "from stardock_hpc.catalog import load_catalog; from stardock_hpc.engines import get_engine; "
                "from stardock_hpc.site import load_site; site = load_site(); "
                "r = build(Path(sys.argv[1]), site, load_catalog(site.catalog), get_engine(sys.argv[2]), "
                "add_apps=tuple(sys.argv[3:])); "
                "print(json.dumps({'key': r.entry.key, 'artifact': str(r.entry.artifact)}))")
        argv = [sys.executable, "-c", code, str(spec), engine, *image.add_apps]
    else:
        argv = [sys.executable, "-m", "stardock_hpc", "build", str(spec), "--engine", engine, "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600, cwd=spec.parent)
    if proc.returncode != 0:
        raise AssertionError(f"building the suite's {name} image for {engine} failed:\n{proc.stderr[-4000:]}")
    out = proc.stdout
    return json.loads(out[out.index("{"):])  # the build's JSON, after whatever the build printed


def main(argv) -> int:
    if argv != ["build"]:
        print("usage: suiteimages.py build", file=sys.stderr)
        return 2
    failed = 0
    for name, image in IMAGES.items():
        for engine in image.engines:
            t0 = time.monotonic()
            try:
                key = suite_build(name, engine)["key"]
                print(f"{name:9} {engine:10} {key[:16]}  {time.monotonic() - t0:6.1f} s", flush=True)
            except AssertionError as exc:
                failed += 1
                print(f"{name:9} {engine:10} FAILED after {time.monotonic() - t0:.1f} s: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
