"""The engine interface. Subclasses fill in a few steps; `run_argv` is pure, so the difference
between `apptainer exec --bind h:t:ro` and `podman run -v h:t:ro` lives in one place and is
tested without the binaries."""
from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

from stardock_hpc.site import BaseImage

if TYPE_CHECKING:
    from stardock_hpc.cache.entries import Entry

OnLine = Optional[Callable[[str], None]]


@dataclass(frozen=True)
class Mount:
    host: Path
    target: str
    readonly: bool = True


@dataclass(frozen=True)
class ImageRef:
    """What an engine runs: a local image name (Podman), a SIF path (Apptainer), or a root file
    system mounted on this node (rootfs: Podman runs it with --rootfs, with the image's env)."""

    engine: str
    ref: str
    squashfs: Optional[str] = None  # the cache's squashfs of the image, mounted for each run
    rootfs: Optional[str] = None    # where it is mounted
    env: Tuple[str, ...] = ()       # the image's own environment (NAME=VALUE), set with the job's (a --rootfs run)


@dataclass(frozen=True)
class RunOptions:
    network: bool = False
    host_network: bool = False      # the node's own network (MPI across nodes, PMIx's server)
    host_pid: bool = False          # the node's PID namespace (a step's tasks see each other's PIDs)
    uid: Optional[int] = None
    gid: Optional[int] = None
    runtime: Optional[str] = None   # Podman: the OCI runtime (our accounting shim around runc)
    name: Optional[str] = None      # Podman: the container's name, for cleanup
    tmpdir: Optional[str] = None    # Apptainer: node-local directory behind /tmp and /var/tmp
    interactive: bool = False       # keep stdin open and give the container a terminal
    preserve_fds: int = 0           # descriptors 3.. passed to the container's first process
    pids: Optional[int] = None      # most processes and threads (RLIMIT_NPROC) of the container
    storage: Optional[str] = None   # Podman: the user's node storage (else $STARDOCK_NODE_STORAGE, else its own)


class Engine(ABC):
    name: ClassVar[str]
    binary: ClassVar[str]
    artifact_name: ClassVar[str]   # the portable file a build leaves in the cache entry

    def available(self) -> Optional[str]:
        """None when usable, else the reason it is not."""
        if shutil.which(self.binary) is None:
            return f"{self.binary} is not installed (not found on PATH)"
        return None

    @abstractmethod
    def prepare_base(self, base: BaseImage, on_line: OnLine = None, *, timeout: Optional[float] = None) -> None:
        """Make the base image usable by a build (load an archive, for example)."""

    @abstractmethod
    def build(self, context: Path, tag: str, out_dir: Path, on_line: OnLine = None, *,
              timeout: Optional[float] = None, secrets: Optional[Mapping[str, Path]] = None) -> Path:
        """Build the context's definition and leave the portable artifact in out_dir; past
        timeout seconds the engine is stopped (proc.TimedOut) and what it made is removed.
        secrets: {id: file} the build steps read at /run/secrets/<id> (never in the image)."""

    def make_run_form(self, artifact: Path, out_dir: Path, timeout: Optional[float] = None) -> Optional[Dict]:
        """Leave in out_dir a form of the image any node runs in place from the shared cache, if
        the artifact is not one already; its name and what a run needs of the image's config."""
        return None

    @abstractmethod
    def image_for(self, artifact: Path, tag: str) -> ImageRef:
        """The image to run for a cache entry's artifact (loading it first if needed)."""

    def image_for_entry(self, entry: Entry, tag: str) -> ImageRef:
        """The image to run for a cache entry (its run form when it has one)."""
        return self.image_for(entry.artifact, tag)

    def mount(self, image: ImageRef, mountpoint: Path) -> ImageRef:
        """Mount image's run form at mountpoint for one run (engines that need it)."""
        return image

    def unmount(self, image: ImageRef) -> None:
        """Undo mount (image is what it returned)."""
        return None

    @abstractmethod
    def run_argv(self, image: ImageRef, command: Sequence[str], mounts: Sequence[Mount],
                 workdir: Optional[str], options: RunOptions) -> list:
        """The argument list that runs command in image. Pure: no I/O. It carries no variable of
        the container's: everybody on the node reads every process's command line (`ps`); the job's
        environment reaches the container by descriptor (jobs/binds.py)."""

    def spawn_rlimits(self, options: RunOptions) -> Dict[int, Tuple[int, int]]:
        """Resource limits to set on the engine's own process (engines that cannot set them for
        the container alone)."""
        return {}

    def remove_run(self, name: str) -> bool:
        """Remove what an interrupted run named name left behind (engines that keep state);
        whether nothing of it is left."""
        return True
