"""The unprivileged users' Python: a world-readable copy of the source and a venv with stardock.

The checkout may live where the test user cannot read (under /root, say), so the tree is
mirrored into $STATE/src and installed (editable) into $STATE/venv with Debian's python3.
"""
from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import sys
from pathlib import Path

from tbcommon import REPO, STATE, run, say

SRC = STATE / "src"
VENV = STATE / "venv"
# pyslurm for Slurm 22.05 is on no registry: the project keeps it beside the checkout (its README)
PYSLURM_VENDOR = Path(os.environ.get("STARDOCK_PYSLURM_VENDOR", REPO.parent / "shared" / "vendor" / "pyslurm"))
PYSLURM_VERSION = "22.5.3"
WHEELS = STATE / "wheels"
LIBSLURM_22_05 = Path("/usr/lib/x86_64-linux-gnu/libslurm.so.38")  # what the vendored wheel links
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


def _venv_has(package: str, version: str) -> bool:
    probe = run([str(VENV / "bin" / "python"), "-c",
                 f"import importlib.metadata as m; raise SystemExit(m.version({package!r}) != {version!r})"],
                check=False, capture=True)
    return probe.returncode == 0


def _pyslurm_wheel() -> Path:
    """The vendored wheel where it fits (CPython 3.11 on x86_64 with libslurm 22.05's libslurm.so.38),
    else one built from the vendored source once and kept in the testbed's state."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    vendored = PYSLURM_VENDOR / f"pyslurm-{PYSLURM_VERSION}-cp311-cp311-linux_x86_64.whl"
    fits = tag == "cp311" and os.uname().machine == "x86_64" and LIBSLURM_22_05.exists()
    if vendored.is_file() and fits:
        return vendored
    built = sorted(WHEELS.glob(f"pyslurm-{PYSLURM_VERSION}-{tag}-*.whl"))
    if built:
        return built[-1]
    say(f"building pyslurm {PYSLURM_VERSION} from {PYSLURM_VENDOR} (about 6.5 minutes on 2 cores)")
    work = STATE / "pyslurm-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run(["/usr/bin/python3", "-m", "venv", work / "venv"])
    pip = [str(work / "venv" / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "install", "Cython==0.29.37", "wheel"], capture=True)  # pyslurm 22.5 needs Cython < 3
    run(["tar", "-xzf", PYSLURM_VENDOR / f"pyslurm-{PYSLURM_VERSION}.tar.gz", "-C", work])
    env = dict(os.environ, SLURM_INCLUDE_DIR="/usr/include", SLURM_LIB_DIR="/usr/lib/x86_64-linux-gnu")
    WHEELS.mkdir(exist_ok=True)
    run([*pip, "wheel", "--no-build-isolation", "--no-deps", "-w", WHEELS, "."],
        cwd=work / f"pyslurm-{PYSLURM_VERSION}", env=env, capture=True)
    shutil.rmtree(work, ignore_errors=True)
    return sorted(WHEELS.glob(f"pyslurm-{PYSLURM_VERSION}-{tag}-*.whl"))[-1]


def install_pyslurm() -> bool:
    """pyslurm into the venv from the vendored folder; without that folder the pyslurm tests skip
    and say why."""
    if not PYSLURM_VENDOR.is_dir() or _venv_has("pyslurm", PYSLURM_VERSION):
        return False
    wheel = _pyslurm_wheel()
    say(f"installing {wheel.name} into {VENV}")
    run([str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
         str(wheel)], capture=True)
    run(["chmod", "-R", "a+rX", VENV])
    return True


def up() -> bool:
    changed = sync_source()
    changed |= install_venv()
    changed |= install_pyslurm()
    if changed:
        compile_bytecode()
    return changed
