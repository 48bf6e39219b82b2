"""`stardock sbatch`: the image (built through the cache if need be), the job script, the
submission, and the records that let `stardock status/logs/outputs` find the job again."""
from __future__ import annotations

import errno
import getpass
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from stardock_hpc.cache import Cache, Entry, image_tag
from stardock_hpc.engines import get_engine
from stardock_hpc.errors import OutcomeUnknown, StardockError, UsageError
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.jobs.limits import check_limits
from stardock_hpc.jobs.mounts import VolumeMount, parse_mount, parse_mounts
from stardock_hpc.jobs.records import RecordStore
from stardock_hpc.jobs.request import SubmitRequest, export_names
from stardock_hpc.jobs.script import render_job_script
from stardock_hpc.jobs.userdirs import private_dir
from stardock_hpc.provenance import keep_lock, provenance
from stardock_hpc.resources import data_dir
from stardock_hpc.schedulers.base import Scheduler, Submission, Submitted
from stardock_hpc.site import Site
from stardock_hpc.slurm.options import Option

RUNTIME_SHIM = "stardock-runc"


@dataclass
class Prepared:
    entry: Entry
    engine: str
    mounts: List[VolumeMount]
    launch: Launch
    script: str
    built: Optional[bool]  # None: given as --image
    records: Path          # the user's records directory, checked
    outputs: Path          # the user's outputs directory, checked


def choose_image(req: SubmitRequest, site: Site, engine_name: Optional[str],
                 on_line: Optional[Callable[[str], None]],
                 say: Optional[Callable[[str], None]] = None) -> Tuple[Entry, Optional[bool]]:
    if bool(req.spec_path) == bool(req.image):
        raise UsageError("stardock sbatch: give exactly one of --env SPEC or --image KEY "
                         "(on the command line or in a #STARDOCK line)")
    if req.spec_path:
        # building (and so the catalog) only when the image is given as a spec: --image stays light
        from stardock_hpc.builder import build
        from stardock_hpc.catalog import load_catalog
        from stardock_hpc.inputs import read_lock
        lock = read_lock(req.spec_path) if req.locked else None
        result = build(req.spec_path, site, load_catalog(site.catalog), get_engine(engine_name or site.engine),
                       on_line, say, lock, add_apps=req.add_apps)
        return result.entry, result.built
    if req.locked:
        raise UsageError("stardock sbatch: --locked goes with --env SPEC (an image given by --image KEY is "
                         "what it is)")
    cache = Cache(site.cache, site.trusted_builders)
    entry = cache.find(req.image or "")
    if not cache.trusted(entry.owner):
        raise UsageError(f"image {entry.key[:12]} was built by {entry.owner_name}, whom this site does not "
                         "trust; build it yourself with --env SPEC")
    if not cache.verify(entry):
        raise UsageError(f"image {entry.key[:12]} no longer matches its recorded digest; it is not used")
    if engine_name and engine_name != entry.engine:
        raise UsageError(f"image {entry.key[:12]} is a {entry.engine} image; --engine {engine_name} cannot run it")
    has = set(entry.meta.get("apps") or []) | set((entry.meta.get("versions") or {}).get("pip") or {})
    missing = [app for app in req.add_apps if app not in has]
    if missing:
        raise UsageError(f"image {entry.key[:12]} has no {', '.join(missing)}, which this job needs (its apps: "
                         f"{', '.join(entry.meta.get('apps') or []) or 'none'})",
                         hint=f"give --env SPEC instead (stardock adds {', '.join(missing)} for the job), "
                         f"or build the image with apps: [{', '.join(missing)}]")
    return entry, None


def prepare(req: SubmitRequest, site: Site,
            on_line: Optional[Callable[[str], None]] = None,
            say: Optional[Callable[[str], None]] = None, command: Optional[List[str]] = None,
            interactive: bool = False, environ: Optional[Mapping[str, str]] = None) -> Prepared:
    """on_line: the build's output, line by line; say: stardock's own messages (a wait for a lock).
    command: run it instead of the script, interactive: on a terminal (stardock shell).
    environ: the environment sbatch will get (its $SBATCH_EXPORT counts); default, this process's."""
    assert req.script is not None
    # the variables --export names reach the script in the container too, as under plain sbatch;
    # stardock shell runs srun, which reads no #SBATCH line nor $SBATCH_EXPORT
    exported = [] if interactive else export_names(req.export_value(os.environ if environ is None else environ))
    user = getpass.getuser()
    check_limits(req.all_sbatch(), site.policy.limits, site.source)
    mounts = parse_mounts(req.mounts, site, user)
    # what would fail after submission is checked before it
    records, outputs = user_dirs(site, user)
    inputs, deliveries = staged(req, site, user, mounts)
    entry, built = choose_image(req, site, req.engine, on_line, say)
    shim = str(data_dir("wrappers") / RUNTIME_SHIM) if entry.engine == "podman" else None
    launch = Launch(
        engine=entry.engine, entry=str(entry.path), artifact=str(entry.artifact), key=entry.key,
        name=entry.meta.get("name", "?"),
        tag=entry.meta.get("image_tag") or image_tag(entry.meta.get("name", "image"), entry.key),
        mounts=mounts, outputs=site.outputs, records=site.records,
        mount_root=site.mount_root, network=site.policy.network, node_network=site.policy.node_network,
        node_storage=site.node_storage, node_storage_max=site.node_storage_max,
        script=req.script.text,
        script_name=str(req.script.path or "--wrap"), pass_env=list(req.pass_env), export_env=exported,
        runtime_shim=shim,
        pids=site.policy.limits.pids, entry_owner=entry.owner, artifact_sha256=entry.meta["artifact_sha256"],
        command=command, interactive=interactive, inputs=inputs, deliver=deliveries,
        input_max_bytes=site.policy.inputs.max_bytes, retries=site.policy.inputs.retries,
        input_schemes=list(site.policy.inputs.schemes), input_hosts=list(site.policy.inputs.hosts),
        input_cache_max=site.policy.inputs.cache_max, deliver_schemes=list(site.policy.deliveries.schemes),
        deliver_hosts=list(site.policy.deliveries.hosts),
        notebook_token=req.notebook_token)
    return Prepared(entry, entry.engine, mounts, launch, render_job_script(req.script, launch), built,
                    records, outputs)


def staged(req: SubmitRequest, site: Site, user: str, mounts: List[VolumeMount]) -> Tuple[List[Dict], List[Dict]]:
    """--input and --deliver, checked against the site (policy.inputs, policy.deliveries, the volumes)."""
    if not req.inputs and not req.deliver:
        return [], []
    from stardock_hpc.jobs.staging import INPUT_DIR, parse_delivery, parse_inputs, to_json

    inputs = parse_inputs(req.inputs, site.policy.inputs)
    target = f"{site.mount_root}/{INPUT_DIR}"
    clash = [m.request for m in mounts if m.target == target or m.target.startswith(target + "/")]
    if inputs and clash:
        raise UsageError(f"--mount {clash[0]} would be seen at {target}, where the job's --input files are")

    def volume_dest(text: str) -> Tuple[str, str]:
        m = parse_mount(f"{text}:rw", site, user)
        if not m.host.is_dir():
            raise UsageError(f"--deliver {text!r}: {m.host} is not a directory")
        return str(m.root), m.sub

    deliveries = [parse_delivery(text, volume_dest, site.policy.deliveries) for text in req.deliver]
    return to_json(inputs), to_json(deliveries)


def user_dirs(site: Site, user: str) -> Tuple[Path, Path]:
    """The user's records and outputs directories: private, nobody else's, and writable (a job
    Slurm accepted must never lose its record)."""
    uid = os.getuid()
    records = private_dir(site.records, user, uid, f"job records directory (records in {site.source})")
    outputs = private_dir(site.outputs, user, uid, f"outputs directory (outputs in {site.source})")
    for path, what in ((records, "job records"), (outputs, "job outputs")):
        try:
            probe_writable(path)
        except OSError as exc:
            raise UsageError(f"cannot write {what} in {path}: {exc.strerror}; nothing was submitted") from None
    return records, outputs


def probe_writable(directory: Path) -> None:
    """Create (and drop) a file in directory, or raise OSError: an unnamed one where the file
    system can (nothing is left even if we are killed), else a named one removed at once."""
    try:
        os.close(os.open(directory, os.O_WRONLY | os.O_TMPFILE, 0o600))
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    import tempfile

    fd, name = tempfile.mkstemp(prefix=".stardock-probe-", dir=directory)
    os.close(fd)
    os.unlink(name)


def site_defaults(req: SubmitRequest, site: Site, environ: Dict[str, str]) -> List[Option]:
    """The site's default partition (scheduler.partition), unless the user names one in any of
    the places sbatch reads: an #SBATCH line, $SBATCH_PARTITION, or the command line."""
    default = site.scheduler.partition
    if not default or "SBATCH_PARTITION" in environ or any(o.name == "partition" for o in req.all_sbatch()):
        return []
    return [Option("partition", default, (f"--partition={default}",))]


def submit(req: SubmitRequest, prepared: Prepared, site: Site, scheduler: Scheduler, cwd: Path,
           environ: Dict[str, str], warn: Callable[[str], None]) -> Submitted:
    """Submit; once Slurm has the job, nothing fails any more: bookkeeping problems are warnings."""
    assert req.script is not None
    name = req.script.path.name if req.script.path else "wrap"
    options = site_defaults(req, site, environ) + list(req.sbatch)
    submission = Submission(prepared.script, options, req.args, cwd, environ, name,
                            named=(*prepared.launch.pass_env, *prepared.launch.export_env))
    sent = time.time()
    try:
        submitted = scheduler.submit(submission)
    except OutcomeUnknown as exc:
        raise _lost_answer(exc, submission, req, prepared, site, scheduler, sent) from None
    if not submitted.job_id:
        return submitted
    record = _submit_record(submitted.job_id, req, prepared, scheduler, options, cwd)
    record["cluster"] = submitted.cluster
    try:
        RecordStore(prepared.records).write_submit(submitted.job_id, record)
    except OSError as exc:
        warn(f"job {submitted.job_id} was submitted, but its record could not be written in "
             f"{prepared.records} ({exc.strerror}): `stardock status` shows only what Slurm knows of it")
    cache = Cache(site.cache, site.trusted_builders)
    cache.register_use(prepared.entry, submitted.job_id)
    try:
        keep_lock(cache, prepared.entry, RecordStore(prepared.records))
    except (OSError, StardockError) as exc:
        warn(f"job {submitted.job_id}: the lock of its image could not be kept among your records ({exc})")
    return submitted


def _submit_record(job_id: Optional[str], req: SubmitRequest, prepared: Prepared, scheduler: Scheduler,
                   options: List[Option], cwd: Path) -> Dict:
    return {
        "job": job_id, "submitted": time.time(),
        "user": getpass.getuser(), "backend": scheduler.name, "cwd": str(cwd),
        "script": prepared.launch.script_name, "args": req.args, "sbatch": [t for o in options for t in o.tokens],
        "engine": prepared.engine, "key": prepared.entry.key, "name": prepared.launch.name,
        "artifact": str(prepared.entry.artifact), "mounts": [m.record() for m in prepared.mounts],
        "outputs": str(prepared.outputs), "spec": str(req.spec_path) if req.spec_path else None,
        "provenance": provenance(prepared.entry),
    }


def _lost_answer(exc: OutcomeUnknown, submission: Submission, req: SubmitRequest, prepared: Prepared, site: Site,
                 scheduler: Scheduler, sent: float) -> OutcomeUnknown:
    """Keep what finds the job again if Slurm made it (the job's name, the time window, the
    record it would have had) and keep its image from pruning; `stardock status` adopts it."""
    from stardock_hpc.schedulers.job_options import gather
    names = [o.value for o in gather(submission.script, submission.options, submission.environ)[0]
             if o.name == "job-name" and o.value]
    stamp = str(time.time_ns())
    record = _submit_record(None, req, prepared, scheduler, submission.options, submission.cwd)
    record.update(pending=stamp, job_name=names[-1] if names else submission.script_name, window=[sent, time.time()])
    kept = "nothing was recorded"
    try:
        RecordStore(prepared.records).write_pending(stamp, record)
        Cache(site.cache, site.trusted_builders).register_pending(prepared.entry, stamp)
        kept = "stardock recorded the submission: `stardock status` finds the job and records it if Slurm has it"
    except OSError as err:
        kept = f"its record could not be written ({err.strerror})"
    return OutcomeUnknown(f"{exc.message}\n{kept}", hint="do not submit again before `stardock status` (or "
                          f"squeue --me --name={shlex.quote(record['job_name'])}) says whether it exists")
