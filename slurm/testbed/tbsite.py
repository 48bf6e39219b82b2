"""The testbed's site: a site.yaml for stardock-hpc, its volumes and its shared image cache."""
from __future__ import annotations

import math
import os
import random
import struct
from pathlib import Path

from tbnodes import CONTROLLER_ADDR

from tbcommon import ETC, REST_PORT, STATE, write_if_changed

VOLUMES = STATE / "volumes"
CACHE = STATE / "cache"
SHARED = STATE / "shared"   # what the test users share with every node (like a parallel file system)
CACHE_LAYOUT = ("entries", "tmp", "locks", "used", "inuse")  # stardock_hpc/cache.py SUBDIRS


def site_cas() -> str:
    """The host's extra CAs (an egress proxy's, here): images need them to reach PyPI."""
    cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    return "".join(f"  - {p}\n" for p in cas) if cas else "  []\n"


def site_yaml() -> str:
    return f"""\
# stardock-hpc site configuration of the testbed (written by slurm/testbed/testbed up).
engine: podman
cache: {CACHE}
bases:
  debian:bookworm:
    archive: {STATE / 'images' / 'debian-bookworm.oci.tar'}
volumes:
  archive:
    path: {VOLUMES / 'archive'}
    mode: ro
  scratch:
    path: {VOLUMES / 'scratch'}/{{user}}
    mode: rw
mount_root: /data
outputs: {VOLUMES / 'scratch'}/{{user}}/stardock-outputs
ca_certificates:
{site_cas()}scheduler:
  backend: sbatch
  rest_url: http://127.0.0.1:{REST_PORT}
policy:
  network: false
  custom_build: true
  deliveries:                 # --deliver by URL: the login side's address on the nodes' network (tests)
    hosts: [{CONTROLLER_ADDR}]
trusted_builders:
  groups: [astro]
"""


def fits_image(size: int = 256, stars: int = 25, seed: int = 51) -> bytes:
    """A small FITS image of Gaussian stars on a noisy sky (stdlib only): the archive's M51."""
    rng = random.Random(seed)
    sky = [100.0 + rng.gauss(0, 3) for _ in range(size * size)]
    for _ in range(stars):
        x0, y0 = rng.uniform(10, size - 10), rng.uniform(10, size - 10)
        flux, sigma = rng.uniform(2000, 20000), rng.uniform(1.2, 2.2)
        for y in range(int(y0) - 8, int(y0) + 9):
            for x in range(int(x0) - 8, int(x0) + 9):
                r2 = (x - x0) ** 2 + (y - y0) ** 2
                sky[y * size + x] += flux / (2 * math.pi * sigma ** 2) * math.exp(-r2 / (2 * sigma ** 2))
    cards = ["SIMPLE  =                    T", "BITPIX  =                  -32", "NAXIS   =                    2",
             f"NAXIS1  = {size:20d}", f"NAXIS2  = {size:20d}", "OBJECT  = 'M51 (synthetic)'",
             "GAIN    =                  1.0", "END"]
    header = "".join(c.ljust(80) for c in cards).encode()
    header += b" " * (-len(header) % 2880)
    data = struct.pack(f">{size * size}f", *sky)
    return header + data + b"\0" * (-len(data) % 2880)


def write_bytes_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def cache_layout() -> None:
    """The shared cache's directories, root's and 1777 (what `stardock images init` does as root):
    whoever owned them could remove or replace everybody's images. A test user may have made
    them before stardock refused that: root takes them over."""
    for name in CACHE_LAYOUT:
        path = CACHE / name
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        path.mkdir(exist_ok=True)
        st = path.lstat()
        if (st.st_uid, st.st_gid) != (0, 0):
            os.lchown(path, 0, 0)
        os.chmod(path, 0o1777)


def up() -> bool:
    for d, mode in ((VOLUMES, 0o755), (VOLUMES / "archive", 0o755), (VOLUMES / "scratch", 0o1777),
                    (CACHE, 0o1777), (SHARED, 0o1777)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
    cache_layout()
    archive = VOLUMES / "archive"
    changed = write_if_changed(archive / "README", "Read-only sample archive of the testbed.\n")
    changed |= write_bytes_if_changed(archive / "m51" / "m51-r.fits", fits_image())
    # a sub-path with a hostile name, for the mount tests
    changed |= write_if_changed(archive / "odd names" / "it's $(x) \"q\"" / "data.txt", "odd but fine\n")
    for d in (archive / "m51", archive / "odd names", archive / "odd names" / "it's $(x) \"q\""):
        os.chmod(d, 0o755)
    return changed | write_if_changed(ETC / "site.yaml", site_yaml())
