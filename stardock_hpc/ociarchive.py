"""Read the identity of an OCI image archive (`podman save --format oci-archive`) cheaply.

The manifest digest names the image's content (its config and every layer, by digest), so it
serves as the base's digest in cache keys without hashing the whole archive; the config digest
is the image ID Podman gives the image once loaded.
"""
from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from stardock_hpc.errors import UsageError


@dataclass(frozen=True)
class ArchiveIdentity:
    manifest_digest: str   # sha256:...
    config_digest: str     # sha256:... (Podman's image ID after load)


def identity(path: Path) -> ArchiveIdentity:
    try:
        with tarfile.open(path) as tar:
            index = json.load(_member(tar, "index.json", path))
            manifests = index.get("manifests") or []
            if len(manifests) != 1:
                raise UsageError(f"{path}: an OCI archive with exactly one image is expected, "
                                 f"found {len(manifests)}")
            entry = manifests[0]
            algo, _, hexdigest = entry["digest"].partition(":")
            manifest = json.load(_member(tar, f"blobs/{algo}/{hexdigest}", path))
            return ArchiveIdentity(entry["digest"], manifest["config"]["digest"])
    except (tarfile.TarError, OSError, KeyError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable OCI image archive ({exc})",
                         hint="make it with `podman save --format oci-archive -o FILE IMAGE`") from None


def _member(tar: tarfile.TarFile, name: str, path: Path):
    fh = tar.extractfile(name)
    if fh is None:
        raise UsageError(f"{path}: {name} is missing from the OCI archive")
    return fh
