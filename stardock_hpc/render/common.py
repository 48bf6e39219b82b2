"""What both renderers share: the shell lines of each install step, written once."""
from __future__ import annotations

import shlex
from typing import List

from stardock_hpc import __version__
from stardock_hpc.plan import VENV, BuildPlan, Layer

BUILD_SCRIPT = ".stardock/build.sh"      # in the build context
IMAGE_BUILD_SCRIPT = "/.stardock/build.sh"  # in the image (kept: provenance)
# The user's steps run from a file in one bash shell: cd and variables carry between lines,
# the first failing command stops the build and is named in the log.
BUILD_SCRIPT_HEADER = (
    "# stardock-hpc: the spec's build steps, run with bash -e in one shell\n"
    "trap 'echo \"stardock: build step failed (exit $?): $BASH_COMMAND\" >&2' ERR\n"
)
RUN_BUILD = ["/bin/bash", "-e", IMAGE_BUILD_SCRIPT]


def header(plan: BuildPlan, fmt: str) -> List[str]:
    return [
        f"# stardock-hpc {__version__}: {fmt} of environment {plan.name!r}",
        f"# spec sha256 {plan.spec_digest}; rendered from the spec: edit the spec, not this file",
    ]


def build_script(plan: BuildPlan) -> str:
    assert plan.build_script is not None
    return BUILD_SCRIPT_HEADER + plan.build_script + "\n"


def layer_commands(layer: Layer) -> List[str]:
    """Shell commands (POSIX sh, run under set -e) that install one layer and leave no
    package caches behind."""
    cmds: List[str] = []
    if layer.apt:
        cmds += [
            "export DEBIAN_FRONTEND=noninteractive",
            "apt-get update",
            "apt-get install -y --no-install-recommends " + " ".join(shlex.quote(p) for p in layer.apt),
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
