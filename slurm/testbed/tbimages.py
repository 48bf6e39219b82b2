"""The base image debian:bookworm, made locally (no registry reachable) and cached as archives.

debootstrap (minbase) makes a root filesystem once; the test user's rootless Podman imports it
and saves an OCI archive, which Podman loads (`podman load`) and Apptainer bootstraps from
(`Bootstrap: oci-archive`). Both files live under $STATE/images and are reused by every `up`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tbcommon import STATE, TEST_USER, TestbedError, run, say

IMAGES = STATE / "images"
ROOTFS_ARCHIVE = IMAGES / "debian-bookworm.rootfs.tar.zst"
OCI_ARCHIVE = IMAGES / "debian-bookworm.oci.tar"
IMAGE_NAME = "localhost/debian:bookworm"
MIRROR = "http://deb.debian.org/debian"


def make_rootfs() -> bool:
    if ROOTFS_ARCHIVE.exists():
        return False
    say("making debian:bookworm with debootstrap (about 30 s, once)")
    IMAGES.mkdir(parents=True, exist_ok=True)
    os.chmod(IMAGES, 0o755)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=IMAGES) as tmp:
        root = Path(tmp) / "root"
        run(["debootstrap", "--variant=minbase", "bookworm", root, MIRROR], capture=True)
        # Keep the image small and free of the build host's traces.
        for rel in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / rel).glob("*"):
                if p.is_file():
                    p.unlink()
        part = Path(tmp) / "rootfs.tar.zst"
        run(["tar", "--numeric-owner", "--sort=name", "--xattrs", "-C", root,
             "--zstd", "-cf", part, "."])
        os.chmod(part, 0o644)
        os.replace(part, ROOTFS_ARCHIVE)
    return True


def make_oci_archive() -> bool:
    if OCI_ARCHIVE.exists():
        return False
    say(f"importing the root filesystem with rootless podman as {TEST_USER} and saving {OCI_ARCHIVE.name}")
    with tempfile.TemporaryDirectory(prefix="oci-", dir=IMAGES) as tmp:
        shutil.chown(tmp, user=TEST_USER)
        out = Path(tmp) / "base.oci.tar"
        changes = ["--change", 'CMD ["/bin/bash"]',
                   "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        run(["podman", "import", *changes, ROOTFS_ARCHIVE, IMAGE_NAME], user=TEST_USER, capture=True)
        run(["podman", "save", "--format", "oci-archive", "-o", out, IMAGE_NAME],
            user=TEST_USER, capture=True)
        if not out.exists():
            raise TestbedError("podman save produced no archive")
        shutil.chown(out, user="root", group="root")
        os.chmod(out, 0o644)
        os.replace(out, OCI_ARCHIVE)
    return True


def up() -> bool:
    changed = make_rootfs()
    changed |= make_oci_archive()
    return changed
