"""The app catalog: one YAML file per app in definitions/ (and in the site's catalog
directories, which may add apps or replace shipped ones)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from stardock_hpc import yamlfile
from stardock_hpc.errors import UsageError
from stardock_hpc.resources import data_dir
from stardock_hpc.schema import Context, Key, ListOf, MapOf, Obj, Str, validate_document
from stardock_hpc.spec import APP_RE, APT_RE, ENV_KEY_RE, PIP_RE


@dataclass(frozen=True)
class Recipe:
    """How an app is installed on one base family."""

    apt: Tuple[str, ...] = ()
    pip: Tuple[str, ...] = ()
    steps: Tuple[str, ...] = ()


@dataclass(frozen=True)
class App:
    name: str
    summary: str
    homepage: str
    requires: Tuple[str, ...]
    install: Dict[str, Recipe]
    env: Dict[str, str]
    smoke: str
    path: Path = field(compare=False, default=Path("."))

    def recipe(self, family: str) -> Recipe:
        if family not in self.install:
            raise UsageError(f"app {self.name!r} has no recipe for {family!r} bases; it has: "
                             f"{', '.join(self.install)}")
        return self.install[family]


def app_type() -> Obj:
    recipe = Obj({
        "apt": Key(ListOf(Str(pattern=APT_RE, pattern_help="a Debian package name"), unique=True),
                   default=()),
        "pip": Key(ListOf(Str(pattern=PIP_RE, pattern_help="a PyPI requirement"), unique=True), default=()),
        "steps": Key(ListOf(Str("A shell line run as root after the packages.")), default=()),
    }, make=lambda apt, pip, steps: Recipe(tuple(apt), tuple(pip), tuple(steps)))
    return Obj({
        "name": Key(Str(pattern=APP_RE, pattern_help="lowercase letters, digits and '-'"), required=True),
        "summary": Key(Str(max_len=200), required=True),
        "homepage": Key(Str(pattern=r"https?://\S+", pattern_help="an http(s) URL"), default=""),
        "requires": Key(ListOf(Str(pattern=APP_RE, pattern_help="an app name"), unique=True), default=()),
        "install": Key(MapOf(recipe, key_pattern=r"[a-z]+", key_help="a base family such as debian"),
                       required=True),
        "env": Key(MapOf(Str(min_len=0), key_pattern=ENV_KEY_RE, key_help="an environment variable name"),
                   default={}),
        "smoke": Key(Str("A shell command whose success proves the app works."), required=True),
    }, "An app of the catalog.", make=lambda **kw: App(**{**kw, "requires": tuple(kw["requires"])}))


class Catalog:
    """The apps by name. Those given by file are read when first used (a spec with two apps reads
    two definitions, not the whole catalog); `apps` reads them all (listing, site check)."""

    def __init__(self, apps: Optional[Dict[str, App]] = None, paths: Optional[Dict[str, Path]] = None) -> None:
        self._loaded: Dict[str, App] = dict(apps or {})
        self._paths: Dict[str, Path] = {n: p for n, p in (paths or {}).items() if n not in self._loaded}

    @property
    def apps(self) -> Dict[str, App]:
        return {name: self.app(name) for name in self.names()}

    def app(self, name: str) -> App:
        if name not in self._loaded:
            if name not in self._paths:
                raise UsageError(f"unknown app {name!r}; the catalog has: {', '.join(self.names())}")
            self._loaded[name] = load_app(self._paths[name])
        return self._loaded[name]

    def names(self) -> List[str]:
        return sorted(set(self._loaded) | set(self._paths))

    def __contains__(self, name: str) -> bool:
        return name in self._loaded or name in self._paths

    def resolve(self, names: Sequence[str]) -> List[App]:
        """The apps asked for plus what they require, each once, requirements first."""
        out: List[App] = []
        seen: set = set()

        def visit(name: str, chain: Tuple[str, ...]) -> None:
            if name in chain:
                raise UsageError(f"catalog apps require each other in a loop: {' -> '.join(chain + (name,))}")
            if name in seen:
                return
            app = self.app(name)
            for dep in app.requires:
                visit(dep, chain + (name,))
            seen.add(name)
            out.append(app)

        for name in names:
            visit(name, ())
        return out


def load_app(path: Path) -> App:
    doc = yamlfile.load(path, "catalog entry")
    app: App = validate_document(doc, app_type())
    if app.name != path.stem:
        raise Context(doc).fail(("name",), f"{app.name!r} must match the file name {path.name!r}")
    return App(**{**app.__dict__, "path": path})


def load_catalog(extra_dirs: Iterable[Path] = ()) -> Catalog:
    """Shipped definitions first; a site directory's entry replaces a shipped one of that name
    (an app is named by its file, which load_app checks when it reads it)."""
    paths: Dict[str, Path] = {}
    for directory in (data_dir("definitions"), *extra_dirs):
        if not directory.is_dir():
            raise UsageError(f"catalog directory {directory} does not exist")
        for path in sorted(directory.glob("*.yaml")):
            paths[path.stem] = path
    return Catalog(paths=paths)
