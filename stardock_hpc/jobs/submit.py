"""`stardock sbatch`: the image (built through the cache if need be), the job script, the
submission, and the records that let `stardock status/logs/outputs` find the job again."""
from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from stardock_hpc.builder import build, image_tag
from stardock_hpc.cache import Cache, Entry
from stardock_hpc.catalog import Catalog
from stardock_hpc.engines import get_engine
from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.jobspec import JobSpec
from stardock_hpc.jobs.limits import check_limits
from stardock_hpc.jobs.mounts import VolumeMount, parse_mounts
from stardock_hpc.jobs.records import RecordStore
from stardock_hpc.jobs.request import SubmitRequest
from stardock_hpc.jobs.sbatch_options import Option
from stardock_hpc.jobs.script import render_job_script
from stardock_hpc.resources import data_dir
from stardock_hpc.schedulers.base import Scheduler, Submission, Submitted
from stardock_hpc.site import Site, expand_path

RUNTIME_SHIM = "stardock-runc"


@dataclass
class Prepared:
    entry: Entry
    engine: str
    mounts: List[VolumeMount]
    spec: JobSpec
    script: str
    built: Optional[bool]  # None: given as --image


def choose_image(req: SubmitRequest, site: Site, catalog: Catalog, engine_name: Optional[str],
                 on_line: Optional[Callable[[str], None]]) -> Tuple[Entry, Optional[bool]]:
    if bool(req.spec) == bool(req.image):
        raise UsageError("stardock sbatch: give exactly one of --env SPEC or --image KEY "
                         "(on the command line or in a #STARDOCK line)")
    if req.spec:
        result = build(req.spec, site, catalog, get_engine(engine_name or site.engine), on_line)
        return result.entry, result.built
    cache = Cache(site.cache, site.trusted_builders)
    entry = cache.find(req.image or "")
    if not cache.trusted(entry.owner):
        raise UsageError(f"image {entry.key[:12]} was built by {entry.owner_name}, whom this site does not "
                         "trust; build it yourself with --env SPEC")
    if not cache.verify(entry):
        raise UsageError(f"image {entry.key[:12]} no longer matches its recorded digest; it is not used")
    if engine_name and engine_name != entry.engine:
        raise UsageError(f"image {entry.key[:12]} is a {entry.engine} image; --engine {engine_name} cannot run it")
    return entry, None


def prepare(req: SubmitRequest, site: Site, catalog: Catalog,
            on_line: Optional[Callable[[str], None]] = None) -> Prepared:
    assert req.script is not None
    user = getpass.getuser()
    check_limits(req.all_sbatch(), site.policy.limits, site.source)
    mounts = parse_mounts(req.mounts, site, user)
    entry, built = choose_image(req, site, catalog, req.engine, on_line)
    shim = str(data_dir("wrappers") / RUNTIME_SHIM) if entry.engine == "podman" else None
    spec = JobSpec(
        engine=entry.engine, entry=str(entry.path), artifact=str(entry.artifact), key=entry.key,
        name=entry.meta.get("name", "?"),
        tag=entry.meta.get("image_tag") or image_tag(entry.meta.get("name", "image"), entry.key),
        mounts=[{"host": str(m.host), "target": m.target, "readonly": m.readonly} for m in mounts],
        outputs=str(expand_path(site.outputs, user)), records=str(expand_path(site.records, user)),
        mount_root=site.mount_root, network=site.policy.network, script=req.script.text,
        script_name=str(req.script.path or "--wrap"), pass_env=list(req.pass_env), runtime_shim=shim)
    return Prepared(entry, entry.engine, mounts, spec, render_job_script(req.script, spec), built)


def site_defaults(req: SubmitRequest, site: Site, environ: Dict[str, str]) -> List[Option]:
    """The site's default partition (scheduler.partition), unless the user names one in any of
    the places sbatch reads: an #SBATCH line, $SBATCH_PARTITION, or the command line."""
    default = site.scheduler.partition
    if not default or "SBATCH_PARTITION" in environ or any(o.name == "partition" for o in req.all_sbatch()):
        return []
    return [Option("partition", default, (f"--partition={default}",))]


def submit(req: SubmitRequest, prepared: Prepared, site: Site, scheduler: Scheduler, cwd: Path,
           environ: Dict[str, str]) -> Submitted:
    assert req.script is not None
    name = req.script.path.name if req.script.path else "wrap"
    options = site_defaults(req, site, environ) + list(req.sbatch)
    submitted = scheduler.submit(Submission(prepared.script, options, req.args, cwd, environ, name))
    if not submitted.job_id:
        return submitted
    record = {
        "job": submitted.job_id, "cluster": submitted.cluster, "submitted": time.time(),
        "user": getpass.getuser(), "backend": scheduler.name, "cwd": str(cwd),
        "script": prepared.spec.script_name, "args": req.args, "sbatch": [t for o in options for t in o.tokens],
        "engine": prepared.engine, "key": prepared.entry.key, "name": prepared.spec.name,
        "artifact": prepared.spec.artifact, "mounts": [m.record() for m in prepared.mounts],
        "outputs": prepared.spec.outputs, "spec": str(req.spec) if req.spec else None,
    }
    RecordStore(Path(prepared.spec.records)).write_submit(submitted.job_id, record)
    Cache(site.cache, site.trusted_builders).register_use(prepared.entry, submitted.job_id)
    return submitted
