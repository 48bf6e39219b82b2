"""Resolve a spec against the site and the catalog into a BuildPlan: everything a renderer
needs, decided once, so that the Apptainer and Containerfile renderers cannot disagree.

Layer order (stable, so a change late in the spec reuses the layers before it):
base -> catalog apps' packages -> the user's packages -> files -> the user's build items, in
their order (shell runs, packages and files at their point) -> provenance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import yaml

from stardock_hpc import __version__
from stardock_hpc.catalog import App, Catalog
from stardock_hpc.errors import UsageError
from stardock_hpc.lockfile import LOCK_LABEL, Lock
from stardock_hpc.site import BaseImage, Site
from stardock_hpc.spec import AptStep, Environment, PipStep, Secret

VENV = "/opt/stardock/venv"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIP_NEEDS = ("python3", "python3-venv", "ca-certificates")
CONTEXT_SPEC = ".stardock/spec.yaml"
IMAGE_SPEC = "/.stardock/spec.yaml"
CONTEXT_CA = ".stardock/ca"
IMAGE_CA = "/usr/local/share/ca-certificates/stardock-site"
SECRETS_DIR = "/run/secrets"  # where build steps read the spec's secrets (as BuildKit and Buildah put them)
LABEL_PREFIX = "org.stardock."


@dataclass(frozen=True)
class PlannedFile:
    """One `files:` entry. The build context holds it as files/<index> (a name no engine
    misreads); `target` is where it lands: a file copied to a `dest/` keeps its own name, a
    directory's contents go into dest, as with COPY."""

    index: int
    kind: str          # "file" or "dir"
    target: str
    source: Path

    @property
    def context_path(self) -> str:
        return f"files/{self.index}"


@dataclass(frozen=True)
class Layer:
    """Packages and shell lines installed together (one RUN; one block of %post)."""

    comment: str
    apt: Tuple[str, ...] = ()
    pip: Tuple[str, ...] = ()
    steps: Tuple[str, ...] = ()
    recommends: bool = False      # apt installs recommended packages too
    pip_report: str = ""          # pip's installation report: <PIP_REPORTS>/<this>.json (the lock's hashes)

    def __bool__(self) -> bool:
        return bool(self.apt or self.pip or self.steps)


@dataclass(frozen=True)
class ShellRun:
    """Consecutive shell steps of build: (one script run in one bash shell)."""

    index: int                    # 0 for the first run of the spec, 1 for the next...
    steps: Tuple[str, ...]

    @property
    def context_path(self) -> str:
        return ".stardock/build.sh" if self.index == 0 else f".stardock/build-{self.index + 1}.sh"

    @property
    def image_path(self) -> str:
        return "/" + self.context_path


@dataclass(frozen=True)
class FilesPlaced:
    """A files: item of build: (copied at that point)."""

    files: Tuple[PlannedFile, ...]


PlanItem = Union[ShellRun, Layer, FilesPlaced]


@dataclass(frozen=True)
class BuildPlan:
    name: str
    base: BaseImage
    apps: Tuple[App, ...]
    catalog_layer: Layer
    user_layer: Layer
    files: Tuple[PlannedFile, ...]
    build: Tuple[PlanItem, ...]  # the spec's build items, in order
    env: Dict[str, str]          # everything exported at build and run time, in order
    command: Optional[Tuple[str, ...]]
    labels: Dict[str, str]
    spec_yaml: str               # the canonical spec, embedded as /.stardock/spec.yaml
    spec_digest: str
    ca_certificates: Tuple[Path, ...] = ()   # the site's extra CAs, trusted before any download
    lock: Optional[Lock] = None              # build --locked: every package's version fixed by it
    secrets: Tuple[Secret, ...] = ()         # what build steps read at SECRETS_DIR/<id>; never their values

    @property
    def runs(self) -> Tuple[ShellRun, ...]:
        return tuple(item for item in self.build if isinstance(item, ShellRun))

    @property
    def all_files(self) -> Tuple[PlannedFile, ...]:
        """files: and the files: items of build:, each under its own context path."""
        return self.files + tuple(f for item in self.build if isinstance(item, FilesPlaced) for f in item.files)

    def ca_names(self) -> Tuple[str, ...]:
        """File names of the site CAs in the context and the image (update-ca-certificates
        wants *.crt)."""
        return tuple(f"{i}-{p.stem}.crt" for i, p in enumerate(self.ca_certificates))


def canonical_yaml(env: Environment) -> str:
    data = {k: v for k, v in env.canonical().items() if v not in (None, [], {})}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


def _layer(comment: str, apt: List[str], pip: List[str], steps: List[str], already: Tuple[str, ...],
           recommends: bool = False, report: str = "") -> Layer:
    apt_all = list(dict.fromkeys(apt))
    if pip:
        apt_all += [p for p in PIP_NEEDS if p not in apt_all and p not in already]
    return Layer(comment, tuple(apt_all), tuple(dict.fromkeys(pip)), tuple(steps), recommends,
                 report if pip else "")


def _build_items(env: Environment, installed: Tuple[str, ...], first_file: int) -> Tuple[PlanItem, ...]:
    """The build: items in order: consecutive shell steps as one run, packages and files as
    their own layers."""
    items: List[PlanItem] = []
    shell: List[str] = []
    runs = 0
    index = first_file

    def flush() -> None:
        nonlocal shell, runs
        if shell:
            items.append(ShellRun(runs, tuple(shell)))
            runs += 1
            shell = []

    for n, item in enumerate(env.build):
        if isinstance(item, str):
            shell.append(item)
            continue
        flush()
        if isinstance(item, AptStep):
            items.append(_layer(f"build item {n + 1}: apt", list(item.packages), [], [], installed, item.recommends))
            installed += item.packages
        elif isinstance(item, PipStep):
            layer = _layer(f"build item {n + 1}: pip", [], list(item.requirements), [], installed,
                           report=f"build-{n + 1}")
            installed += layer.apt
            items.append(layer)
        else:
            placed = tuple(_planned_file(index + j, f.source, f.dest) for j, f in enumerate(item.files))
            index += len(placed)
            items.append(FilesPlaced(placed))
    flush()
    return tuple(items)


def _planned_file(index: int, source: Path, dest: str) -> PlannedFile:
    if source.is_dir():
        return PlannedFile(index, "dir", dest.rstrip("/") or "/", source)
    target = dest + source.name if dest.endswith("/") else dest
    return PlannedFile(index, "file", target, source)


def _check_policy(env: Environment, site: Site) -> None:
    if any(isinstance(item, str) for item in env.build) and not site.policy.custom_build:
        raise UsageError(f"{env.path}: build: this site does not allow custom build steps "
                         f"(policy.custom_build is false in {site.source})",
                         hint="use apps and packages, or ask the site's admins to add an app")
    if (env.packages.pip or any(isinstance(item, PipStep) for item in env.build)) and not site.policy.pip:
        raise UsageError(f"{env.path}: packages.pip: this site does not allow installing from PyPI "
                         f"(policy.pip is false in {site.source})")


def resolve(env: Environment, site: Site, catalog: Catalog, lock: Optional[Lock] = None) -> BuildPlan:
    """lock: build exactly what it names (it must be this spec's)."""
    _check_policy(env, site)
    if lock is not None and lock.spec_sha256 != env.digest():
        raise UsageError(f"{env.path}: the lock was made for another version of this spec (the lock's spec "
                         f"sha256 {lock.spec_sha256[:12]}, this spec's {env.digest()[:12]})",
                         hint="run `stardock lock SPEC` again, or build without --locked")
    base = site.base(env.base)
    apps = tuple(catalog.resolve(env.apps))
    recipes = [app.recipe(base.family) for app in apps]
    catalog_layer = _layer(
        "catalog apps: " + ", ".join(a.name for a in apps) if apps else "catalog apps",
        [p for r in recipes for p in r.apt], [p for r in recipes for p in r.pip],
        [s for r in recipes for s in r.steps], (), report="catalog")
    user_layer = _layer("the spec's packages", list(env.packages.apt), list(env.packages.pip), [],
                        catalog_layer.apt, report="packages")
    files = tuple(_planned_file(i, f.source, f.dest) for i, f in enumerate(env.files))
    build = _build_items(env, catalog_layer.apt + user_layer.apt, len(files))
    uses_pip = catalog_layer.pip or user_layer.pip or any(isinstance(i, Layer) and i.pip for i in build)
    path = (f"{VENV}/bin:" if uses_pip else "") + BASE_PATH
    merged: Dict[str, str] = {"PATH": path, "STARDOCK_ENVIRONMENT": env.name}
    for app in apps:
        merged.update(app.env)
    merged.update(env.env)
    labels = dict(env.labels)
    labels.update({
        f"{LABEL_PREFIX}name": env.name,
        f"{LABEL_PREFIX}spec-sha256": env.digest(),
        f"{LABEL_PREFIX}base": base.name,
        f"{LABEL_PREFIX}version": __version__,
    })
    if apps:
        labels[f"{LABEL_PREFIX}apps"] = ",".join(a.name for a in apps)
    if lock is not None:
        labels[LOCK_LABEL] = lock.digest()
    return BuildPlan(
        name=env.name, base=base, apps=apps, catalog_layer=catalog_layer, user_layer=user_layer,
        files=files, build=build, env=merged, command=env.command, labels=labels,
        spec_yaml=canonical_yaml(env), spec_digest=env.digest(), ca_certificates=site.ca_certificates, lock=lock,
        secrets=env.secrets)
