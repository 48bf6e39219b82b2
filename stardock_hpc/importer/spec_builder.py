"""The spec `stardock import` builds up, instruction by instruction. Every value is checked
with the spec's own rules as it is added: what would make the spec invalid is listed as not
carried, with the reason, instead of being written."""
from __future__ import annotations

import os
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

from stardock_hpc.catalog import Catalog
from stardock_hpc.importer.rules import REASON_SECRET, REASON_SSHD, SECRET_NAME, SECRET_TEXT, Lifted, redact
from stardock_hpc.plan import BASE_PATH, VENV
from stardock_hpc.schema import Invalid
from stardock_hpc.site import BaseImage
from stardock_hpc.spec import (
    BASE_RE,
    ENV_KEY_RE,
    LABEL_KEY_RE,
    RESERVED_ENV,
    RESERVED_LABEL_PREFIX,
    check_file_dest,
    check_file_source,
)

# $PATH in a recipe means the PATH of the base image; stardock sets its own, known only when
# the packages are (its Python environment comes first when there are pip packages).
PATH_MARK = "\x00PATH\x00"
_SECRET_FILE = re.compile(r"(?:^|/)(?:id_(?:rsa|dsa|ecdsa|ed25519)|\.netrc|\.pgpass|\.env|[^/]*\.(?:pem|key|p12|pfx))$")
_DOCKER_HUB = re.compile(r"(?:(?:index\.|registry-1\.)?docker\.io/)?(?:library/)?")


@dataclass(frozen=True)
class NotCarried:
    """One instruction (or part of one) of the recipe that is not in the spec, and why."""

    instruction: str
    reason: str
    line: Optional[int] = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.instruction} ({self.reason})"


@dataclass
class SpecBuilder:
    spec_dir: Path                      # where the spec will live: file sources are relative to it
    base: Optional[str] = None
    apt: List[str] = field(default_factory=list)
    pip: List[str] = field(default_factory=list)
    files: List[Dict[str, str]] = field(default_factory=list)
    build: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    command: Any = None
    labels: Dict[str, str] = field(default_factory=dict)
    not_carried: List[NotCarried] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    targets: List[str] = field(default_factory=list)   # where copied files land in the image
    pending_cd: Optional[str] = None    # a directory the next build step must start in
    made_dirs: Set[str] = field(default_factory=set)
    line: Optional[int] = None          # the recipe line being read, for messages

    def __post_init__(self) -> None:
        self.spec_dir = self.spec_dir.resolve()

    def drop(self, what: str, reason: str, line: Optional[int] = None) -> None:
        what = redact(what.replace(PATH_MARK, "$PATH"))
        self.not_carried.append(NotCarried(what, reason, line if line is not None else self.line))

    def note(self, text: str) -> None:
        text = redact(text.replace(PATH_MARK, "$PATH"))
        self.notes.append(f"line {self.line}: {text}" if self.line else text)

    def set_base(self, ref: str, what: str, bases: Mapping[str, BaseImage]) -> None:
        """FROM / From: as one of the site's bases when it is one, else normalised."""
        name = ref[len("docker://"):] if ref.startswith("docker://") else ref
        for base in bases.values():
            if name in (base.name, base.ref):
                self.base = base.name
                return
        if "@" in name:
            self.drop(what, "an image pinned by digest cannot be a stardock base (bases are the "
                      "site's; see `stardock site show`)")
            return
        name = _DOCKER_HUB.sub("", name, count=1)
        if ":" not in name.rsplit("/", 1)[-1]:
            name += ":latest"
        if name == "scratch:latest" or not re.fullmatch(BASE_RE, name):
            self.drop(what, "not an image name a stardock base can have; the site's default base is used")
            return
        self.base = name
        for base in bases.values():
            if name == base.name or (base.ref and name == _DOCKER_HUB.sub("", base.ref, count=1)):
                self.base = base.name
                return
        offered = ", ".join(bases) or "(none)"
        self.note(f"base {name}: the site must offer this base (this site offers: {offered}); "
                  "otherwise pick one of those")

    def add_env(self, key: str, value: str, what: str) -> None:
        if _secret(key, value):
            self.drop(what, REASON_SECRET)
        elif not re.fullmatch(ENV_KEY_RE, key):
            self.drop(what, "not a valid environment variable name")
        elif RESERVED_ENV.fullmatch(key):
            self.drop(what, "set by stardock-hpc or Slurm at run time (HOME, USER, LOGNAME, SLURM_*, "
                      "STARDOCK_* are reserved)")
        elif key == "DEBIAN_FRONTEND":
            self.drop(what, "only matters to apt, and stardock sets it for its own apt step")
        elif "\n" in value or "\r" in value:
            self.drop(what, "the value has a newline; env values are one line (put the text in a "
                      "file under files:)")
        else:
            self.env[key] = value

    def add_label(self, key: str, value: str, what: str) -> None:
        if key.startswith(RESERVED_LABEL_PREFIX):
            self.drop(what, f"labels under {RESERVED_LABEL_PREFIX} are written by stardock-hpc")
        elif _secret(key, value):
            self.drop(what, REASON_SECRET)
        elif not re.fullmatch(LABEL_KEY_RE, key):
            self.drop(what, "not a valid label name (letters, digits, '.', '_', '/', '-')")
        elif "\n" in value or "\r" in value:
            self.drop(what, "the value has a newline; label values are one line")
        else:
            self.labels[key] = value

    def add_file(self, source: Path, dest: str, what: str) -> bool:
        """Copy `source` (on disk) to `dest` in the image; False (and listed) if it cannot be."""
        if source.is_file() and dest.endswith("/"):
            dest += source.name  # said explicitly: valid even when the directory is /
        rel = os.path.relpath(source, self.spec_dir).replace(os.sep, "/")
        resolved = source.resolve()
        if _SECRET_FILE.search(source.name) or re.search(r"(?:^|/)\.ssh(?:/|$)|^/etc/ssh(?:/|$)", dest):
            self.drop(what, REASON_SSHD if "ssh" in dest else REASON_SECRET)
            return False
        if rel == ".." or rel.startswith("../") or (
                resolved != self.spec_dir and self.spec_dir not in resolved.parents):
            self.drop(what, f"{source} is outside the spec's directory {self.spec_dir} (write the spec "
                      "next to the recipe to carry it)")
            return False
        try:
            check_file_source(rel)
            check_file_dest(dest)
        except Invalid as exc:
            self.drop(what, str(exc))
            return False
        self.files.append({"src": rel, "dest": dest})
        self.targets.append(posixpath.normpath(dest))
        return True

    def in_image(self, path: str, cwd: str) -> bool:
        """Is `path` (as a recipe's command names it, from directory cwd) a copied file?"""
        wanted = posixpath.normpath(posixpath.join(cwd, path))
        return any(wanted == t or wanted.startswith(t.rstrip("/") + "/") for t in self.targets)

    def add_build(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        if self.pending_cd:
            quoted = shlex.quote(self.pending_cd)
            if self.pending_cd not in self.made_dirs and self.pending_cd != "/":
                self.build.append(f"mkdir -p {quoted}")
                self.made_dirs.add(self.pending_cd)
            if self.build[-1:] != [f"cd {quoted}"]:
                self.build.append(f"cd {quoted}")
            self.pending_cd = None
        self.build += list(lines)

    def add_lifted(self, lifted: Lifted, what: str, cwd: Optional[str]) -> None:
        """Add what a command became; `cwd`: where the next command starts (None: where this one
        left off)."""
        self.apt += lifted.apt
        self.pip += lifted.pip
        for shown, reason in lifted.dropped:
            self.drop(f"{what} {shown}".strip(), reason)
        for text in lifted.notes:
            self.note(text)
        self.add_build(lifted.build)
        if lifted.changes_dir and lifted.build and cwd is not None:
            # each Dockerfile RUN / Apptainer line starts where it started; stardock's build is
            # one shell, so a `cd` would leak into the steps after it
            self.pending_cd = cwd

    def spec(self, name: str, catalog: Optional[Catalog]) -> Dict[str, Any]:
        """The spec as plain data, in stardock.yaml's key order; empty keys left out."""
        apt = list(dict.fromkeys(self.apt))
        apps = _matching_apps(apt, catalog)
        known = catalog.apps if catalog else {}
        covered = {p for app in apps for p in known[app].install["debian"].apt}
        for app in apps:
            self.notes.append(f"apt packages {', '.join(known[app].install['debian'].apt)} "
                              f"-> catalog app {app}")
        apt = [p for p in apt if p not in covered]
        for app, missing in _partial_apps(apt, catalog, apps):
            self.notes.append(f"apt package {known[app].install['debian'].apt[0]} is in catalog app "
                              f"{app}, which also installs {', '.join(missing)}: consider apps: [{app}]")
        pip = list(dict.fromkeys(self.pip))
        with_venv = bool(pip) or any(known[a].install["debian"].pip for a in apps)
        path = (f"{VENV}/bin:" if with_venv else "") + BASE_PATH
        env = {k: v.replace(PATH_MARK, path) for k, v in self.env.items()}
        packages = {k: v for k, v in (("apt", apt), ("pip", pip)) if v}
        out: Dict[str, Any] = {"name": name, "base": self.base, "apps": apps, "packages": packages,
                               "files": self.files, "build": self.build, "env": env,
                               "command": self.command, "labels": self.labels}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}


def _secret(key: str, value: str) -> bool:
    return bool(SECRET_NAME.search(key) or SECRET_TEXT.search(f"{key}={value}"))


def _matching_apps(apt: List[str], catalog: Optional[Catalog]) -> List[str]:
    """Catalog apps all of whose Debian packages the recipe installs, in the recipe's order."""
    if catalog is None:
        return []
    wanted = set(apt)
    found = []
    for app in catalog.apps.values():
        recipe = app.install.get("debian")
        if recipe and recipe.apt and set(recipe.apt) <= wanted:
            found.append((min(apt.index(p) for p in recipe.apt), app.name))
    return [name for _index, name in sorted(found)]


def _partial_apps(apt: List[str], catalog: Optional[Catalog], matched: List[str]):
    """Apps whose first (main) package the recipe installs, but not all their packages."""
    if catalog is None:
        return []
    out = []
    for app in catalog.apps.values():
        recipe = app.install.get("debian")
        if app.name not in matched and recipe and recipe.apt and recipe.apt[0] in apt:
            out.append((app.name, [p for p in recipe.apt if p not in apt]))
    return out
