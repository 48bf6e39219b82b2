"""The unprivileged users' Python: a world-readable copy of the source and a venv with stardock.

The checkout may live where the test user cannot read (under /root, say), so the tree is
mirrored into $STATE/src and installed (editable) into $STATE/venv with Debian's python3.
"""
from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
from pathlib import Path

from tbcommon import REPO, STATE, run, say

SRC = STATE / "src"
VENV = STATE / "venv"
SKIP = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist", ".venv"}


def source_files(root: Path) -> set[Path]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP and not d.endswith(".egg-info")]
        for name in filenames:
            if name.endswith((".pyc", ".swp")):
                continue
            found.add(Path(dirpath, name).relative_to(root))
    return found


def sync_source() -> bool:
    """Mirror REPO into SRC, touching only what differs (so an unchanged tree changes nothing)."""
    if REPO.resolve() == SRC.resolve():
        return False  # running from the mirror itself
    SRC.mkdir(parents=True, exist_ok=True)
    os.chmod(SRC, 0o755)
    wanted = source_files(REPO)
    changed = False
    for rel in sorted(wanted):
        src, dest = REPO / rel, SRC / rel
        if dest.exists() and filecmp.cmp(src, dest, shallow=False) and \
                (src.stat().st_mode & 0o111) == (dest.stat().st_mode & 0o111):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        os.chmod(dest, 0o755 if os.access(src, os.X_OK) else 0o644)
        changed = True
    for rel in source_files(SRC) - wanted:
        (SRC / rel).unlink()
        changed = True
    for dirpath, _dirnames, _files in os.walk(SRC, topdown=False):
        d = Path(dirpath)
        if d != SRC and not any(d.iterdir()):
            d.rmdir()
        else:
            os.chmod(d, 0o755)
    return changed


def install_venv() -> bool:
    stamp = VENV / ".stardock-setup.sha256"
    digest = hashlib.sha256((SRC / "setup.py").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return False
    say(f"installing stardock-hpc and its test dependencies into {VENV}")
    if not (VENV / "bin" / "python").exists():
        run(["/usr/bin/python3", "-m", "venv", VENV])
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "install", "-e", f"{SRC}[test]"], capture=True)
    stamp.write_text(digest + "\n")
    run(["chmod", "-R", "a+rX", VENV])
    return True


def compile_bytecode() -> None:
    """Byte-compile the mirror as root, as an installed package would be: the test users cannot
    write __pycache__ there, and would otherwise compile every module at every start."""
    run([str(VENV / "bin" / "python"), "-m", "compileall", "-q", str(SRC / "stardock_hpc")], capture=True)


def up() -> bool:
    changed = sync_source()
    changed |= install_venv()
    if changed:
        compile_bytecode()
    return changed
