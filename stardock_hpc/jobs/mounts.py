"""`--mount NAME[/SUBPATH][:ro|:rw]`: site volumes by logical name, checked before submission.

NAME is a volume of the site config; SUBPATH must stay inside it (no `..`, no symbolic link
leading out); the mode may be narrowed (rw -> ro) but never widened; the site may limit who
uses a volume. The container sees it at <mount_root>/NAME/SUBPATH.

What is checked here is the resolved directory, and that is what the job binds: the launch
carries the volume's real root and the real sub-path, with no link left in it. On the node the
wrapper walks them again without following any link and holds the directory open, and the
container checks that what the engine bound is that very directory (jobs/binds.py): a sub-path
swapped for a link, or for another directory, after submission is refused, never followed.

A volume whose path is per user (`/scratch/{user}`) often sits in a directory everybody may write
(a sticky /scratch): another user can make `/scratch/alice` before alice does and read or plant
what her jobs write there. So each directory the user's part of the path names must belong to
the user, or to root (an admin made it); anyone else's is refused, naming the volume and the owner.
"""
from __future__ import annotations

import os
import posixpath
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

from stardock_hpc.engines.base import Mount
from stardock_hpc.errors import UsageError
from stardock_hpc.site import Site, Volume, expand_path

# Engines split bind specifications on these (podman --mount on ',', apptainer on ',' and ':').
UNSAFE = (",", ":")
PER_USER = ("{user}", "{uid}", "{home}")   # placeholders that make a volume path the user's own


@dataclass(frozen=True)
class VolumeMount:
    """A site volume in a job, in the one form it keeps from `--mount` to the node wrapper."""

    root: Path              # the volume's real directory
    sub: str                # the real sub-path below it ("" for the root): no links, no '..'
    target: str             # where the container sees it
    readonly: bool
    volume: str = ""        # the logical name and the --mount text (for the records; not sent to the node)
    request: str = ""

    @property
    def host(self) -> Path:
        return self.root.joinpath(*self.sub.split("/")) if self.sub else self.root

    def mount(self) -> Mount:
        return Mount(self.host, self.target, self.readonly)

    def to_json(self) -> Dict[str, Any]:
        """What the node wrapper binds (and checks again there)."""
        return {"host": str(self.host), "readonly": self.readonly, "root": str(self.root), "sub": self.sub,
                "target": self.target}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> VolumeMount:
        return cls(Path(data["root"]), data["sub"], data["target"], bool(data["readonly"]))

    def record(self) -> Dict[str, Any]:
        return {"request": self.request, "volume": self.volume, "host": str(self.host),
                "target": self.target, "mode": "ro" if self.readonly else "rw"}


def unsafe_in(path: str) -> str:
    """The first character an engine would split a bind specification on, or ''."""
    return next((c for c in UNSAFE if c in path), "")


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
    bad = unsafe_in(sub)
    if bad:
        raise UsageError(f"{where}: {bad!r} cannot appear in a mounted path (container engines "
                         "split bind specifications on it)")
    if any(c in sub for c in "\n\0"):
        raise UsageError(f"{where}: a mounted path cannot hold a newline or NUL")
    root = volume.host_path(user)
    check_owners(volume, user, where)
    try:
        real_root = root.resolve(strict=True)
    except (OSError, RuntimeError):
        raise UsageError(f"{where}: the volume's directory {root} does not exist") from None
    if _per_user(volume):
        _owned(real_root, volume, user, where)
    if unsafe_in(str(real_root)):
        raise UsageError(f"{where}: the site's path {real_root} holds ',' or ':', which engines cannot bind")
    host = root.joinpath(*parts)
    try:
        real = host.resolve(strict=True)
    except (OSError, RuntimeError):
        raise UsageError(f"{where}: {host} does not exist") from None
    if real != real_root and real_root not in real.parents:
        raise UsageError(f"{where}: {host} leads outside the volume {name!r} ({root}) through a "
                         "symbolic link")
    bad = unsafe_in(str(real))
    if bad:
        raise UsageError(f"{where}: {host} leads to {real}, which holds {bad!r}: container engines split "
                         "bind specifications on it, so it cannot be bound as it is")
    if not (real.is_dir() or real.is_file()):
        raise UsageError(f"{where}: {host} is neither a directory nor a regular file")
    if not os.access(real, os.R_OK | os.X_OK if real.is_dir() else os.R_OK):
        raise UsageError(f"{where}: {host} is not readable by {user}")
    target = posixpath.join(site.mount_root, name, *parts)
    real_sub = "/".join(real.relative_to(real_root).parts)
    return VolumeMount(real_root, real_sub, target, readonly, name, text)


def _per_user(volume: Volume) -> int:
    """How many components of the volume's path lead to its first per-user one (0: none is)."""
    parts = volume.path.split("/")
    return next((i for i, p in enumerate(parts) if any(f in p for f in PER_USER)), -1) + 1


def check_owners(volume: Volume, user: str, where: str) -> None:
    """Each directory of a per-user volume path, from its first per-user component on, belongs to
    the user or to root (links are judged as themselves: a link someone else made is refused too)."""
    first = _per_user(volume)
    if not first:
        return
    parts = volume.path.split("/")
    for i in range(first, len(parts) + 1):
        if not parts[i - 1]:
            continue
        path = expand_path("/".join(parts[:i]), user)
        try:
            os.lstat(path)
        except FileNotFoundError:
            return  # the caller says that it does not exist
        except OSError:
            continue
        _owned(path, volume, user, where)


def _owned(path: Path, volume: Volume, user: str, where: str) -> None:
    uid = pwd.getpwnam(user).pw_uid
    owner = os.lstat(path).st_uid
    if owner in (uid, 0):
        return
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = f"uid {owner}"
    raise UsageError(f"{where}: volume {volume.name!r} is each user's own ({volume.path}), but {path} belongs to "
                     f"{name}, not to {user}: somebody else made it first, so it is not used",
                     hint=f"ask the site's admins to remove {path} (or give it to {user})")


def parse_mounts(texts: Sequence[str], site: Site, user: str) -> List[VolumeMount]:
    mounts = [parse_mount(t, site, user) for t in texts]
    seen: Dict[str, str] = {}
    for m in mounts:
        if m.target in seen:
            raise UsageError(f"--mount {m.request!r} and --mount {seen[m.target]!r} both land on {m.target}")
        seen[m.target] = m.request
    return mounts
