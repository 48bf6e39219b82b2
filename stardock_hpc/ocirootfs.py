"""An OCI image archive unpacked into a root file system, and squashed into one read-only file.

The shared cache keeps, beside a Podman entry's OCI archive, a squashfs of its root file system
(`image.sqfs`): any node runs it in place (mounted with squashfuse inside the user's rootless
user namespace, as root of it, so the files are the user's there; the container gets an overlay
whose upper layer is its own), with nothing loaded or copied into a store. It is made once, by
the builder, at publish.

Layers are applied in order with their whiteouts, as unprivileged extraction can: owners are not
kept (mksquashfs -all-root makes every file root's), device nodes are skipped. A layer is the
image's content, which may come from an imported recipe: every path is resolved inside the root
as a chroot would (a link to /etc leads to ROOT/etc, never out of it), `..` never climbs out,
and nothing is written through a link. A whiteout names one plain entry of its directory (never
`.`, `..` or an empty name: `.wh..` would remove the directory itself, `.wh...` its parent, the
root's being the builder's scratch), and, as the OCI spec says, hides only what lower layers
put there: what its own layer adds stays, whatever the order of the members.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO, Dict, List, Optional, Set

from stardock_hpc.errors import StardockError
from stardock_hpc.safefs import is_name

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_LINKS = 40


class BadLayer(StardockError):
    """An archive or layer stardock cannot unpack safely."""


def _blob(tar: tarfile.TarFile, digest: str) -> IO[bytes]:
    algo, _, hexdigest = digest.partition(":")
    fh = tar.extractfile(f"blobs/{algo}/{hexdigest}")
    if fh is None:
        raise BadLayer(f"blob {digest} is missing from the archive")
    return fh


def _manifest(tar: tarfile.TarFile) -> Dict:
    fh = tar.extractfile("index.json")
    if fh is None:
        raise BadLayer("index.json is missing from the archive")
    doc = json.load(fh)
    while "manifests" in doc:
        if len(doc["manifests"]) != 1:
            raise BadLayer(f"an archive of one image is expected, it has {len(doc['manifests'])}")
        doc = json.load(_blob(tar, doc["manifests"][0]["digest"]))
    return doc


def image_config(archive: Path) -> Dict:
    """The parts of the image's config a run needs: Env, WorkingDir, Entrypoint, Cmd, User."""
    with tarfile.open(archive) as tar:
        config = json.load(_blob(tar, _manifest(tar)["config"]["digest"])).get("config") or {}
    return {k: config.get(k) for k in ("Env", "WorkingDir", "Entrypoint", "Cmd", "User")}


def resolve(root: Path, rel: str, follow_last: bool = False) -> Path:
    """root/rel with every link below root resolved as a chroot to root would (absolute targets
    start again at root), never leaving it; the last component followed only if follow_last."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: List[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        if (parts or follow_last) and here.is_symlink():
            hops += 1
            if hops > MAX_LINKS:
                raise BadLayer(f"too many levels of links at /{'/'.join(done + [part])}")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return root.joinpath(*done)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, _files in os.walk(path):
            for d in dirnames:
                if not os.path.islink(os.path.join(dirpath, d)):  # never through a link (/dev/fd -> /proc/...)
                    os.chmod(os.path.join(dirpath, d), 0o700)  # a read-only directory of the image
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _apply(root: Path, layer: tarfile.TarFile) -> None:
    added: Set[Path] = set()  # what this layer made: its own whiteouts do not hide it
    for member in layer:
        name = os.path.normpath("/" + member.name).lstrip("/")
        if not name:
            continue
        parent_rel, base = os.path.split(name)
        parent = resolve(root, parent_rel, follow_last=True)
        if not (parent.is_dir() and not parent.is_symlink()):
            if member.isdir() or member.isfile() or member.issym() or member.islnk():
                _make_dirs(root, parent_rel)
                parent = resolve(root, parent_rel, follow_last=True)
            if not parent.is_dir():
                continue
        if base == OPAQUE:
            for child in list(parent.iterdir()):
                if child not in added:
                    _remove(child)
            continue
        if base.startswith(WHITEOUT):
            hidden = base[len(WHITEOUT):]
            if hidden.startswith(WHITEOUT):
                continue  # another of the reserved .wh..wh. names (aufs's own): nothing to hide
            if not is_name(hidden):
                raise BadLayer(f"the whiteout {member.name!r} names no plain file ({hidden!r})")
            if parent / hidden not in added:
                _remove(parent / hidden)
            continue
        target = parent / base
        added.add(target)
        if member.isdir():
            if not (target.is_dir() and not target.is_symlink()):
                _remove(target)
                target.mkdir()
            os.chmod(target, (member.mode & 0o7777 & ~0o7022) | 0o700)
            continue
        _remove(target)
        if member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            source = resolve(root, os.path.normpath("/" + member.linkname).lstrip("/"))
            if source.is_file() and not source.is_symlink():
                os.link(source, target)
        elif member.isfile():
            src = layer.extractfile(member)
            if src is None:
                continue
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            # the image's mode, without set-id bits or write for others (the image is read-only anyway)
            os.chmod(target, (member.mode & 0o777 & ~0o022) | 0o400)
        # device nodes and FIFOs cannot be made unprivileged: the engine provides /dev


def _make_dirs(root: Path, rel: str) -> None:
    """The directory rel (as resolved in root) and its missing parents; every component of the
    resolved path is a real directory or missing (resolve follows the links), so none is crossed."""
    try:
        os.makedirs(resolve(root, rel, follow_last=True), mode=0o755, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        pass  # a file where the layer wants a directory: its members are skipped


def unpack(archive: Path, root: Path) -> None:
    """Apply the archive's layers, in order, to the empty directory root."""
    try:
        with tarfile.open(archive) as tar:
            for layer in _manifest(tar)["layers"]:
                with tarfile.open(fileobj=_blob(tar, layer["digest"]), mode="r|*") as stream:
                    _apply(root, stream)
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise BadLayer(f"{archive}: cannot unpack the image ({exc})") from None


def finish_modes(root: Path) -> None:
    """Directories as the image has them, but readable and searchable by their owner (squashed as
    root's, in the user's namespace that is the user)."""
    for dirpath, _dirnames, _files in os.walk(root):
        st = os.lstat(dirpath)
        if stat.S_ISDIR(st.st_mode):
            os.chmod(dirpath, stat.S_IMODE(st.st_mode) | 0o700)
    os.chmod(root, 0o755)  # "/" as every image has it (the scratch directory was private)


def squash(archive: Path, out: Path, scratch: Path, run, timeout: Optional[float] = None) -> None:
    """archive's root file system as the squashfs out; run is proc.run (the one door to programs)."""
    root = scratch / "rootfs"
    root.mkdir(mode=0o700)
    try:
        unpack(archive, root)
        finish_modes(root)
        # zstd at level 3: measured on a Debian base (2026-12-07), 0.7 s of CPU and 49 MB against
        # mksquashfs's default level 15's 16.5 s and 44 MB; reading is as fast at either level
        run(["mksquashfs", root, out, "-all-root", "-noappend", "-quiet", "-no-progress", "-comp", "zstd",
             "-Xcompression-level", "3"], timeout=timeout)
    finally:
        _remove(root)
