"""The base image debian:bookworm, made locally (no registry reachable) and cached as archives.

debootstrap (minbase) makes a root filesystem once; the test user's rootless Podman builds an
image from it and saves an OCI archive, which Podman loads (`podman load`) and Apptainer bootstraps from
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


# How the OCI archive is made; a different recipe remakes it on the next `up`.
# `podman import` gives an image whose history defeats Podman's layer cache for every image
# built on it, so the archive is built FROM scratch with ADD instead.
RECIPE = "from-scratch-add/1"
CONTAINERFILE = """\
FROM scratch
ADD rootfs.tar.zst /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["/bin/bash"]
"""


def make_oci_archive() -> bool:
    stamp = OCI_ARCHIVE.with_name(OCI_ARCHIVE.name + ".recipe")
    if OCI_ARCHIVE.exists() and stamp.exists() and stamp.read_text().strip() == RECIPE:
        return False
    say(f"building {IMAGE_NAME} from the root filesystem with rootless podman as {TEST_USER}")
    with tempfile.TemporaryDirectory(prefix="oci-", dir=IMAGES) as tmp:
        work = Path(tmp)
        shutil.copyfile(ROOTFS_ARCHIVE, work / "rootfs.tar.zst")
        (work / "Containerfile").write_text(CONTAINERFILE)
        for p in (work, work / "rootfs.tar.zst", work / "Containerfile"):
            shutil.chown(p, user=TEST_USER)
        out = work / "base.oci.tar"
        run(["podman", "build", "--pull=never", "--tag", IMAGE_NAME, work], user=TEST_USER, capture=True)
        run(["podman", "save", "--format", "oci-archive", "-o", out, IMAGE_NAME],
            user=TEST_USER, capture=True)
        if not out.exists():
            raise TestbedError("podman save produced no archive")
        shutil.chown(out, user="root", group="root")
        os.chmod(out, 0o644)
        os.replace(out, OCI_ARCHIVE)
    stamp.write_text(RECIPE + "\n")
    return True


def up() -> bool:
    changed = make_rootfs()
    changed |= make_oci_archive()
    return changed
