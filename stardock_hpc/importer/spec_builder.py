"""The spec `stardock import` builds up, instruction by instruction, in the recipe's order. Every
value is checked with the spec's own rules as it is added: what would make the spec invalid is
listed as not carried, with the reason, instead of being written. Nothing is listed twice."""
from __future__ import annotations

import os
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from stardock_hpc.catalog import Catalog
from stardock_hpc.importer.bases import StandIn
from stardock_hpc.importer.rules import (
    REASON_SECRET,
    REASON_SSHD,
    SECRET_NAME,
    SECRET_TEXT,
    Lifted,
    Shell,
    redact,
)
from stardock_hpc.importer.state import ShellState
from stardock_hpc.plan import BASE_PATH, VENV
from stardock_hpc.schema import Invalid
from stardock_hpc.spec import (
    ENV_KEY_RE,
    LABEL_KEY_RE,
    RESERVED_ENV,
    RESERVED_LABEL_PREFIX,
    AptStep,
    check_file_dest,
    check_file_source,
)

# $PATH in a recipe means the PATH of the base image; stardock sets its own, known only when
# the packages are (its Python environment comes first when there are pip packages).
PATH_MARK = "\x00PATH\x00"
_SECRET_FILE = re.compile(r"(?:^|/)(?:id_(?:rsa|dsa|ecdsa|ed25519)|\.netrc|\.pgpass|\.env|[^/]*\.(?:pem|key|p12|pfx))$")
# Debian's older names of packages that catalog apps install under their new one
_ALIASES = {"sextractor": "source-extractor"}
# what build steps fetch from beyond Debian's mirror and PyPI (a site may not reach it)
_FETCH = ((re.compile(r"(?:https?|ftp)://([A-Za-z0-9.-]+)|git@([A-Za-z0-9.-]+):"), None),
          (re.compile(r"\b(?:conda|mamba|micromamba)\s+(?:env\s+)?(?:install|create|update)\b"), "conda's channels"),
          (re.compile(r"\bppa:"), "launchpad.net (a PPA)"))
_OWN_HOSTS = {"deb.debian.org", "security.debian.org", "pypi.org", "files.pythonhosted.org"}


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
class _Apt:
    """An apt item of build: while it is being filled."""

    packages: List[str]
    recommends: bool
    lines: Dict[str, Optional[int]] = field(default_factory=dict)   # package -> recipe line


@dataclass
class _Pip:
    requirements: List[str]


@dataclass
class _Files:
    files: List[Dict[str, str]]


_Item = Union[str, _Apt, _Pip, _Files]


@dataclass
class SpecBuilder:
    """The spec as the importer fills it. build: holds the recipe's steps in the recipe's order:
    shell lines, and apt, pip and files items where the recipe installs or copies (one rule for
    every recipe: the order a recipe was tested in is the only one known to work; see README)."""

    spec_dir: Path                      # where the spec will live: file sources are relative to it
    catalog: Optional[Catalog] = None
    base: Optional[str] = None
    build: List[_Item] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    command: Any = None
    labels: Dict[str, str] = field(default_factory=dict)
    not_carried: List[NotCarried] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    changes: List[str] = field(default_factory=list)   # said first: the base is not the recipe's
    targets: List[str] = field(default_factory=list)   # where copied files land in the image
    workdirs: Set[str] = field(default_factory=set)    # directories Docker's WORKDIR makes
    made_dirs: Set[str] = field(default_factory=set)
    shell: ShellState = field(default_factory=ShellState)   # stardock's build shell, at the end of build:
    first_pip_line: Optional[int] = None   # a kept shell step that runs pip (stardock's venv must exist)
    first_pip_step: Optional[int] = None   # its index in build
    fetches: Dict[str, List[int]] = field(default_factory=dict)   # host -> recipe lines
    line: Optional[int] = None          # the recipe line being read, for messages

    def __post_init__(self) -> None:
        self.spec_dir = self.spec_dir.resolve()

    def drop(self, what: str, reason: str, line: Optional[int] = None) -> None:
        what = redact(what.replace(PATH_MARK, "$PATH"))
        item = NotCarried(what, reason, line if line is not None else self.line)
        if item not in self.not_carried:
            self.not_carried.append(item)

    def note(self, text: str) -> None:
        text = redact(text.replace(PATH_MARK, "$PATH"))
        text = f"line {self.line}: {text}" if self.line else text
        if text not in self.notes:
            self.notes.append(text)

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
        """Copy `source` (on disk) to `dest` in the image, at this point of the build; False (and
        listed) if it cannot be."""
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
        last = self.build[-1] if self.build else None
        if isinstance(last, _Files):
            last.files.append({"src": rel, "dest": dest})
        else:
            self.build.append(_Files([{"src": rel, "dest": dest}]))
        self.shell = ShellState()
        self.targets.append(posixpath.normpath(dest))
        return True

    def in_image(self, path: str, cwd: str) -> bool:
        """Is `path` (as a recipe's command names it, from directory cwd) a copied file?"""
        wanted = posixpath.normpath(posixpath.join(cwd, path))
        return any(wanted == t or wanted.startswith(t.rstrip("/") + "/") for t in self.targets)

    def add_shell(self, lines: Sequence[str], need: Optional[ShellState] = None,
                  after: Optional[ShellState] = None, pip: bool = False) -> None:
        """Shell lines as build steps. `need`: the shell state they must start in (where the
        recipe's command ran, the variables it had): put back first when stardock's shell is
        elsewhere; `after`: the state they leave."""
        if not lines:
            return
        if need is not None:
            here = self.shell
            if need.cwd is not None and here.cwd != need.cwd:
                quoted = shlex.quote(need.cwd)
                if need.cwd in self.workdirs and need.cwd not in self.made_dirs:
                    self.build.append(f"mkdir -p {quoted}")   # as Docker's WORKDIR makes it
                    self.made_dirs.add(need.cwd)
                self.build.append(f"cd {quoted}")
            self.build += [line for line in need.replay if line not in here.replay]
        if pip and self.first_pip_line is None:
            self.first_pip_line, self.first_pip_step = self.line, len(self.build)
        self.build += list(lines)
        self.shell = after if after is not None else (need or self.shell)
        for text in lines:
            self.fetched(text)

    def fetched(self, text: str) -> None:
        """Note the hosts a build step downloads from, for the report."""
        for pattern, what in _FETCH:
            for match in pattern.finditer(text):
                host = what or next(g for g in match.groups() if g)
                if host not in _OWN_HOSTS:
                    lines = self.fetches.setdefault(host, [])
                    if self.line and self.line not in lines:
                        lines.append(self.line)

    def add_apt(self, packages: Sequence[str], recommends: bool) -> None:
        last = self.build[-1] if self.build else None
        if not isinstance(last, _Apt) or last.recommends != recommends:
            last = _Apt([], recommends)
            self.build.append(last)
        for package in packages:
            if package not in last.packages:
                last.packages.append(package)
                last.lines[package] = self.line
        self.shell = ShellState()

    def add_pip(self, requirements: Sequence[str]) -> None:
        last = self.build[-1] if self.build else None
        if not isinstance(last, _Pip):
            last = _Pip([])
            self.build.append(last)
        last.requirements += [r for r in requirements if r not in last.requirements]
        self.shell = ShellState()

    def add_lifted(self, lifted: Lifted, what: str) -> None:
        """Add what a command became, in its order."""
        for shown, reason in lifted.dropped:
            self.drop(f"{what} {shown}".strip(), reason)
        for text in lifted.notes:
            self.note(text)
        for item in lifted.items:
            if isinstance(item, Shell):
                self.add_shell(item.lines, item.need, item.after, item.pip)
            elif isinstance(item, AptStep):
                self.add_apt(item.packages, item.recommends)
            else:
                self.add_pip(item.requirements)

    def add_stand_in(self, stand_in: StandIn) -> Dict[str, str]:
        """What stands in for the recipe's image (bases.py), as the first build items; the env
        it sets (a recipe's $PATH then means its PATH)."""
        if stand_in.apt:
            self.add_apt(stand_in.apt, False)
        if stand_in.venv:
            self.add_pip(["pip"])
        self.add_shell(stand_in.steps, ShellState(), ShellState())
        env = {k: v.replace("$PATH", PATH_MARK) for k, v in stand_in.env}
        self.env.update(env)
        return env

    def spec(self, name: str) -> Dict[str, Any]:
        """The spec as plain data, in stardock.yaml's key order; empty keys left out."""
        build = list(self.build)
        if self.first_pip_step is not None and not any(isinstance(i, _Pip) for i in build[:self.first_pip_step]):
            first_shell = next(i for i, item in enumerate(build) if isinstance(item, str))
            build.insert(first_shell, _Pip(["pip"]))
            self.notes.append(f"line {self.first_pip_line}: pip runs in a build step: stardock's Python "
                              f"environment (a venv at {VENV} that sees Debian's Python packages, first on "
                              "PATH) is made before the build steps with {pip: [pip]}, and pip installs into it")
        apps = self._apps(build)
        if self.fetches:
            self.notes.append("the build steps download from beyond Debian's mirror and PyPI, which the site's "
                              "builds must reach: " + "; ".join(
                                  f"{host} (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))})"
                                  if lines else host for host, lines in self.fetches.items()))
        with_venv = any(isinstance(i, _Pip) for i in build) or any(
            self.catalog.apps[a].install["debian"].pip for a in apps if self.catalog)
        path = (f"{VENV}/bin:" if with_venv else "") + BASE_PATH
        env = {k: v.replace(PATH_MARK, path) for k, v in self.env.items()}
        out: Dict[str, Any] = {"name": name, "base": self.base, "apps": apps,
                               "build": [_data(item) for item in build if not isinstance(item, _Apt) or item.packages],
                               "env": env, "command": self.command, "labels": self.labels}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}

    def _apps(self, build: List[_Item]) -> List[str]:
        """The apt packages that are catalog apps become apps: an app's main (first) Debian
        package names it, and takes its other packages with it. Only packages from Debian's own
        archive are apt items (an install from a repository the recipe adds stays a shell step),
        so the app is the same software, installed the catalog's way."""
        if self.catalog is None:
            return []
        recipes = {a.name: a.install["debian"].apt for a in self.catalog.apps.values()
                   if a.install.get("debian") and a.install["debian"].apt}
        main = {apt[0]: name for name, apt in recipes.items()}
        items = [i for i in build if isinstance(i, _Apt)]
        installed = {_ALIASES.get(p, p) for i in items for p in i.packages}
        found: Dict[str, List[Tuple[str, Optional[int], bool]]] = {}
        for item in items:
            for package in list(item.packages):
                name = _ALIASES.get(package, package)
                app = main.get(name) or next((a for a, apt in recipes.items() if name in apt and apt[0] in installed),
                                             None)
                if app:
                    found.setdefault(app, []).append((package, item.lines.get(package), item.recommends))
                    item.packages.remove(package)
        recommended: List[str] = []
        for app, got in found.items():
            lines = sorted({str(line) for _p, line, _r in got if line})
            names = [_ALIASES.get(p, p) for p, _l, _r in got]
            extra = [p for p in recipes[app] if p not in names]
            where = f"line {', '.join(lines)}: " if lines else ""
            shown = ", ".join(p for p, _l, _r in got)
            text = f"{where}apt package{'s' if len(got) > 1 else ''} {shown} -> catalog app {app}"
            if extra:
                text += f", which also installs {', '.join(extra)}"
            renamed = [p for p, _l, _r in got if p in _ALIASES]
            if renamed:
                text += " (" + ", ".join(f"{p} is Debian's old name of {_ALIASES[p]}" for p in renamed) + ")"
            self.notes.append(text)
            recommended += [n for n, (_p, _l, r) in zip(names, got) if r]
        if recommended:
            self.notes.append("the recipe's apt-get installs recommended packages too, catalog apps do not: "
                              f"add {{apt: [{', '.join(recommended)}], recommends: true}} to build: to have them")
        return list(found)


def _data(item: _Item) -> Any:
    if isinstance(item, str):
        return item
    if isinstance(item, _Apt):
        return {"apt": list(item.packages), **({"recommends": True} if item.recommends else {})}
    if isinstance(item, _Pip):
        return {"pip": list(item.requirements)}
    return {"files": list(item.files)}


def _secret(key: str, value: str) -> bool:
    return bool(SECRET_NAME.search(key) or SECRET_TEXT.search(f"{key}={value}"))
