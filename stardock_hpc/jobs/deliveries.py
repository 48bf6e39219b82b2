"""A job's outputs delivered when it ends, whatever its state (`--deliver`, jobs/staging.py parses
it): the output directory packed once (tar.gz, links kept as links) and sent to each destination
with its digest, retried.

To a site volume: into the directory checked at submission, walked again without following any
link, written 0600 (the output directory is the user's alone, and so is what is made of it)
under a temporary name nobody can guess or take first (O_EXCL), then renamed; a final name
another user took first is left alone and the archive gets a name of its own. By HTTP PUT: to a
URL policy.deliveries allows (checked again here), its user info sent as Basic authentication
to its own origin only; every URL in the log and the record redacted.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from stardock_hpc.jobs.staging import (
    CHUNK,
    TIMEOUT,
    Allowed,
    Delivery,
    Log,
    Permanent,
    Transient,
    allowed_here,
    opener,
    request_for,
)
from stardock_hpc.urls import redact_url, scrub


def pack_output(output: Path, archive: Path, label: str) -> Tuple[str, int]:
    """The output directory as a tar.gz (links kept as links, never followed); its digest and size."""
    import tarfile

    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(output), arcname=label, recursive=True)
    from stardock_hpc.cache.entries import fd_digest
    with open(archive, "rb") as fh:
        return fd_digest(fh.fileno()), os.fstat(fh.fileno()).st_size


def deliver_outputs(deliveries: Sequence[Delivery], output: Path, workdir: Path, label: str, retries: int,
                    log: Log, sleep: Callable[[float], None] = time.sleep,
                    allowed: Allowed = (("http", "https"), ())) -> List[Dict]:
    """Pack output once and send it to each destination; what each delivery became. allowed: the
    schemes and hosts of policy.deliveries (no host listed: no URL), checked again here."""
    if not deliveries:
        return []
    archive = workdir / f"{label}-output.tar.gz"
    try:
        sha256, size = pack_output(output, archive, label)
    except (OSError, ValueError) as exc:
        log(f"error: cannot pack {output} for delivery: {exc}")
        return [{"dest": d.shown(), "ok": False, "error": f"cannot pack the output directory: {exc}"}
                for d in deliveries]
    results = []
    for d in deliveries:
        shown = d.shown()
        result: Dict = {"dest": shown, "sha256": sha256, "bytes": size, "ok": False, "attempts": 0}
        if d.url and not allowed_here(d.url, allowed, empty_allows_all=False):
            result["error"] = "the site does not let jobs deliver there (policy.deliveries)"
            log(f"error: deliver {shown}: {result['error']}")
            results.append(result)
            continue
        for attempt in range(retries + 1):
            if attempt:
                delay = min(2.0 ** (attempt - 1), 30.0)
                log(f"deliver {shown}: {result['error']}; trying again in {delay:.0f} s")
                sleep(delay)
            result["attempts"] = attempt + 1
            try:
                where = _put(d, archive, sha256, allowed) if d.url else _to_volume(d, archive, sha256)
                result.update(ok=True, where=where)
                result.pop("error", None)
                log(f"deliver {shown}: {size} bytes to {where} (sha256 {sha256[:16]}...)")
                break
            except Permanent as exc:
                result["error"] = scrub(exc, [d.url or ""])
                break
            except (Transient, OSError) as exc:
                result["error"] = scrub(exc, [d.url or ""])
        if not result["ok"]:
            log(f"error: deliver {shown}: {result['error']} (after {result['attempts']} attempts)")
        results.append(result)
    return results


def _put(d: Delivery, archive: Path, sha256: str, allowed: Allowed) -> str:
    import base64
    import http.client
    import urllib.error

    assert d.url is not None
    digest = base64.b64encode(bytes.fromhex(sha256)).decode()
    with open(archive, "rb") as body:
        try:
            request, target = request_for(d.url, "PUT", body, {
                "Content-Type": "application/gzip", "Content-Length": str(archive.stat().st_size),
                "Digest": f"sha-256={digest}", "X-Checksum-Sha256": sha256})
            with opener(allowed, target, empty_allows_all=False).open(request, timeout=TIMEOUT) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            kind = Transient if exc.code >= 500 or exc.code in (408, 429) else Permanent
            raise kind(f"the server answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            raise Transient(f"cannot reach it ({getattr(exc, 'reason', exc)})") from None
    return redact_url(d.url)


def _to_volume(d: Delivery, archive: Path, sha256: str) -> str:
    """Into the volume's directory, walked without following any link, written (0600: the output
    directory is the user's alone, and so is what is made of it) under a temporary name nobody
    can guess or take first, and renamed: a reader never sees half an archive. A final name that
    another user took first is left alone: the archive gets a name of its own."""
    from stardock_hpc.jobs.binds import BindError, open_beneath

    assert d.root is not None
    try:
        dirfd = open_beneath(Path(d.root), d.sub, f"--deliver {d.dest}")
    except BindError as exc:
        raise Permanent(str(exc)) from None
    try:
        name = archive.name
        for attempt in range(2):
            if attempt or not (_free_or_mine(dirfd, name) and _free_or_mine(dirfd, f"{name}.sha256")):
                name = f"{archive.name[:-len('.tar.gz')]}.{secrets.token_hex(4)}.tar.gz"
            placed = False
            try:
                _write_new(dirfd, name, archive, None)
                placed = True
                _write_new(dirfd, f"{name}.sha256", None, f"{sha256}  {name}\n".encode())
                break
            except _Taken:
                if placed:  # the archive got there, its .sha256 did not: both go under another name
                    os.unlink(name, dir_fd=dirfd)
                if attempt:
                    raise Permanent(f"cannot write {name} in {Path(d.root, d.sub)}: another user took the "
                                     "name first, twice") from None
    finally:
        os.close(dirfd)
    return str(Path(d.root).joinpath(*[p for p in d.sub.split("/") if p], name))


class _Taken(Exception):
    """A final name that another user's file holds (a sticky directory refuses to replace it)."""


def _free_or_mine(dirfd: int, name: str) -> bool:
    """Whether name in dirfd is free, or a regular file of this user (a requeued job's delivery)."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()


def _write_new(dirfd: int, final: str, source: Optional[Path], data: Optional[bytes]) -> None:
    """final in dirfd, written whole under an unguessable O_EXCL name and renamed into place."""
    while True:
        tmp = f".{final}.{secrets.token_hex(8)}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dirfd)
            break
        except FileExistsError:
            continue
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or a default ACL of the directory made of it
        with os.fdopen(fd, "wb") as out:
            if source is not None:
                with open(source, "rb") as src:
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        out.write(chunk)
            else:
                out.write(data or b"")
        try:
            os.rename(tmp, final, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES, errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise _Taken(final) from None
            raise
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dirfd)
        except OSError:
            pass
        raise
