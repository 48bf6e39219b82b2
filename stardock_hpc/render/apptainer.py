"""BuildPlan -> Apptainer definition file.

Differences from the Containerfile that keep the same meaning:
- %environment is not visible at build time (hpccm learned this too), so %post exports the
  same variables before the install steps.
- %files runs before %post and copies with cp semantics; files are staged under
  /.stardock/files and placed in %post exactly where COPY would put them, after the packages.
- The runscript runs its arguments instead of the default command when given any, like
  Podman's CMD.
- Build secrets: `apptainer build --bind DIR:/run/secrets:ro` shows them to all of %post (a
  Containerfile mounts them for the spec's build steps only); a bind needs its mount point in the
  image, so %setup makes /run/secrets (left empty in the image, as Podman leaves it).
"""
from __future__ import annotations

import shlex
from typing import List

from stardock_hpc.plan import (
    CONTEXT_CA,
    CONTEXT_SPEC,
    IMAGE_CA,
    IMAGE_SPEC,
    SECRETS_DIR,
    BuildPlan,
    FilesPlaced,
    PlannedFile,
    ShellRun,
)
from stardock_hpc.render.common import UPDATE_CA, header, layer_commands, lock_files, run_argv

STAGE = "/.stardock/files"
INDENT = "    "
# A line of a definition file that starts with % opens a new section, even inside a quoted
# string; so no quoted value may carry a raw newline: it is spelled "$nl", defined first.
NL_DEF = "nl=$(printf '\\n_'); nl=${nl%_}"


def sh_word(value: str) -> str:
    """A POSIX sh word for value, on one line of the definition file."""
    if "\n" not in value:
        return shlex.quote(value)
    return '"$nl"'.join(shlex.quote(part) for part in value.split("\n"))


def _needs_nl(words) -> List[str]:
    return [NL_DEF] if any("\n" in w for w in words) else []


def _bootstrap(plan: BuildPlan) -> List[str]:
    base = plan.base
    if base.archive is not None:
        return ["Bootstrap: oci-archive", f"From: {base.archive}"]
    assert base.ref is not None
    return ["Bootstrap: docker", f"From: {base.ref}"]


def _place(f: PlannedFile) -> List[str]:
    staged = f"{STAGE}/{f.index}"
    target = sh_word(f.target)
    if f.kind == "dir":
        return [f"mkdir -p {target}", f"cp -a {staged}/. {target}/"]
    return [f"mkdir -p \"$(dirname {target})\"", f"cp -a {staged} {target}"]


def _section(name: str, lines: List[str]) -> List[str]:
    return ["", name] + [INDENT + line if line else "" for line in lines]


def render_apptainer(plan: BuildPlan) -> str:
    out: List[str] = header(plan, "Apptainer definition") + _bootstrap(plan)
    if plan.secrets:
        out += _section("%setup", [f"# the mount point of the build secrets ({', '.join(s.id for s in plan.secrets)})",
                                   f'mkdir -p "$APPTAINER_ROOTFS{SECRETS_DIR}"'])

    files = [f"{CONTEXT_CA}/{name} {IMAGE_CA}/{name}" for name in plan.ca_names()]
    files += [f"{src} {dest}" for src, dest in lock_files(plan)]
    files += [f"files/{f.index} {STAGE}/{f.index}" for f in plan.all_files]
    files += [f"{run.context_path} {run.image_path}" for run in plan.runs]
    files.append(f"{CONTEXT_SPEC} {IMAGE_SPEC}")
    out += _section("%files", files)

    exports = [f"export {k}={shlex.quote(v)}" for k, v in plan.env.items()]
    out += _section("%environment", exports)

    post: List[str] = ["set -e", *_needs_nl(f.target for f in plan.all_files),
                       "# %environment is not visible at build time: the same variables"]
    post += exports
    if plan.ca_certificates:
        post += ["# the site's CA certificates, trusted before anything is downloaded", UPDATE_CA]
    for layer in (plan.catalog_layer, plan.user_layer):
        if layer:
            post += [f"# {layer.comment}"] + layer_commands(layer, plan.lock)
    if plan.files:
        post.append("# the spec's files, placed where a Containerfile's COPY puts them")
        for f in plan.files:
            post += _place(f)
    for item in plan.build:
        if isinstance(item, ShellRun):
            post.append("# the spec's build steps: one bash shell; each step's exit status decides")
            if plan.secrets:
                post.append(f"# build secrets at {SECRETS_DIR}/<id>, bound by the build, never in the image")
            post.append(" ".join(run_argv(item)))
        elif isinstance(item, FilesPlaced):
            post.append("# the spec's files, at this point of the build")
            for f in item.files:
                post += _place(f)
        else:
            post += [f"# {item.comment}"] + layer_commands(item, plan.lock)
    if plan.all_files:
        post.append(f"rm -rf {STAGE}")
    out += _section("%post -c /bin/bash", post)

    if plan.command is not None:
        out += _section("%runscript", [
            'if [ "$#" -gt 0 ]; then exec "$@"; fi',
            *_needs_nl(plan.command),
            "exec " + " ".join(sh_word(a) for a in plan.command),
        ])
    out += _section("%labels", [f"{k} {v}" for k, v in plan.labels.items()])
    return "\n".join(out) + "\n"
