"""BuildPlan -> Containerfile (Podman / Buildah, OCI format).

Differences from the Apptainer definition that keep the same meaning:
- ENV sets the environment for the build steps and for run time at once.
- COPY places files directly; Apptainer stages them and copies in %post.
- The image's default user is nobody (65534): non-root by default. Apptainer needs no such
  line: it always runs as the invoking user.
- CMD is replaced by arguments given at run time; the Apptainer runscript does the same.
- Build secrets are mounted (tmpfs, never committed) for the spec's own build steps only, one
  RUN --mount per secret; Apptainer binds them for the whole of %post.
"""
from __future__ import annotations

import json
import re
from typing import Dict, List, Optional, Sequence

from stardock_hpc.lockfile import Lock
from stardock_hpc.plan import (
    CONTEXT_CA,
    CONTEXT_SPEC,
    IMAGE_CA,
    IMAGE_SPEC,
    SECRETS_DIR,
    BuildPlan,
    FilesPlaced,
    Layer,
    PlannedFile,
    ShellRun,
)
from stardock_hpc.render.common import UPDATE_CA, header, layer_commands, lock_files, run_argv
from stardock_hpc.site import base_reference


def quote(value: str) -> str:
    """A double-quoted Containerfile word: ENV and LABEL expand $ and eat backslashes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def copy_word(value: str) -> str:
    """COPY's JSON form still expands $ and reads quotes and backslashes: escape them."""
    return re.sub(r'([\\$\'"])', r"\\\1", value)


def _pairs(instruction: str, items: Dict[str, str]) -> List[str]:
    if not items:
        return []
    lines = [f"{k}={quote(v)}" for k, v in items.items()]
    return [f"{instruction} " + " \\\n    ".join(lines)]


def _run(layer: Layer, lock: Optional[Lock]) -> List[str]:
    if not layer:
        return []
    return [f"# {layer.comment}", "RUN " + "; \\\n    ".join(["set -e", *layer_commands(layer, lock)])]


def _copies(files: Sequence[PlannedFile]) -> List[str]:
    return [f"COPY {json.dumps([f.context_path, copy_word(f.target)], ensure_ascii=False)}" for f in files]


def _secret_mounts(plan: BuildPlan) -> str:
    """RUN's mounts of the spec's secrets (podman build --secret id=ID,src=FILE gives each)."""
    return "".join(f"--mount=type=secret,id={s.id},target={SECRETS_DIR}/{s.id} \\\n    " for s in plan.secrets)


def render_containerfile(plan: BuildPlan) -> str:
    out: List[str] = header(plan, "Containerfile")
    out.append(f"FROM {base_reference(plan.base)}")
    out += _pairs("ENV", plan.env)
    if plan.ca_certificates:
        out.append("# the site's CA certificates, trusted before anything is downloaded")
        out.append(f"COPY {json.dumps([CONTEXT_CA + '/', IMAGE_CA + '/'])}")
        out.append(f"RUN {UPDATE_CA}")
    if plan.lock is not None:
        out.append("# the lock: every package at the version it names (stardock.lock)")
        out += [f"COPY {json.dumps([src, dest])}" for src, dest in lock_files(plan)]
    out += _run(plan.catalog_layer, plan.lock)
    out += _run(plan.user_layer, plan.lock)
    if plan.files:
        out.append("# the spec's files")
    out += _copies(plan.files)
    for item in plan.build:
        if isinstance(item, ShellRun):
            out.append("# the spec's build steps: one bash shell; each step's exit status decides")
            out.append(f"COPY {json.dumps([item.context_path, item.image_path])}")
            if plan.secrets:
                out.append(f"# build secrets at {SECRETS_DIR}/<id> for these steps only, never in the image")
            out.append(f"RUN {_secret_mounts(plan)}{json.dumps(run_argv(item))}")
        elif isinstance(item, FilesPlaced):
            out.append("# the spec's files, at this point of the build")
            out += _copies(item.files)
        else:
            out += _run(item, plan.lock)
    out.append("# provenance: the canonical spec and its hash")
    out.append(f"COPY {json.dumps([CONTEXT_SPEC, IMAGE_SPEC])}")
    out += _pairs("LABEL", plan.labels)
    out.append("USER 65534:65534")
    if plan.command is not None:
        out.append(f"CMD {json.dumps(list(plan.command), ensure_ascii=False)}")
    return "\n".join(out) + "\n"
