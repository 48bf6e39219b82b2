"""`stardock build` and `stardock images [list|inspect|prune]`."""
from __future__ import annotations

import datetime
import getpass
from pathlib import Path
from typing import Callable, Optional, Tuple

import click

from stardock_hpc.builder import build as build_image
from stardock_hpc.builder import entry_summary, lock_spec
from stardock_hpc.cache import Cache
from stardock_hpc.commands.options import common_options, echo_json, state
from stardock_hpc.engines import NAMES as ENGINE_NAMES
from stardock_hpc.engines import get_engine
from stardock_hpc.errors import UsageError
from stardock_hpc.fsutil import write_atomic
from stardock_hpc.inputs import read_lock, site_and_catalog
from stardock_hpc.lockfile import LOCK_NAME
from stardock_hpc.prune import DAY, plan_prune, sweep_tmp
from stardock_hpc.safefs import printable
from stardock_hpc.schedulers import get_scheduler
from stardock_hpc.site import load_site
from stardock_hpc.slurm.values import human_size, size_bytes


def engine_option(f):
    return click.option("--engine", type=click.Choice(sorted(ENGINE_NAMES)),
                        help="Container engine (default: the site's).")(f)


def chosen_engine(name: Optional[str], site) -> tuple:
    """The engine and where the choice came from (reported with --debug and in JSON)."""
    if name:
        return get_engine(name), "--engine option"
    return get_engine(site.engine), f"site config ({site.source})"


def progress(lines: bool, messages: bool) -> Tuple[Callable[[str], None], Callable[[str], None]]:
    """A build's output lines and stardock's own messages about it, on standard error when shown."""
    def on_line(line: str) -> None:
        if lines:
            click.echo(f"  | {line}", err=True)

    def say(message: str) -> None:
        if messages:
            click.echo(f"stardock: {message}", err=True)

    return on_line, say


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@engine_option
@click.option("--locked", is_flag=True, help="Install exactly the versions stardock.lock (beside SPEC) names.")
@click.option("--lock", "lock_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The lock file for --locked (default: stardock.lock beside SPEC).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the key and the artifact path.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, nothing else.")
@common_options
def build(spec: Path, engine: Optional[str], locked: bool, lock_path: Optional[Path], quiet: bool,
          as_json: bool) -> None:
    """Build SPEC unless the shared cache already has it; print its key and artifact."""
    if lock_path is not None and not locked:
        raise UsageError("--lock FILE goes with --locked")
    site, catalog = site_and_catalog(state().site)
    lock = read_lock(spec, lock_path) if locked else None
    eng, source = chosen_engine(engine, site)
    stream = not (quiet or as_json)
    if stream:
        click.echo(f"stardock: engine {eng.name} (from {source})", err=True)

    on_line, say = progress(lines=stream, messages=not as_json)
    result = build_image(spec, site, catalog, eng, on_line, say, lock, lock_path=lock_path)
    entry = result.entry
    if as_json:
        echo_json({"key": entry.key, "artifact": str(entry.artifact), "engine": eng.name,
                   "engine_source": source, "built": result.built, "seconds": round(result.seconds, 3),
                   "builder": entry.owner_name, "name": result.plan.name,
                   "lock_sha256": entry.meta.get("lock_sha256"), "locked": lock is not None})
        return
    if stream:
        what = f"built in {result.seconds:.1f}s" if result.built else \
            f"cached (built by {entry.owner_name}), nothing to build"
        click.echo(f"stardock: {result.plan.name}: {printable(what)}", err=True)
    click.echo(f"{entry.key}\n{entry.artifact}" if quiet else f"key: {entry.key}\nartifact: {entry.artifact}")


@click.command("lock")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the lock (default: stardock.lock beside SPEC).")
@engine_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, nothing else.")
@common_options
def lock_cmd(spec: Path, output: Optional[Path], engine: Optional[str], as_json: bool) -> None:
    """Write stardock.lock: the exact versions of everything in the image SPEC builds."""
    site, catalog = site_and_catalog(state().site)
    eng, _source = chosen_engine(engine, site)
    on_line, say = progress(lines=not as_json, messages=not as_json)
    lock, result = lock_spec(spec, site, catalog, eng, on_line, say)
    path = output or spec.parent / LOCK_NAME
    write_atomic(path, lock.text(), mode=0o644)  # whole or not at all
    counts = {"apt": len(lock.packages.apt), "pip": len(lock.packages.pip)}
    if as_json:
        echo_json({"lock": str(path), "sha256": lock.digest(), "key": result.entry.key, **counts})
        return
    click.echo(f"stardock: {path}: {counts['apt']} Debian and {counts['pip']} Python packages "
               f"(lock sha256 {lock.digest()[:12]}, image {result.entry.key[:12]})", err=True)
    click.echo(str(path))


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@common_options
@click.pass_context
def images(ctx: click.Context, as_json: bool) -> None:
    """List the shared cache's images (or inspect / prune them)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_images, as_json=as_json)


def _cache() -> Cache:
    site = load_site(state().site)
    return Cache(site.cache, site.trusted_builders)


@images.command("list")
@click.option("--json", "as_json", is_flag=True)
@common_options
def list_images(as_json: bool) -> None:
    """One line per cached image."""
    cache = _cache()
    entries, skipped = cache.scan()
    rows = [entry_summary(e, cache) for e in entries]
    if as_json:
        echo_json(rows)
        return
    if skipped:  # whatever is not an entry stardock made: named (escaped) on stderr, never used
        click.echo(f"stardock: skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of "
                   f"{cache.dir('entries')} that stardock did not make (`stardock images inspect NAME` says why)",
                   err=True)
    if not rows:
        click.echo(f"no images in {cache.root}")
        return
    # VISIBILITY: public (everybody may read and run it) or private (its builder's alone)
    click.echo(f"{'KEY':<14}{'NAME':<24}{'ENGINE':<11}{'BUILDER':<12}{'VISIBILITY':<12}{'SIZE':>10}  CREATED")
    for r in rows:
        created = datetime.datetime.fromtimestamp(r["created"] or 0).strftime("%Y-%m-%d %H:%M")
        mark = "" if r["trusted"] else "  (not trusted: not used)"
        # metadata was validated when read; printed escaped all the same (it is other users' text)
        click.echo(f"{r['key'][:12]:<14}{printable(r['name'] or '?')[:23]:<24}{printable(r['engine']):<11}"
                   f"{printable(r['builder'])[:11]:<12}{r['visibility']:<12}{human_size(r['size']):>10}  "
                   f"{created}{mark}")


@images.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the output is always JSON.")
@common_options
def inspect(key: str, as_json: bool) -> None:
    """Everything recorded about one image (KEY may be a unique prefix)."""
    cache = _cache()
    entry = cache.find(key)
    echo_json({**entry.meta, "visibility": entry.visibility,
               "visibility_reason": entry.meta.get("visibility_reason") or "published readable by all, before "
               "stardock recorded who may read an entry", "path": str(entry.path), "owner": entry.owner_name,
               "trusted": cache.trusted(entry.owner), "verified": cache.verify(entry),
               "last_used": cache.last_used(entry), "jobs": cache.users_of(entry)})


@images.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: both names and the differences.")
@common_options
def diff(a: str, b: str, as_json: bool) -> None:
    """The packages whose versions differ between two images or jobs (each a key or a unique
    prefix of one, or the id of a job of yours: its lock is kept with its record)."""
    from stardock_hpc.jobs.records import RecordStore
    from stardock_hpc.jobs.submit import user_dirs
    from stardock_hpc.lockfile import diff_packages
    from stardock_hpc.provenance import package_set

    site = load_site(state().site)
    cache = Cache(site.cache, site.trusted_builders)
    store = RecordStore(user_dirs(site, getpass.getuser())[0])
    (name_a, set_a), (name_b, set_b) = package_set(a, cache, store), package_set(b, cache, store)
    lines = diff_packages(set_a, set_b, name_a, name_b)
    if as_json:
        echo_json({"a": name_a, "b": name_b, "differences": lines})
        return
    # an entry made before locks existed gives its meta.json's versions: other users' text, escaped
    click.echo("\n".join(printable(line) for line in lines) if lines else
               f"no differences between {name_a} and {name_b}")


def parse_size(text: str) -> int:
    try:
        return int(size_bytes(text))
    except UsageError:
        raise UsageError(f"--max-size: {text!r} is not a size; write e.g. 500M or 20G") from None


@images.command()
@click.option("--older-than", type=float, metavar="DAYS", help="Remove images built more than DAYS ago.")
@click.option("--unused-for", type=float, metavar="DAYS", help="Remove images nobody used for DAYS.")
@click.option("--max-size", metavar="SIZE", help="Remove least recently used images until the cache fits.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@common_options
def prune(older_than: Optional[float], unused_for: Optional[float], max_size: Optional[str], dry_run: bool) -> None:
    """Remove your images (root: anybody's) by age, disuse or a size budget. Images that queued
    or running jobs will run are always kept."""
    if older_than is None and unused_for is None and max_size is None:
        raise UsageError("say what to prune: --older-than DAYS, --unused-for DAYS or --max-size SIZE")
    site = load_site(state().site)
    cache = Cache(site.cache, site.trusted_builders)
    cache.check_layout()
    scheduler, _source = get_scheduler(None, site)
    decisions = plan_prune(cache, older_than=None if older_than is None else older_than * DAY,
                           unused_for=None if unused_for is None else unused_for * DAY,
                           max_bytes=None if max_size is None else parse_size(max_size), jobs=scheduler.active)
    for d in decisions:
        name = printable(d.entry.meta.get("name"))
        click.echo(f"{'would remove' if dry_run else 'removing'} {d.entry.key[:12]} {name} "
                   f"({human_size(d.entry.meta.get('size'))}): {d.reason}")
        if not dry_run:
            cache.remove(d.entry)
    if not dry_run:
        swept = sweep_tmp(cache)
        if swept:
            click.echo(f"removed {swept} leftover(s) of interrupted builds")
    if not decisions:
        click.echo("nothing to prune")


@images.command()
@common_options
def init() -> None:
    """Set up the cache's directories (root, or the owner of the cache directory, once): they must
    be theirs, or whoever made them could remove or replace everybody's images."""
    for line in _cache().init():
        click.echo(line)
