"""`--mount NAME[/SUBPATH][:ro|:rw]`: site volumes by logical name, checked before submission.

NAME is a volume of the site config; SUBPATH must stay inside it (no `..`, no symbolic link
leading out); the mode may be narrowed (rw -> ro) but never widened; the site may limit who
uses a volume. The container sees it at <mount_root>/NAME/SUBPATH.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from stardock_hpc.engines.base import Mount
from stardock_hpc.errors import UsageError
from stardock_hpc.site import Site

# Engines split bind specifications on these (podman --mount on ',', apptainer on ',' and ':').
UNSAFE = (",", ":")


@dataclass(frozen=True)
class VolumeMount:
    request: str
    volume: str
    subpath: str
    host: Path
    target: str
    readonly: bool

    def mount(self) -> Mount:
        return Mount(self.host, self.target, self.readonly)

    def record(self) -> dict:
        return {"request": self.request, "volume": self.volume, "host": str(self.host),
                "target": self.target, "mode": "ro" if self.readonly else "rw"}


def parse_mount(text: str, site: Site, user: str) -> VolumeMount:
    where = f"--mount {text!r}"
    spec, mode = text, None
    if text.endswith((":ro", ":rw")):
        spec, mode = text[:-3], text[-2:]
    name, _, sub = spec.partition("/")
    if name not in site.volumes:
        raise UsageError(f"{where}: unknown volume {name!r}; this site's volumes: "
                         f"{', '.join(site.volumes) or '(none)'} (stardock site show)")
    volume = site.volumes[name]
    if not volume.allows(user):
        raise UsageError(f"{where}: volume {name!r} is not open to {user} (site config: users "
                         f"{list(volume.users)}, groups {list(volume.groups)})")
    if mode == "rw" and volume.mode == "ro":
        raise UsageError(f"{where}: volume {name!r} is read-only at this site; mount it as :ro")
    readonly = (mode or volume.mode) == "ro"
    sub = sub.strip("/")
    parts = [p for p in sub.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{where}: '..' is not allowed in a volume sub-path")
    for bad in UNSAFE:
        if bad in sub:
            raise UsageError(f"{where}: {bad!r} cannot appear in a mounted path (container engines "
                             "split bind specifications on it)")
    root = volume.host_path(user)
    if any(bad in str(root) for bad in UNSAFE):
        raise UsageError(f"{where}: the site's path {root} holds ',' or ':', which engines cannot bind")
    try:
        real_root = root.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise UsageError(f"{where}: the volume's directory {root} does not exist") from None
    host = root.joinpath(*parts)
    try:
        real = host.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise UsageError(f"{where}: {host} does not exist") from None
    if real != real_root and real_root not in real.parents:
        raise UsageError(f"{where}: {host} leads outside the volume {name!r} ({root}) through a "
                         "symbolic link")
    if not os.access(real, os.R_OK | os.X_OK if real.is_dir() else os.R_OK):
        raise UsageError(f"{where}: {host} is not readable by {user}")
    target = posixpath.join(site.mount_root, name, *parts)
    return VolumeMount(text, name, "/".join(parts), real, target, readonly)


def parse_mounts(texts: Sequence[str], site: Site, user: str) -> List[VolumeMount]:
    mounts = [parse_mount(t, site, user) for t in texts]
    seen = {}
    for m in mounts:
        if m.target in seen:
            raise UsageError(f"--mount {m.request!r} and --mount {seen[m.target]!r} both land on {m.target}")
        seen[m.target] = m.request
    return mounts
