"""The testbed's site: a site.yaml for stardock-hpc, its volumes and its shared image cache."""
from __future__ import annotations

import os
from pathlib import Path

from tbcommon import ETC, REST_PORT, STATE, write_if_changed

VOLUMES = STATE / "volumes"
CACHE = STATE / "cache"


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
trusted_builders:
  groups: [astro]
"""


def up() -> bool:
    for d, mode in ((VOLUMES, 0o755), (VOLUMES / "archive", 0o755), (VOLUMES / "scratch", 0o1777),
                    (CACHE, 0o1777)):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
    changed = write_if_changed(VOLUMES / "archive" / "README", "Read-only sample archive of the testbed.\n")
    return changed | write_if_changed(ETC / "site.yaml", site_yaml())
