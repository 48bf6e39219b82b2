"""Content keys: what decides whether two builds would produce the same image.

The key hashes the canonical rendered definition for the engine plus the digest of everything
it pulls in: the base (an archive's manifest digest, or the registry reference), every file
the spec copies, the site's CA certificates, the canonical spec and build script, and the
catalog entries used. Anyone can compute it, so a shared cache keyed by it serves every user
with the same spec (and cache.py decides whose entries may be trusted).
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from stardock_hpc.errors import UsageError
from stardock_hpc.ociarchive import identity
from stardock_hpc.plan import BuildPlan
from stardock_hpc.render.common import run_script
from stardock_hpc.site import BaseImage

KEY_FORMAT = "stardock-cache-key/1"
CHUNK = 1 << 20


def _feed(h: hashlib._Hash, label: str, data: bytes) -> None:
    """Length-prefixed fields: no two different inputs can run together into one."""
    for part in (label.encode(), data):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(path: Path) -> str:
    """Digest of a file or directory tree: names, types, executable bits, contents, links."""
    h = hashlib.sha256()
    try:
        if not path.is_dir():
            _feed(h, "file" + ("+x" if os.access(path, os.X_OK) else ""), file_digest(path).encode())
            return h.hexdigest()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            rel_root = Path(root).relative_to(path)
            for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
                full = Path(root) / name
                rel = str(rel_root / name)
                st = full.lstat()
                if stat.S_ISLNK(st.st_mode):
                    _feed(h, "link " + rel, os.readlink(full).encode())
                elif stat.S_ISREG(st.st_mode):
                    _feed(h, ("exe " if st.st_mode & 0o111 else "file ") + rel, file_digest(full).encode())
            for name in dirs:
                _feed(h, "dir", str(rel_root / name).encode())
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return h.hexdigest()


def base_digest(base: BaseImage) -> str:
    if base.archive is not None:
        return identity(base.archive).manifest_digest
    return f"ref:{base.ref}"


def cache_key(plan: BuildPlan, engine: str, definition: str) -> str:
    h = hashlib.sha256()
    _feed(h, "format", KEY_FORMAT.encode())
    _feed(h, "engine", engine.encode())
    _feed(h, "definition", definition.encode())
    _feed(h, "base", base_digest(plan.base).encode())
    _feed(h, "spec", plan.spec_yaml.encode())
    for run in plan.runs:
        _feed(h, "build", run_script(run).encode())
    for f in plan.all_files:
        _feed(h, f"file {f.index} {f.kind}", tree_digest(f.source).encode())
    for name, cert in zip(plan.ca_names(), plan.ca_certificates):
        _feed(h, f"ca {name}", tree_digest(cert).encode())
    for app in plan.apps:
        _feed(h, f"app {app.name}", file_digest(app.path).encode() if app.path.is_file() else b"")
    if plan.lock is not None:  # every version it names (its digest is a label too)
        _feed(h, "lock", plan.lock.text().encode())
    return h.hexdigest()
