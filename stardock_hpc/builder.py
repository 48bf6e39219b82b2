"""`stardock build`: render, key, and build only when the shared cache has no trusted entry."""
from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

from stardock_hpc import __version__, buildsecrets, proc, proctree, visibility
from stardock_hpc.cache import ENTRY_LOCK, Cache, Entry, image_tag
from stardock_hpc.cachekey import base_digest, cache_key, file_digest
from stardock_hpc.catalog import Catalog
from stardock_hpc.context import APPTAINER_DEF, CONTAINERFILE, write_context
from stardock_hpc.engines import Engine
from stardock_hpc.engines.base import RunOptions
from stardock_hpc.errors import ExternalError, StardockError
from stardock_hpc.inputs import plan_for
from stardock_hpc.jobs.limits import minutes
from stardock_hpc.lockfile import LOCK_NAME, PACKAGES_SCRIPT, Lock, Packages, parse_lock, parse_packages
from stardock_hpc.plan import BuildPlan
from stardock_hpc.render import render_apptainer, render_containerfile
from stardock_hpc.site import Site

DEFINITIONS = {"podman": (CONTAINERFILE, render_containerfile), "apptainer": (APPTAINER_DEF, render_apptainer)}
@dataclass
class BuildResult:
    entry: Entry
    built: bool          # False: a cache hit
    seconds: float
    plan: BuildPlan


def key_for(plan: BuildPlan, engine: Engine) -> str:
    _filename, render = DEFINITIONS[engine.name]
    return cache_key(plan, engine.name, render(plan))


class BuildTimeout(ExternalError):
    """The build ran past policy.build_timeout and was stopped."""


def image_packages(engine: Engine, artifact: Path, tag: str, timeout: Optional[float] = None) -> Packages:
    """What the image really holds (lockfile.PACKAGES_SCRIPT, run in it)."""
    return parse_packages(run_in_image(engine, artifact, tag, PACKAGES_SCRIPT, (), "list the packages of",
                                       timeout=timeout))


def run_in_image(engine: Engine, artifact: Path, tag: str, script: str, args: Sequence[str], what: str,
                 network: bool = False, timeout: Optional[float] = None) -> str:
    """The output of a shell script (with args as $1...) run in a built image, as the user."""
    image = engine.image_for(artifact, tag)
    argv = engine.run_argv(image, ["/bin/sh", "-c", script, "sh", *args], [], None, RunOptions(network=network))
    out = proc.run(argv, check=False, timeout=300.0 if timeout is None else max(1.0, min(300.0, timeout)))
    if not out.ok:
        raise ExternalError(f"cannot {what} the image {tag} (exit {out.returncode}):\n{out.tail()}")
    return out.stdout


def app_digests(plan: BuildPlan) -> Dict[str, str]:
    """The catalog entries the plan uses, by their files' digests."""
    return {app.name: file_digest(app.path) for app in plan.apps if app.path.is_file()}


def lock_of(plan: BuildPlan, packages: Packages) -> Lock:
    """The lock of an image built from plan that holds packages."""
    return Lock(plan.spec_digest, plan.base.name, base_digest(plan.base), tuple(sorted(app_digests(plan).items())),
                packages)


class LockMismatch(ExternalError):
    """A --locked build whose inputs or result differ from the lock."""


def check_lock_inputs(plan: BuildPlan) -> None:
    """Before building: the lock's base and catalog entries are the ones this build would use."""
    lock = plan.lock
    if lock is None:
        return
    base = base_digest(plan.base)
    if lock.base_digest != base:
        raise LockMismatch(f"the lock was made from another {lock.base} base (digest {lock.base_digest}, "
                           f"the site's now {base}); nothing was built",
                           hint="run `stardock lock SPEC` again, or ask the site's admins for the old base")
    ours, locked = app_digests(plan), dict(lock.apps)
    if locked != ours:
        changed = sorted(name for name in set(ours) | set(locked) if ours.get(name) != locked.get(name))
        raise LockMismatch(f"the catalog entries {', '.join(changed)} changed since the lock was made; "
                           "nothing was built", hint="run `stardock lock SPEC` again")


@dataclass
class Bound:
    """policy.build_timeout: how long a build (and a wait for the build lock) may take."""

    text: str
    source: str
    seconds: float

    @classmethod
    def of(cls, site: Site) -> Bound:
        return cls(site.policy.build_timeout, site.source, minutes(site.policy.build_timeout) * 60)

    @property
    def named(self) -> str:
        return f"policy.build_timeout ({self.text}, in {self.source})"


def build(spec: Path, site: Site, catalog: Catalog, engine: Engine,
          on_line: Optional[Callable[[str], None]] = None,
          say: Optional[Callable[[str], None]] = None, lock: Optional[Lock] = None,
          add_apps: Sequence[str] = (), lock_path: Optional[Path] = None) -> BuildResult:
    """say: where messages about the build (not its output) go; on_line when not given.
    lock: build exactly the packages it names (build --locked), read from lock_path (default:
    stardock.lock beside the spec). add_apps: catalog apps the image needs beyond the spec's
    (stardock notebook's jupyterlab)."""
    started = time.monotonic()
    env, plan = plan_for(spec, site, catalog, lock, add_apps)
    check_lock_inputs(plan)
    key = key_for(plan, engine)
    cache = Cache(site.cache, site.trusted_builders)
    hit = cache.lookup(key)
    if hit is None:
        reason = engine.available()
        if reason:
            raise ExternalError(f"cannot build with {engine.name}: {reason}",
                                hint="choose another engine with --engine, or see `stardock site check`")
        cache.ensure_layout()
        bound = Bound.of(site)
        # Stopped for whatever reason (timeout, SIGTERM/SIGINT/SIGHUP, an error), a build stops
        # its engine's whole process tree, and the staging directory and the lock go with it.
        with proctree.stoppable(), cache.lock(key, bound.seconds, say or on_line, bound.named):
            hit = cache.lookup(key)  # built by somebody else while we waited for the lock
            if hit is None:
                inputs = Inputs(spec, (lock_path or spec.parent / LOCK_NAME) if lock is not None else None)
                entry = _build_entry(plan, key, cache, engine, on_line, bound, inputs)
                cache.touch_used(entry)
                return BuildResult(entry, True, time.monotonic() - started, plan)
    cache.touch_used(hit)
    return BuildResult(hit, False, time.monotonic() - started, plan)


@dataclass(frozen=True)
class Inputs:
    """The user's files a build reads beyond the plan's: they decide who may read the entry."""

    spec: Path
    lock: Optional[Path] = None


def _build_entry(plan: BuildPlan, key: str, cache: Cache, engine: Engine,
                 on_line: Optional[Callable[[str], None]], bound: Bound, inputs: Inputs) -> Entry:
    """The secrets' values are read first (a missing one fails before anything is built) and
    masked in every line the build prints and in its errors."""
    values = buildsecrets.read_values(plan.secrets, inputs.spec, os.environ)
    mask = buildsecrets.Masker(values)
    shown = (lambda line: on_line(mask(line))) if on_line is not None and values else on_line
    try:
        with buildsecrets.staged(values, os.environ) as secrets:
            return _built(plan, key, cache, engine, shown, bound, inputs, secrets)
    except StardockError as exc:
        mask.error(exc)
        raise


def _built(plan: BuildPlan, key: str, cache: Cache, engine: Engine, on_line: Optional[Callable[[str], None]],
           bound: Bound, inputs: Inputs, secrets: Mapping[str, Path]) -> Entry:
    filename, _render = DEFINITIONS[engine.name]
    tag = image_tag(plan.name, key)
    deadline = time.monotonic() + bound.seconds

    def left() -> Optional[float]:
        if bound.seconds == float("inf"):
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise proc.TimedOut("no time left")
        return remaining

    try:
        with cache.staging(key) as stage:
            context = write_context(plan, stage / "context")
            engine.prepare_base(plan.base, on_line, timeout=left())
            t0 = time.monotonic()
            artifact = engine.build(context, tag, stage, on_line, timeout=left(), secrets=secrets)
            build_seconds = time.monotonic() - t0
            run_form = engine.make_run_form(artifact, stage, timeout=left())
            os.replace(context / filename, stage / filename)
            os.replace(context / ".stardock" / "spec.yaml", stage / "spec.yaml")
            packages = image_packages(engine, artifact, tag, left())
            lock = lock_of(plan, packages)
            if plan.lock is not None and lock.text() != plan.lock.text():
                lines = plan.lock.differences(packages) or ["(the same versions, other archives)"]
                raise LockMismatch(f"the image built from the lock differs from it, so it was not cached "
                                   f"({len(lines)} package{'s' if len(lines) != 1 else ''}):\n  "
                                   + "\n  ".join(lines[:40]),
                                   hint="Debian's mirror keeps only current versions: a version it no longer has "
                                   "cannot be installed again; `stardock lock SPEC` makes a new lock")
            (stage / ENTRY_LOCK).write_text(lock.text())
            seen = visibility.decide(inputs.spec, plan, getpass.getuser(), cache.trusted_builder(os.getuid()),
                                     inputs.lock)
            meta = {
                "key": key,
                "engine": engine.name,
                "name": plan.name,
                "artifact": artifact.name,
                "definition": filename,
                "spec": "spec.yaml",
                "spec_sha256": plan.spec_digest,
                "base": plan.base.name,
                "base_digest": lock.base_digest,
                "apps": [a.name for a in plan.apps],
                "versions": {"apt": packages.apt_versions(),
                             "pip": {name: version for name, version in packages.pip_versions().values()}},
                "lock_sha256": lock.digest(),
                "locked": plan.lock is not None,
                "builder": getpass.getuser(),
                "builder_uid": os.getuid(),
                "host": socket.gethostname(),
                "created": time.time(),
                "build_seconds": round(build_seconds, 2),
                "stardock_version": __version__,
                "image_tag": tag if engine.name == "podman" else None,
                "visibility": seen.scope,
                "visibility_reason": seen.reason,
            }
            keep = [artifact.name, filename, "spec.yaml", ENTRY_LOCK]
            if run_form:
                meta.update(run_form=run_form["name"], image_config=run_form["config"])
                keep.append(run_form["name"])
            return cache.publish(stage, key, meta, keep=keep)
    except proc.TimedOut:
        raise BuildTimeout(f"the build of {plan.name} took longer than {bound.named} and was stopped; "
                           "nothing was cached",
                           hint="make the build shorter, or ask the site's admins for a longer build_timeout") \
            from None
    except proctree.Interrupted as exc:
        exc.message = f"the build of {plan.name} was {exc.message}; it was stopped and nothing was cached"
        raise


def entry_summary(entry: Entry, cache: Cache) -> Dict:
    m = entry.meta
    return {"key": entry.key, "name": m.get("name"), "engine": m.get("engine"), "builder": entry.owner_name,
            "trusted": cache.trusted(entry.owner), "visibility": entry.visibility,
            "created": m.get("created"), "size": m.get("size"),
            "last_used": cache.last_used(entry), "artifact": str(entry.artifact), "path": str(entry.path),
            "apps": m.get("apps", []), "base": m.get("base")}



def lock_spec(spec: Path, site: Site, catalog: Catalog, engine: Engine,
              on_line: Optional[Callable[[str], None]] = None,
              say: Optional[Callable[[str], None]] = None) -> Tuple[Lock, BuildResult]:
    """`stardock lock`: the lock of the image the spec builds (built first when the cache lacks it)."""
    result = build(spec, site, catalog, engine, on_line, say)
    entry = result.entry
    text = Cache(site.cache, site.trusted_builders).read_lock(entry)
    if text is not None:
        return parse_lock(text, f"{entry.path}/{ENTRY_LOCK}"), result
    # an entry made before locks existed: what its image holds (without pip's hashes, which
    # only the installation reports of newer builds carry)
    tag = entry.meta.get("image_tag") or image_tag(result.plan.name, entry.key)
    return lock_of(result.plan, image_packages(engine, entry.artifact, tag)), result
