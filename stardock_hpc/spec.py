"""The environment spec (stardock.yaml): the scientist's one file, as a typed model.

Loading validates every key (fixed key sets, allowed values, file sources inside the spec's
directory) and reports the first problem with file, line, key path and what is allowed.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, Optional, Tuple, Union

from stardock_hpc import yamlfile
from stardock_hpc.errors import UsageError
from stardock_hpc.patterns import (  # noqa: F401 - the spec's patterns, also named from here
    APP_RE,
    APT_RE,
    BASE_RE,
    ENV_KEY_RE,
    LABEL_KEY_RE,
    NAME_HELP,
    NAME_RE,
    PIP_RE,
)
from stardock_hpc.schema import (
    Bool,
    Context,
    Either,
    Invalid,
    Key,
    ListOf,
    MapOf,
    Obj,
    Str,
    json_schema,
    validate_document,
)

# Names stardock-hpc or Slurm set in the container; a spec must not override them.
RESERVED_ENV = re.compile(r"STARDOCK_.*|SLURM_.*|HOME|USER|LOGNAME")
RESERVED_LABEL_PREFIX = "org.stardock."
SPEC_SCHEMA_ID = "https://stardock-hpc.org/schema/stardock.schema.json"


@dataclass(frozen=True)
class FileCopy:
    """A file or directory from beside the spec, copied to `dest` in the image."""

    src: str
    dest: str
    source: Path = field(compare=False, default=Path("."))  # resolved absolute path on disk


@dataclass(frozen=True)
class Secret:
    """A build secret: a file of the building user's or a variable of the build's environment,
    which the build steps read at /run/secrets/<id> while the image is built. The spec (and so the
    cache key, the cache entry and the image's /.stardock/spec.yaml) keeps where it comes from,
    never its value."""

    id: str
    file: Optional[str] = None     # ~/..., an absolute path, or relative to the spec's directory
    env: Optional[str] = None      # a variable's name

    def data(self) -> Dict[str, str]:
        return {"id": self.id, **({"file": self.file} if self.file is not None else {"env": str(self.env)})}


@dataclass(frozen=True)
class Packages:
    apt: Tuple[str, ...] = ()
    pip: Tuple[str, ...] = ()


# An item of `build:` is a shell step, or packages or files at that point of the build (so an
# imported recipe keeps its order: a package from a repository an earlier step added, a file
# copied into a directory an earlier step made).
@dataclass(frozen=True)
class AptStep:
    packages: Tuple[str, ...]
    recommends: bool = False      # with the recommended packages too (apt's default; not stardock's)


@dataclass(frozen=True)
class PipStep:
    requirements: Tuple[str, ...]


@dataclass(frozen=True)
class FilesStep:
    files: Tuple[FileCopy, ...]


BuildItem = Union[str, AptStep, PipStep, FilesStep]


def item_data(item: BuildItem) -> Any:
    """A build item as plain data (its form in the spec)."""
    if isinstance(item, str):
        return item
    if isinstance(item, AptStep):
        return {"apt": list(item.packages), **({"recommends": True} if item.recommends else {})}
    if isinstance(item, PipStep):
        return {"pip": list(item.requirements)}
    return {"files": [{"src": f.src, "dest": f.dest} for f in item.files]}


@dataclass(frozen=True)
class Environment:
    name: str
    base: Optional[str]
    apps: Tuple[str, ...]
    packages: Packages
    files: Tuple[FileCopy, ...]
    build: Tuple[BuildItem, ...]
    env: Dict[str, str]
    command: Optional[Tuple[str, ...]]
    labels: Dict[str, str]
    secrets: Tuple[Secret, ...] = ()
    path: Path = field(compare=False, default=Path("stardock.yaml"))

    def canonical(self) -> Dict[str, Any]:
        """The spec's meaning as plain data: no comments, no formatting, stable order. secrets:
        only when there are any (a spec without them keeps the digest it always had)."""
        data = {
            "name": self.name,
            "base": self.base,
            "apps": list(self.apps),
            "packages": {"apt": list(self.packages.apt), "pip": list(self.packages.pip)},
            "files": [{"src": f.src, "dest": f.dest} for f in self.files],
            "build": [item_data(item) for item in self.build],
            "env": dict(sorted(self.env.items())),
            "command": list(self.command) if self.command is not None else None,
            "labels": dict(sorted(self.labels.items())),
        }
        if self.secrets:
            data["secrets"] = [secret.data() for secret in self.secrets]
        return data

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


# --- checks that need more than a pattern -----------------------------------------------------

def check_file_source(value: str) -> None:
    """A `files:` src as the spec accepts it, or Invalid (`stardock import` checks with it too)."""
    path = PurePosixPath(value)
    if path.is_absolute() or value.startswith("~"):
        raise Invalid("file sources are relative to the spec's directory; absolute paths are "
                      "not allowed (copy the file next to the spec)")
    if ".." in path.parts:
        raise Invalid("'..' is not allowed: sources must stay inside the spec's directory")
    if "\n" in value:
        raise Invalid("file names with newlines are not allowed")


def check_file_dest(value: str) -> None:
    """A `files:` dest as the spec accepts it, or Invalid (`stardock import` checks with it too)."""
    if not value.startswith("/"):
        raise Invalid("destinations are absolute paths in the image (start with '/')")
    if ".." in PurePosixPath(value).parts:
        raise Invalid("'..' is not allowed in destinations")
    norm = posixpath.normpath(value)
    if norm == "/" or norm.split("/")[1] in ("proc", "sys", "dev", ".stardock", ".singularity.d"):
        raise Invalid("cannot copy onto /, /proc, /sys, /dev or stardock's own /.stardock")


def _check_env_key(value: str) -> None:
    if RESERVED_ENV.fullmatch(value):
        raise Invalid("is set by stardock-hpc or Slurm at run time (reserved: STARDOCK_*, "
                      "SLURM_*, HOME, USER, LOGNAME)")


SECRET_ID_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


def _secret_file(value: str) -> None:
    if "\n" in value or "\r" in value:
        raise Invalid("file names with newlines are not allowed")
    if value.startswith("~") and not (value == "~" or value.startswith("~/")):
        raise Invalid("write ~/PATH for a file in your home (another user's home is not yours to read)")


def _one_line(what: str):
    def check(value: str) -> None:
        if "\n" in value or "\r" in value:
            raise Invalid(f"{what} cannot contain a newline: a Containerfile's ENV and "
                          "Apptainer's %labels are one line each (put multi-line text in a file "
                          "under files:)")
    return check


def _not_option(value: str) -> None:
    if value.startswith("-"):
        raise Invalid("must not start with '-' (it would be read as an option)")


def spec_type(apps: Optional[Iterable[str]] = None, bases: Optional[Iterable[str]] = None) -> Obj:
    """The shape of stardock.yaml; with `apps` and `bases`, names are checked against the
    catalog and the bases the site offers."""
    app_names = tuple(sorted(apps)) if apps is not None else None
    base_names = tuple(bases) if bases is not None else None
    apt_name = Str("A Debian package, optionally pinned as name=version.", pattern=APT_RE,
                   pattern_help="Debian package names are lowercase letters, digits, '+', '-' and '.' "
                   "(optionally name=version)")
    pip_requirement = Str("A PyPI requirement such as photutils==1.6.0.", pattern=PIP_RE,
                          pattern_help="write a PyPI requirement such as 'photutils', 'photutils==1.6.0' or "
                          "'astroquery>=0.4' (no URLs, options or markers)", check=_not_option)
    packages = Obj({
        "apt": Key(ListOf(apt_name, "Extra Debian packages, installed after the apps'.", unique=True), default=()),
        "pip": Key(ListOf(pip_requirement, "Python packages from PyPI, installed into the image's Python "
                          "environment (which sees the Debian Python packages too).", unique=True), default=()),
    }, "Packages beyond the apps'.", make=lambda apt, pip: Packages(tuple(apt), tuple(pip)))
    file_copy = Obj({
        "src": Key(Str("Path relative to the spec's directory.", check=check_file_source), required=True),
        "dest": Key(Str("Absolute path in the image.", check=check_file_dest), required=True),
    }, "A file or directory copied into the image.", make=lambda src, dest: FileCopy(src, dest))
    secret = Obj({
        "id": Key(Str("The secret's name: build steps read it at /run/secrets/<id>.", pattern=SECRET_ID_RE,
                      pattern_help="use letters, digits, '.', '_' and '-', starting with a letter or digit, at "
                      "most 64 characters"), required=True),
        "file": Key(Str("A file of yours holding the value: ~/PATH, an absolute path, or a path relative to the "
                        "spec's directory. Read when building, never copied into the image or the cache.",
                        check=_secret_file), default=None),
        "env": Key(Str("A variable of the building environment holding the value.", pattern=ENV_KEY_RE,
                       pattern_help="use letters, digits and '_', not starting with a digit"), default=None),
    }, "A build secret (a token, a licence key): only its id and where it comes from are kept.",
        one_of=("file", "env"), make=lambda id, file, env: Secret(id, file, env))
    return Obj({
        "name": Key(Str("The environment's name; it names the image.", pattern=NAME_RE,
                        pattern_help=NAME_HELP, max_len=63), required=True),
        "base": Key(Str("One of the base images the site offers (stardock site show); "
                        "the site's default when omitted.", pattern=BASE_RE, choices=base_names,
                        pattern_help="an image name such as debian:bookworm")),
        "apps": Key(ListOf(Str("An app of the site's catalog (stardock apps).", choices=app_names,
                               pattern=APP_RE,
                               pattern_help="app names are lowercase letters, digits and '-'"),
                           "Apps from the catalog.", unique=True, max_items=100), default=()),
        "packages": Key(packages, default=Packages()),
        "files": Key(ListOf(file_copy, "Files copied into the image before the build steps.",
                            max_items=200), default=()),
        "build": Key(Either(
            (str, Str("A shell script (bash), run as root in the image at build time: one step.")),
            (list, ListOf(Either(
                (str, Str("One step: a shell command (one line, or several).", min_len=0)),
                (dict, Obj({
                    "apt": Key(ListOf(apt_name, unique=True, min_items=1), default=None),
                    "recommends": Key(Bool("With apt: install recommended packages too (apt's default; "
                                           "stardock's is not to)."), default=False),
                    "pip": Key(ListOf(pip_requirement, unique=True, min_items=1), default=None),
                    "files": Key(ListOf(file_copy, min_items=1), default=None),
                }, "Packages or files at this point of the build.", one_of=("apt", "pip", "files"),
                    make=_make_step)),
                description="A shell step, or packages or files at this point of the build."))),
            description="Your own build steps, in order, run in one bash shell (cd and variables carry "
                        "over between steps); each step's exit status decides, as each RUN of a "
                        "Dockerfile does."), default=()),
        "env": Key(MapOf(Str("Value (taken literally: no $ expansion).", min_len=0, numbers=True,
                             check=_one_line("an env value")),
                         "Environment variables, set at build and run time.",
                         key_pattern=ENV_KEY_RE, key_help="use letters, digits and '_', not "
                         "starting with a digit"), default={}),
        "command": Key(Either(
            (list, ListOf(Str("An argument.", min_len=0), min_items=1)),
            (str, Str("A shell command line, run with /bin/sh -c.")),
            description="The default command: a list of arguments, or one shell command line."),
            default=None),
        "labels": Key(MapOf(Str("Value.", min_len=0, numbers=True, check=_one_line("a label value")),
                            "Image labels (metadata).", key_pattern=LABEL_KEY_RE,
                            key_help="use letters, digits, '.', '_', '/' and '-'"), default={}),
        "secrets": Key(ListOf(secret, "Build secrets: what the build steps may read at /run/secrets/<id> while "
                              "the image is built, and what never reaches the image, the cache, the rendered "
                              "definition, the cache key or a log (its value is masked in the build's output). "
                              "An image built with a secret is private to its builder.", max_items=20),
                       default=()),
    }, "A stardock-hpc environment: what a scientist needs, in one file.", title="stardock.yaml",
        make=_make_environment)


def _make_step(apt, recommends, pip, files) -> BuildItem:
    if apt is not None:
        return AptStep(tuple(apt), recommends)
    if recommends:
        raise UsageError("recommends: goes with apt: in a build item")
    if pip is not None:
        return PipStep(tuple(pip))
    return FilesStep(tuple(files))


def _make_environment(name, base, apps, packages, files, build, env, command, labels, secrets) -> Environment:
    if isinstance(build, str):
        build = (build,) if build.strip() else ()  # a script is one step
    if isinstance(command, str):
        command = ("/bin/sh", "-c", command)
    return Environment(name=name, base=base, apps=tuple(apps), packages=packages,
                       files=tuple(files), build=tuple(build), env=dict(env),
                       command=tuple(command) if command is not None else None, labels=dict(labels),
                       secrets=tuple(secrets))


def _check_reserved(env: Environment, doc: yamlfile.Document) -> None:
    ctx = Context(doc)
    seen = set()
    for i, secret in enumerate(env.secrets):
        if secret.id in seen:
            raise ctx.fail(("secrets", i, "id"), f"the secret {secret.id!r} is listed twice")
        seen.add(secret.id)
    for key in env.env:
        try:
            _check_env_key(key)
        except Invalid as exc:
            raise ctx.fail(("env", key), f"{key!r} {exc}") from None
    for key in env.labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise ctx.fail(("labels", key), f"{key!r}: labels under '{RESERVED_LABEL_PREFIX}' are "
                           "written by stardock-hpc (provenance)")


def _resolve_files(env: Environment, doc: yamlfile.Document) -> Environment:
    """Every file source (files:, and files: items of build:) found inside the spec's directory."""
    ctx = Context(doc)
    spec_dir = env.path.parent.resolve()

    def resolve(item: FileCopy, where: Tuple[Any, ...]) -> FileCopy:
        source = (spec_dir / item.src).resolve()
        if source != spec_dir and spec_dir not in source.parents:
            raise ctx.fail(where, f"{item.src!r} leads outside the spec's directory "
                           f"({spec_dir}) through a symbolic link")
        if not source.exists():
            raise ctx.fail(where, f"{item.src!r} does not exist (looked for {source})")
        if not (source.is_file() or source.is_dir()):
            raise ctx.fail(where, f"{item.src!r} is neither a file nor a directory")
        return FileCopy(item.src, item.dest, source)

    files = tuple(resolve(f, ("files", i, "src")) for i, f in enumerate(env.files))
    build = tuple(FilesStep(tuple(resolve(f, ("build", i, "files", j, "src")) for j, f in enumerate(item.files)))
                  if isinstance(item, FilesStep) else item for i, item in enumerate(env.build))
    return Environment(**{**env.__dict__, "files": files, "build": build})


def parse_spec(text: str, path: Path, apps: Optional[Iterable[str]] = None,
               bases: Optional[Iterable[str]] = None) -> Environment:
    doc = yamlfile.parse(text, str(path))
    return _from_document(doc, path, apps, bases)


def load_spec(path: Path, apps: Optional[Iterable[str]] = None,
              bases: Optional[Iterable[str]] = None) -> Environment:
    """Load and validate stardock.yaml; `apps` (the catalog's names) and `bases` (the site's)
    enable the checks of those names."""
    doc = yamlfile.load(path, "environment spec")
    return _from_document(doc, path, apps, bases)


def _from_document(doc: yamlfile.Document, path: Path, apps: Optional[Iterable[str]],
                   bases: Optional[Iterable[str]]) -> Environment:
    if doc.data is None:
        raise UsageError(f"{path}: the environment spec is empty; it needs at least 'name'")
    env: Environment = validate_document(doc, spec_type(apps, bases))
    env = Environment(**{**env.__dict__, "path": Path(path)})
    _check_reserved(env, doc)
    return _resolve_files(env, doc)


def spec_json_schema(apps: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    return json_schema(spec_type(apps), title="stardock-hpc environment spec (stardock.yaml)",
                       schema_id=SPEC_SCHEMA_ID)
