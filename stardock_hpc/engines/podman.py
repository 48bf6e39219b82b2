"""Rootless Podman: build with `podman build`, keep an OCI archive as the portable artifact."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional, Sequence

from stardock_hpc import proc
from stardock_hpc.engines.base import Engine, ImageRef, Mount, OnLine, RunOptions
from stardock_hpc.errors import ExternalError
from stardock_hpc.ociarchive import identity
from stardock_hpc.render.containerfile import base_reference
from stardock_hpc.site import BaseImage

LOADED_RE = re.compile(r"Loaded image(?:\(s\))?:\s*(\S+)")


class PodmanEngine(Engine):
    name = "podman"
    binary = "podman"
    artifact_name = "image.oci.tar"

    def _image_id(self, ref: str) -> Optional[str]:
        out = proc.run(["podman", "image", "inspect", "--format", "{{.Id}}", ref], check=False)
        return out.stdout.strip() if out.ok else None

    def _load(self, archive: Path, expected_id: str, tag: str) -> None:
        if self._image_id(tag) == expected_id:
            return
        if self._image_id(expected_id) is None:
            proc.run(["podman", "load", "-q", "-i", archive])
        proc.run(["podman", "tag", expected_id, tag])

    def prepare_base(self, base: BaseImage, on_line: OnLine = None) -> None:
        if base.archive is None:
            return  # a registry reference: podman build pulls it
        ident = identity(base.archive)
        self._load(base.archive, ident.config_digest.split(":", 1)[1], base_reference(base))

    def build(self, context: Path, tag: str, out_dir: Path, on_line: OnLine = None) -> Path:
        result = proc.run(["podman", "build", "--pull=never", "--layers", "--tag", tag,
                           "--file", context / "Containerfile", context],
                          check=False, on_line=on_line or (lambda _line: None))
        if not result.ok:
            raise BuildFailed("podman build", result.returncode, result.stdout)
        artifact = out_dir / self.artifact_name
        proc.run(["podman", "save", "--format", "oci-archive", "--output", artifact, tag])
        return artifact

    def image_for(self, artifact: Path, tag: str) -> ImageRef:
        ident = identity(artifact)
        self._load(artifact, ident.config_digest.split(":", 1)[1], tag)
        return ImageRef(self.name, tag)

    def run_argv(self, image: ImageRef, command: Sequence[str], mounts: Sequence[Mount],
                 env: Mapping[str, str], workdir: Optional[str], options: RunOptions) -> list:
        argv = ["podman", "run", "--rm", "--pull=never", "--init",
                f"--network={'slirp4netns' if options.network else 'none'}", "--userns=keep-id"]
        if options.uid is not None:
            argv.append(f"--user={options.uid}:{options.gid if options.gid is not None else options.uid}")
        if options.runtime:
            argv.append(f"--runtime={options.runtime}")
        if options.name:
            argv.append(f"--name={options.name}")
        if options.interactive:
            argv += ["--interactive", "--tty"]
        for m in mounts:
            # -v splits on ':' only; --mount is CSV and would choke on a quote in a path
            argv += ["--volume", f"{m.host}:{m.target}:{'ro' if m.readonly else 'rw'}"]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        if workdir:
            argv += ["--workdir", workdir]
        return argv + [image.ref, *command]

    def remove(self, image: ImageRef) -> None:
        proc.run(["podman", "rmi", "--force", image.ref], check=False)

    def remove_run(self, name: str) -> None:
        # `podman run --rm` removes the container itself unless it was interrupted
        proc.run(["podman", "rm", "--force", "--ignore", name], check=False)


class BuildFailed(ExternalError):
    def __init__(self, what: str, code: int, output: str) -> None:
        lines = [line for line in output.splitlines() if line.strip()]
        failed = [line for line in lines if line.startswith("stardock: build step failed")]
        detail = "\n".join(lines[-15:])
        message = f"{what} failed (exit {code})"
        if failed:
            message += f": {failed[-1][len('stardock: '):]}"
        super().__init__(f"{message}\nlast lines of the build:\n{detail}")
        self.output = output
