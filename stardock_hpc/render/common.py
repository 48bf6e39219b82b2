"""What both renderers share: the shell lines of each install step, written once."""
from __future__ import annotations

import shlex
from typing import List

from stardock_hpc import __version__
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


def layer_commands(layer: Layer) -> List[str]:
    """Shell commands (POSIX sh, run under set -e) that install one layer and leave no
    package caches behind."""
    cmds: List[str] = []
    if layer.apt:
        install = "apt-get install -y " if layer.recommends else "apt-get install -y --no-install-recommends "
        cmds += [
            "export DEBIAN_FRONTEND=noninteractive",
            "apt-get update",
            install + " ".join(shlex.quote(p) for p in layer.apt),
            "apt-get clean",
            "rm -rf /var/lib/apt/lists/*",
        ]
    if layer.pip:
        cmds += [
            f"if [ ! -x {VENV}/bin/python ]; then python3 -m venv --system-site-packages {VENV}; fi",
            f"{VENV}/bin/pip install --no-cache-dir --disable-pip-version-check "
            + " ".join(shlex.quote(p) for p in layer.pip),
        ]
    cmds += list(layer.steps)
    return cmds


# With the site's CAs in place, refresh the bundle if the base already has the tool; a later
# install of the ca-certificates package picks them up by itself.
UPDATE_CA = ("if command -v update-ca-certificates >/dev/null 2>&1; "
             "then update-ca-certificates >/dev/null; fi")
