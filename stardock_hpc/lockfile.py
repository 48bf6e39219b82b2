"""stardock.lock: what exactly an image holds, so that it can be said and built again.

A lock names the spec (its digest), the base (its digest), the catalog entries used (their
digests), every Debian package of the image with its exact version and every package of the
image's Python environment with its version and, where pip installed it from an index or a
file, the sha256 of the archive it installed (from pip's installation reports, kept in the
image under /.stardock/pip/). Nothing in it depends on who built the image, when or with which
engine: the same image contents give the same lock, byte for byte, and so the same digest.

`stardock build --locked` renders the same spec with every version fixed by the lock (apt pins
for every Debian package, `pip install --require-hashes --no-deps` of the locked set), carries
the lock in the image (/.stardock/stardock.lock, its digest as a label) and checks the result
against it before anything is cached.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from stardock_hpc.errors import UsageError

LOCK_FORMAT = "stardock-lock/1"
LOCK_NAME = "stardock.lock"   # beside the spec, and in each cache entry (cache/entries.py)
CONTEXT_LOCK = ".stardock/stardock.lock"
IMAGE_LOCK = "/.stardock/stardock.lock"
CONTEXT_APT_PINS = ".stardock/apt-pins"
IMAGE_APT_PINS = "/etc/apt/preferences.d/stardock-lock"
CONTEXT_PIP_LOCK = ".stardock/pip-lock.txt"
IMAGE_PIP_LOCK = "/.stardock/pip-lock.txt"
PIP_REPORTS = "/.stardock/pip"          # pip's installation reports (--report), one per pip layer
LOCK_LABEL = "org.stardock.lock-sha256"

DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*")
DEB_VERSION = re.compile(r"(?:[0-9]+:)?[A-Za-z0-9.+~-]+")
PIP_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
PIP_VERSION = re.compile(r"[A-Za-z0-9.+!_-]+")
SHA256 = re.compile(r"[0-9a-f]{64}")


def pip_key(name: str) -> str:
    """A Python project name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PipPin:
    name: str
    version: str
    sha256: Optional[str] = None   # the archive pip installed; None: not installed by pip's resolver

    def requirement(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


@dataclass(frozen=True)
class Packages:
    """An image's package set: Debian packages and its Python environment's packages."""

    apt: Tuple[Tuple[str, str], ...]       # (name, version), sorted
    pip: Tuple[PipPin, ...]                # sorted by pip_key

    @classmethod
    def of(cls, apt: Dict[str, str], pip: Iterable[PipPin]) -> Packages:
        return cls(tuple(sorted(apt.items())), tuple(sorted(pip, key=lambda p: pip_key(p.name))))

    def apt_versions(self) -> Dict[str, str]:
        return dict(self.apt)

    def pip_versions(self) -> Dict[str, Tuple[str, str]]:
        """pip_key -> (name, version)."""
        return {pip_key(p.name): (p.name, p.version) for p in self.pip}


@dataclass(frozen=True)
class Lock:
    spec_sha256: str
    base: str
    base_digest: str
    apps: Tuple[Tuple[str, str], ...]     # (catalog app, sha256 of its entry), sorted
    packages: Packages

    def text(self) -> str:
        """The lock file: canonical JSON (sorted keys, one package per line), so that equal
        locks are equal bytes."""
        data = {
            "format": LOCK_FORMAT,
            "spec_sha256": self.spec_sha256,
            "base": {"name": self.base, "digest": self.base_digest},
            "apps": {name: digest for name, digest in self.apps},
            "apt": {name: version for name, version in self.packages.apt},
            "pip": {p.name: ({"version": p.version, "sha256": p.sha256} if p.sha256 else {"version": p.version})
                    for p in self.packages.pip},
        }
        return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n"

    def digest(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()

    def apt_pins(self) -> str:
        """An apt preferences file that makes apt choose exactly the locked version of every
        package it installs (dependencies included)."""
        return "".join(f"Package: {name}\nPin: version {version}\nPin-Priority: 1001\n\n"
                       for name, version in self.packages.apt)

    def pip_requirements(self) -> str:
        """The locked Python packages pip installed, with their archives' hashes."""
        return "".join(p.requirement() + "\n" for p in self.packages.pip if p.sha256)

    def apt_version(self, package: str) -> str:
        name = package.split("=", 1)[0]
        versions = self.packages.apt_versions()
        if name not in versions:
            raise UsageError(f"the lock has no version of the Debian package {name!r}, which the spec installs",
                             hint="run `stardock lock SPEC` again")
        return versions[name]

    def differences(self, found: Packages) -> List[str]:
        """What the image holds that the lock does not say, one line per package."""
        return diff_packages(self.packages, found, "the lock", "the image")


def diff_packages(a: Packages, b: Packages, a_name: str = "a", b_name: str = "b") -> List[str]:
    """One line per package whose version differs, or that only one side has."""
    lines: List[str] = []
    apt_a, apt_b = a.apt_versions(), b.apt_versions()
    for name in sorted(set(apt_a) | set(apt_b)):
        if apt_a.get(name) != apt_b.get(name):
            lines.append(f"apt {name}: {apt_a.get(name, '-')} ({a_name}), {apt_b.get(name, '-')} ({b_name})")
    pip_a, pip_b = a.pip_versions(), b.pip_versions()
    for key in sorted(set(pip_a) | set(pip_b)):
        va, vb = pip_a.get(key, ("", "-"))[1], pip_b.get(key, ("", "-"))[1]
        if va != vb:
            name = (pip_a.get(key) or pip_b[key])[0]
            lines.append(f"pip {name}: {va} ({a_name}), {vb} ({b_name})")
    return lines


def parse_lock(text: str, source: str) -> Lock:
    """A lock file, checked key by key (one message naming the file and the key)."""
    def bad(key: str, what: str) -> UsageError:
        return UsageError(f"{source}: {key}: {what}", hint="make it again with `stardock lock SPEC`")

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source}: not a stardock lock file (JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
        raise bad("format", f"must be {LOCK_FORMAT!r}")
    known = {"format", "spec_sha256", "base", "apps", "apt", "pip"}
    for key in data:
        if key not in known:
            raise bad(key, f"unknown key; allowed: {', '.join(sorted(known))}")
    spec = data.get("spec_sha256")
    if not isinstance(spec, str) or not SHA256.fullmatch(spec):
        raise bad("spec_sha256", "must be a sha256 (64 lowercase hex digits)")
    base = data.get("base")
    if not isinstance(base, dict) or set(base) != {"name", "digest"} or \
            not all(isinstance(v, str) and v for v in base.values()):
        raise bad("base", "must be {name: ..., digest: ...}")
    apps = _mapping(data.get("apps", {}), "apps", bad)
    for name, digest in apps.items():
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise bad(f"apps.{name}", "must be a sha256")
    apt: Dict[str, str] = {}
    for name, version in _mapping(data.get("apt", {}), "apt", bad).items():
        if not DEB_NAME.fullmatch(name) or not isinstance(version, str) or not DEB_VERSION.fullmatch(version):
            raise bad(f"apt.{name}", "a Debian package name and its version (e.g. jq: 1.6-2.1)")
        apt[name] = version
    pins: List[PipPin] = []
    for name, item in _mapping(data.get("pip", {}), "pip", bad).items():
        if not PIP_NAME.fullmatch(name) or not isinstance(item, dict) or not set(item) <= {"version", "sha256"}:
            raise bad(f"pip.{name}", "a Python project name and {version: ..., sha256: ...}")
        version, sha = item.get("version"), item.get("sha256")
        if not isinstance(version, str) or not PIP_VERSION.fullmatch(version):
            raise bad(f"pip.{name}.version", "must be a version such as 1.26.4")
        if sha is not None and (not isinstance(sha, str) or not SHA256.fullmatch(sha)):
            raise bad(f"pip.{name}.sha256", "must be a sha256 (64 lowercase hex digits)")
        pins.append(PipPin(name, version, sha))
    return Lock(spec, base["name"], base["digest"], tuple(sorted((k, str(v)) for k, v in apps.items())),
                Packages.of(apt, pins))


def _mapping(value: object, key: str, bad) -> Dict[str, object]:
    if not isinstance(value, dict):
        raise bad(key, "must be a mapping")
    return value


# What the image holds, printed by a run of it (builder.image_packages): Debian's packages, the
# Python environment's own packages (not the system's, which are Debian's), and the archives
# pip's installation reports name.
PACKAGES_SCRIPT = (
    "dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\\n' 2>/dev/null | "
    "sed -n 's/^installed /apt /p'; "
    "if [ -x /opt/stardock/venv/bin/python ]; then /opt/stardock/venv/bin/python - <<'EOF'\n"
    "import glob, json, importlib.metadata as md, sys\n"
    "site = [p for p in sys.path if p.startswith(sys.prefix) and p.endswith('site-packages')]\n"
    "for d in md.distributions(path=site):\n"
    "    print('pip', d.metadata['Name'], d.version)\n"
    "for path in sorted(glob.glob('" + PIP_REPORTS + "/*.json')):\n"
    "    for item in json.load(open(path)).get('install', []):\n"
    "        info = (item.get('download_info') or {}).get('archive_info') or {}\n"
    "        sha = (info.get('hashes') or {}).get('sha256')\n"
    "        if sha: print('hash', item['metadata']['name'], item['metadata']['version'], sha)\n"
    "EOF\n"
    "fi"
)


def parse_packages(output: str) -> Packages:
    """PACKAGES_SCRIPT's output."""
    apt: Dict[str, str] = {}
    pip: Dict[str, Tuple[str, str]] = {}
    hashes: Dict[Tuple[str, str], str] = {}
    for line in output.splitlines():
        kind, *fields = line.split()
        if kind == "apt" and len(fields) == 2:
            apt[fields[0]] = fields[1]
        elif kind == "pip" and len(fields) == 2:
            pip[pip_key(fields[0])] = (fields[0], fields[1])
        elif kind == "hash" and len(fields) == 3 and SHA256.fullmatch(fields[2]):
            hashes[(pip_key(fields[0]), fields[1])] = fields[2]
    pins = [PipPin(name, version, hashes.get((key, version))) for key, (name, version) in pip.items()]
    return Packages.of(apt, pins)
