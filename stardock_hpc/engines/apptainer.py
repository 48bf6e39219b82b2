"""Apptainer: `apptainer build --fakeroot` straight to a SIF, the portable artifact itself.

Written against Apptainer's documented CLI; the testbed runs 1.4.5.
"""
from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

from stardock_hpc import proc, proctree, safefs
from stardock_hpc.engines.base import Engine, ImageRef, Mount, OnLine, RunOptions
from stardock_hpc.engines.podman import BuildFailed, private_tmpdir
from stardock_hpc.site import BaseImage

RUNSCRIPT = "/.singularity.d/runscript"  # the image's default command


# The SIF's squashfs: gzip as every Apptainer and kernel reads it, at level 1 (measured on a
# Debian base, 2026-12-07: 1.6 s of CPU and 52 MB against level 9's 14 s and 48 MB)
SIF_SQUASHFS = "-comp gzip -Xcompression-level 1"

class ApptainerEngine(Engine):
    name = "apptainer"
    binary = "apptainer"
    artifact_name = "image.sif"

    def prepare_base(self, base: BaseImage, on_line: OnLine = None, *, timeout: Optional[float] = None) -> None:
        """Nothing to do: the definition bootstraps from the archive path or the reference."""

    def build(self, context: Path, tag: str, out_dir: Path, on_line: OnLine = None, *,
              timeout: Optional[float] = None, secrets: Optional[Mapping[str, Path]] = None) -> Path:
        """apptainer build; its temporary files (the unpacked root file system) go to a private
        directory removed afterwards, whatever happens. Secrets: their one directory bound
        read-only at /run/secrets during %post (the definition's %setup makes the mount point)."""
        dirs = {path.parent for path in (secrets or {}).values()}
        if len(dirs) > 1 or any(path.name != sid for sid, path in (secrets or {}).items()):
            raise ValueError("apptainer binds one directory of secrets, each file named by its id")
        binds = [f"--bind={dirs.pop()}:/run/secrets:ro"] if dirs else []
        artifact = out_dir / self.artifact_name
        parent = os.environ.get("APPTAINER_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
        with private_tmpdir("stardock-apptainer-", parent, _remove_quietly) as tmpdir:
            env = dict(os.environ, APPTAINER_TMPDIR=str(tmpdir), TMPDIR=str(tmpdir))
            try:
                result = proc.run(["apptainer", "build", "--fakeroot", "--force", *binds,
                                   f"--mksquashfs-args={SIF_SQUASHFS}", artifact, context / "apptainer.def"],
                                  cwd=context, check=False, env=env, timeout=timeout,
                                  on_line=on_line or (lambda _line: None))
                if not result.ok:
                    raise BuildFailed("apptainer build", result.returncode, result.stdout)
                return artifact
            except BaseException:
                if proctree.in_stoppable():
                    proctree.stop_descendants()
                raise

    def image_for(self, artifact: Path, tag: str) -> ImageRef:
        return ImageRef(self.name, str(artifact))

    def run_argv(self, image: ImageRef, command: Sequence[str], mounts: Sequence[Mount],
                 workdir: Optional[str], options: RunOptions) -> list:
        # --pid: the job sees only its own processes (a step's tasks share the node's instead).
        # Apptainer always sets no_new_privs itself. Inherited descriptors (options.preserve_fds)
        # pass through as they are. --cleanenv: this process's environment (the job's, with
        # --export=ALL the login session's) stays out; the job's variables come by descriptor.
        argv = ["apptainer", "--silent", "exec", "--cleanenv", "--contain", "--no-home"]
        if not options.host_pid:
            argv.append("--pid")
        if not (options.network or options.host_network):  # otherwise the node's own network
            argv += ["--net", "--network=none"]
        for m in mounts:
            # --bind splits on ',' and ':' (refused in paths); --mount is CSV and chokes on quotes
            argv += ["--bind", f"{m.host}:{m.target}:{'ro' if m.readonly else 'rw'}"]
        if options.tmpdir:
            argv += ["--workdir", options.tmpdir]
        if workdir:
            argv += ["--pwd", workdir]
        return [*argv, image.ref, *(list(command) or [RUNSCRIPT])]

    def spawn_rlimits(self, options: RunOptions) -> Dict[int, Tuple[int, int]]:
        # Set on apptainer itself: the container's own user namespace then counts only its
        # processes (apptainer's starter counts the user's processes on the node before that).
        return {resource.RLIMIT_NPROC: (options.pids, options.pids)} if options.pids else {}


def _remove_quietly(path: Path) -> None:
    try:
        safefs.remove_tree(path)
    except OSError:
        pass  # files of subordinate ids a killed build left, in the user's own temporary directory
