"""What both renderers share: the shell lines of each install step, written once."""
from __future__ import annotations

import shlex
from typing import List, Optional, Tuple

from stardock_hpc import __version__
from stardock_hpc.lockfile import (
    CONTEXT_APT_PINS,
    CONTEXT_LOCK,
    CONTEXT_PIP_LOCK,
    IMAGE_APT_PINS,
    IMAGE_LOCK,
    IMAGE_PIP_LOCK,
    PIP_REPORTS,
    Lock,
)
from stardock_hpc.plan import VENV, BuildPlan, Layer, ShellRun
from stardock_hpc.render.shellsteps import build_script


def run_argv(run: ShellRun) -> List[str]:
    """How the image runs a shell run's script (kept in the image: provenance)."""
    return ["/bin/bash", "-e", run.image_path]


def header(plan: BuildPlan, fmt: str) -> List[str]:
    return [
        f"# stardock-hpc {__version__}: {fmt} of environment {plan.name!r}",
        f"# spec sha256 {plan.spec_digest}; rendered from the spec: edit the spec, not this file",
    ]


def run_script(run: ShellRun) -> str:
    """The script of a shell run: one eval per step, so each step's status decides."""
    return build_script(run.steps)


def layer_commands(layer: Layer, lock: Optional[Lock] = None) -> List[str]:
    """Shell commands (POSIX sh, run under set -e) that install one layer and leave no
    package caches behind. With a lock, every package at its locked version: the layer's own
    named with it (a version the mirror no longer has is named before anything is installed),
    their dependencies by the lock's apt pins, the Python packages from the lock's hashes."""
    cmds: List[str] = []
    if layer.apt:
        install = "apt-get install -y " if layer.recommends else "apt-get install -y --no-install-recommends "
        packages = [f"{p.split('=', 1)[0]}={lock.apt_version(p)}" for p in layer.apt] if lock else list(layer.apt)
        words = " ".join(shlex.quote(p) for p in packages)
        cmds += ["export DEBIAN_FRONTEND=noninteractive", "apt-get update"]
        if lock:
            cmds.append(f'missing=""; for p in {words}; do apt-cache madison "${{p%%=*}}" | awk -F"|" '
                        '-v v="${p#*=}" \'{gsub(/ /, "", $2)} $2 == v {found = 1} END {exit !found}\' || '
                        'missing="$missing $p"; done; if [ -n "$missing" ]; then echo "stardock: the locked '
                        'versions are not on the package mirror:$missing" >&2; exit 100; fi')
        cmds += [install + words, "apt-get clean", "rm -rf /var/lib/apt/lists/*"]
    if layer.pip:
        pip = f"{VENV}/bin/pip install --no-cache-dir --disable-pip-version-check "
        cmds.append(f"if [ ! -x {VENV}/bin/python ]; then python3 -m venv --system-site-packages {VENV}; fi")
        # what it installed, with the archives' hashes (pip 22.2 and later: older bases go without)
        cmds.append(f'report=""; if {VENV}/bin/pip install --help 2>/dev/null | grep -q -e --report; then '
                    f'mkdir -p {PIP_REPORTS}; report="--report {PIP_REPORTS}/{layer.pip_report or "pip"}.json"; fi')
        pip += "$report "
        if lock:
            cmds.append(pip + f"--no-deps --require-hashes -r {IMAGE_PIP_LOCK}")
        else:
            cmds.append(pip + " ".join(shlex.quote(p) for p in layer.pip))
    cmds += list(layer.steps)
    return cmds


def lock_files(plan: BuildPlan) -> List[Tuple[str, str]]:
    """(context path, image path) of the lock's files, placed before anything is installed."""
    if plan.lock is None:
        return []
    return [(CONTEXT_LOCK, IMAGE_LOCK), (CONTEXT_APT_PINS, IMAGE_APT_PINS), (CONTEXT_PIP_LOCK, IMAGE_PIP_LOCK)]


# With the site's CAs in place, refresh the bundle if the base already has the tool; a later
# install of the ca-certificates package picks them up by itself.
UPDATE_CA = ("if command -v update-ca-certificates >/dev/null 2>&1; "
             "then update-ca-certificates >/dev/null; fi")
