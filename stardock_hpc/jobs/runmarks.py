"""Containers that job wrappers on a node have started and not yet cleaned up.

A wrapper marks its container before starting it and removes the mark after its cleanup. A mark
whose wrapper is gone means the wrapper never got to clean up (the node crashed or restarted,
or the wrapper was SIGKILLed), and Podman still holds the container; the user's next job on the
node removes it. Finding them costs a directory listing; asking Podman instead (`podman ps
--filter label=...`) costs about 90 ms and takes Podman's locks at every job's start.

    <records>/.running/<node>/<container name>    holds "<wrapper pid> <engine>", then on a second
                                                  line the run's private temporary directory

The temporary directory (the job's script, the squashfs mount point, the engine's temporary
files) is removed with the container: a killed wrapper left it behind on the node.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from stardock_hpc.fsutil import write_atomic


@dataclass(frozen=True)
class Orphan:
    name: str                      # the container's name
    engine: str
    tmpdir: Optional[Path]         # the run's temporary directory, if the mark names one


class RunMarks:
    def __init__(self, records: Path, node: str) -> None:
        self.dir = records / ".running" / node

    def mark(self, name: str, pid: int, engine: str, tmpdir: Optional[Path] = None) -> None:
        write_atomic(self.dir / name, f"{pid} {engine}\n{tmpdir or ''}\n", mode=0o600)

    def unmark(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)

    def orphans(self, wrapper_alive: Callable[[int], bool]) -> List[Orphan]:
        """Each marked container whose wrapper no longer runs."""
        if not self.dir.is_dir():
            return []
        found = []
        for path in sorted(self.dir.iterdir()):
            if path.name.startswith("."):
                continue  # a mark being written
            try:
                lines = path.read_text().splitlines()
                pid, engine = lines[0].split()
                alive = wrapper_alive(int(pid))
            except (OSError, ValueError, IndexError):
                continue  # not a mark of ours
            if not alive:
                tmpdir = lines[1].strip() if len(lines) > 1 else ""
                found.append(Orphan(path.name, engine, Path(tmpdir) if tmpdir.startswith("/") else None))
        return found
