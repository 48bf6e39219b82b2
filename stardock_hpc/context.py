"""Write a build context: the rendered definitions plus the files they refer to.

Layout (the renderers refer to these paths):
    Containerfile, apptainer.def
    files/<i>               the spec's files: entries, copied (symbolic links kept as links)
    .stardock/spec.yaml     the canonical spec (provenance)
    .stardock/build.sh      the spec's build steps, when it has any (build-2.sh... for the shell
                            runs after a packages or files item of build:)
    .stardock/ca/<i>-<name>.crt   the site's CA certificates, when it lists any
    .stardock/stardock.lock, apt-pins, pip-lock.txt   build --locked: the lock, apt's pins for
                            it and pip's hashed requirements (lockfile.py)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from stardock_hpc.errors import UsageError
from stardock_hpc.lockfile import CONTEXT_APT_PINS, CONTEXT_LOCK, CONTEXT_PIP_LOCK
from stardock_hpc.plan import CONTEXT_CA, CONTEXT_SPEC, BuildPlan
from stardock_hpc.render import render_apptainer, render_containerfile
from stardock_hpc.render.common import run_script

CONTAINERFILE = "Containerfile"
APPTAINER_DEF = "apptainer.def"


def write_context(plan: BuildPlan, directory: Path) -> Path:
    """Fill `directory` (which must be empty or absent) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in plan.all_files:
        target = directory / f.context_path
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.kind == "dir":
            shutil.copytree(f.source, target, symlinks=True)
        else:
            shutil.copy2(f.source, target)
    meta = directory / ".stardock"
    meta.mkdir(exist_ok=True)
    (directory / CONTEXT_SPEC).write_text(plan.spec_yaml)
    if plan.ca_certificates:
        (directory / CONTEXT_CA).mkdir()
        for source, name in zip(plan.ca_certificates, plan.ca_names()):
            try:
                shutil.copyfile(source, directory / CONTEXT_CA / name)
            except OSError as exc:
                raise UsageError(f"site config: ca_certificates: cannot read {source}: "
                                 f"{exc.strerror}") from None
    for run in plan.runs:
        (directory / run.context_path).write_text(run_script(run))
    if plan.lock is not None:
        (directory / CONTEXT_LOCK).write_text(plan.lock.text())
        (directory / CONTEXT_APT_PINS).write_text(plan.lock.apt_pins())
        (directory / CONTEXT_PIP_LOCK).write_text(plan.lock.pip_requirements())
    (directory / CONTAINERFILE).write_text(render_containerfile(plan))
    (directory / APPTAINER_DEF).write_text(render_apptainer(plan))
    # engines read the context as the building user; keep it readable whatever the umask
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if name in dirs else 0))
    return directory
