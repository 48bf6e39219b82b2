"""What exactly ran: a job's provenance, kept in its record, and the package sets of images and
jobs compared (`stardock images diff`).

A job's submit record holds the provenance of its image (spec, cache key, image and base
digests, the lock's digest) and the user's records directory keeps the lock itself, by its
digest (<records>/locks/<sha256>.lock): the answer to "what exactly ran" outlives the cache entry.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Tuple

from stardock_hpc.cache import Cache, Entry
from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.records import JOB_ID_RE, RecordStore, split_job_id

if TYPE_CHECKING:
    from stardock_hpc.lockfile import Packages


def provenance(entry: Entry) -> Dict:
    """What a job's record keeps of its image."""
    m = entry.meta
    return {"key": entry.key, "engine": m.get("engine"), "image": m.get("image_tag"), "name": m.get("name"),
            "artifact_sha256": m.get("artifact_sha256"), "spec_sha256": m.get("spec_sha256"),
            "base": m.get("base"), "base_digest": m.get("base_digest"), "lock_sha256": m.get("lock_sha256"),
            "locked": bool(m.get("locked")), "apps": m.get("apps", []), "builder": entry.owner_name,
            "built": m.get("created"), "stardock_version": m.get("stardock_version")}


def keep_lock(cache: Cache, entry: Entry, store: RecordStore) -> None:
    """Keep the entry's lock among the user's records (once per digest)."""
    text = cache.read_lock(entry)
    if text is not None:
        store.write_lock(text)


def package_set(ref: str, cache: Cache, store: RecordStore) -> Tuple[str, Packages]:
    """The packages of a job (a job id with a record) or of an image (a key or a unique prefix)."""
    from stardock_hpc.lockfile import Packages, PipPin, parse_lock
    record = store.submit(split_job_id(ref)[0]) if JOB_ID_RE.fullmatch(ref) else None
    if record is not None:
        digest = (record.get("provenance") or {}).get("lock_sha256")
        text = store.lock(digest) if isinstance(digest, str) else None
        if text is None:
            raise UsageError(f"job {ref} has no lock in its record (submitted before stardock kept them)")
        return f"job {ref}", parse_lock(text, f"the lock of job {ref}").packages
    entry = cache.find(ref)
    text = cache.read_lock(entry)
    if text is not None:
        return f"image {entry.key[:12]}", parse_lock(text, f"{entry.path}/stardock.lock").packages
    versions = entry.meta.get("versions") or {}  # an entry built before locks existed
    apt = {str(k): str(v) for k, v in (versions.get("apt") or {}).items()}
    pip = [PipPin(str(k), str(v)) for k, v in (versions.get("pip") or {}).items()]
    return f"image {entry.key[:12]}", Packages.of(apt, pip)
