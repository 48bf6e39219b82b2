"""Unpacking an OCI archive's layers into a root file system (the cache's squashfs run form):
whiteouts and order as the engines apply them, and a hostile layer never writes outside the root."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import List, Tuple

import pytest

from stardock_hpc import ocirootfs

Member = Tuple[str, str, str]  # (kind, name, data or link target)


def _layer(members: List[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                raw = data.encode()
                info.size, info.mode = len(raw), 0o4755 if name.endswith("suid") else 0o644
                tar.addfile(info, io.BytesIO(raw))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tar.addfile(info)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
                tar.addfile(info)
    return buf.getvalue()


def archive(path: Path, layers: List[List[Member]], env: List[str]) -> Path:
    blobs = {}

    def add(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    config = add(json.dumps({"config": {"Env": env, "WorkingDir": "/w"}}).encode())
    manifest = add(json.dumps({"config": {"digest": config},
                               "layers": [{"digest": add(_layer(lay))} for lay in layers]}).encode())
    index = json.dumps({"manifests": [{"digest": manifest}]}).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in [("index.json", index)] + [(f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def files_under(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_layers_apply_in_order_with_whiteouts(tmp_path):
    arch = archive(tmp_path / "a.tar", [
        [("dir", "etc", ""), ("file", "etc/a", "one"), ("file", "etc/b", "b"), ("dir", "opt", ""),
         ("file", "opt/old", "x"), ("file", "bin/suid", "s"), ("chr", "dev/null", "")],
        [("file", "etc/a", "two"), ("file", "etc/.wh.b", ""), ("file", "opt/.wh..wh..opq", ""),
         ("file", "opt/new", "n"), ("hard", "etc/a2", "etc/a"), ("sym", "lib", "usr/lib")],
    ], ["PATH=/usr/bin", "A=1"])
    root = tmp_path / "root"
    root.mkdir()
    ocirootfs.unpack(arch, root)
    assert (root / "etc/a").read_text() == "two" and not (root / "etc/b").exists()
    assert files_under(root / "opt") == ["new"]
    assert (root / "etc/a2").read_text() == "two"
    assert os.readlink(root / "lib") == "usr/lib"
    assert not (root / "dev/null").exists()  # device nodes are the engine's to provide
    assert oct((root / "bin/suid").stat().st_mode & 0o7777) == "0o755"  # no set-id bits
    assert ocirootfs.image_config(arch)["Env"] == ["PATH=/usr/bin", "A=1"]


@pytest.mark.parametrize("link", ["/", "/tmp", "../../..", "../.."])
def test_a_hostile_layer_never_writes_outside_the_root(tmp_path, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    arch = archive(tmp_path / "a.tar", [
        [("sym", "escape", link), ("sym", "abs", str(outside)), ("dir", "d", "")],
        [("file", "escape/pwned", "x"), ("file", "abs/pwned", "x"), ("file", "../../pwned", "x"),
         ("hard", "d/shadow", str(outside / "secret")), ("sym", "d/l", "/etc/passwd"), ("file", "d/l", "over")],
    ], [])
    (outside / "secret").write_text("secret")
    root = tmp_path / "root"
    root.mkdir()
    ocirootfs.unpack(arch, root)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert not (tmp_path / "pwned").exists() and not Path("/pwned").exists()
    assert (root / "pwned").read_text() == "x"  # what went through the links stayed in the root
    assert not (root / "d/shadow").exists()
    assert (root / "d/l").read_text() == "over" and not (root / "d/l").is_symlink()
    assert Path("/etc/passwd").read_text() != "over"


def test_resolve_follows_links_as_a_chroot_would(tmp_path):
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("/usr/lib")
    (tmp_path / "loop").symlink_to("loop")
    assert ocirootfs.resolve(tmp_path, "lib/x") == tmp_path / "usr/lib/x"
    assert ocirootfs.resolve(tmp_path, "../../lib/x") == tmp_path / "usr/lib/x"
    with pytest.raises(ocirootfs.BadLayer):
        ocirootfs.resolve(tmp_path, "loop/x")


def test_removing_an_unpacked_root_never_goes_through_its_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    arch = archive(tmp_path / "a.tar", [[("dir", "ro", ""), ("sym", "ro/out", str(outside)),
                                          ("sym", "fd", "/proc/self/fd")]], [])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    calls = []

    def mksquashfs(argv, timeout=None):
        calls.append(argv)
        assert oct(Path(argv[1]).stat().st_mode & 0o777) == "0o755"  # "/" of the image: anybody may enter

    ocirootfs.squash(arch, tmp_path / "x.sqfs", scratch, mksquashfs)
    assert calls and calls[0][0] == "mksquashfs"
    assert not (scratch / "rootfs").exists() and oct(outside.stat().st_mode & 0o777) == "0o755"


@pytest.mark.parametrize("whiteout", [".wh..", ".wh...", ".wh.", "sub/.wh..", "sub/.wh...", "sub/deeper/.wh..."])
def test_a_whiteout_names_a_plain_entry_and_never_removes_the_root_or_above(tmp_path, whiteout):
    """`.wh..` names the whiteout's own directory, `.wh...` its parent: at the top of the image,
    that is the root and the builder's scratch around it (with everything beside the root)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "beside").write_text("the builder's\n")
    arch = archive(tmp_path / "a.tar", [
        [("dir", "sub", ""), ("dir", "sub/deeper", ""), ("file", "sub/deeper/keep", "k"), ("file", "top", "t")],
        [("file", whiteout, "")],
    ], [])
    root = scratch / "rootfs"
    root.mkdir()
    with pytest.raises(ocirootfs.BadLayer, match="names no plain file"):
        ocirootfs.unpack(arch, root)
    assert (scratch / "beside").read_text() == "the builder's\n"
    assert (root / "top").read_text() == "t" and (root / "sub/deeper/keep").read_text() == "k"


def test_whiteouts_hide_only_what_lower_layers_made(tmp_path):
    """An opaque whiteout empties its directory of the lower layers' entries, but what its own
    layer puts there stays, whichever comes first in the tar; a plain whiteout likewise."""
    arch = archive(tmp_path / "a.tar", [
        [("dir", "opt", ""), ("file", "opt/old", "o"), ("dir", "etc", ""), ("file", "etc/gone", "g"),
         ("file", "etc/back", "lower")],
        [("file", "opt/new-before", "n"), ("file", "opt/.wh..wh..opq", ""), ("file", "opt/new-after", "n"),
         ("file", "etc/back", "upper"), ("file", "etc/.wh.back", ""), ("file", "etc/.wh.gone", ""),
         ("file", "etc/.wh..wh.plnk", "")],
    ], [])
    root = tmp_path / "root"
    root.mkdir()
    ocirootfs.unpack(arch, root)
    assert files_under(root / "opt") == ["new-after", "new-before"]
    assert files_under(root / "etc") == ["back"] and (root / "etc/back").read_text() == "upper"
