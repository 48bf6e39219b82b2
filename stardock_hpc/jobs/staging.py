"""A job's inputs fetched before its container starts, and its outputs delivered when it ends
(Ahoy's wrapper; StarDock's data service).

`--input URL[=NAME]` (http, https, file; `URL#sha256=HEX` pins the digest): checked against the
site's policy.inputs at submission; fetched on the node by the wrapper, outside the container (the
container's own network policy still holds), into a directory of the job's that the container
sees read-only at <mount_root>/input. Bounded retries with backoff, a size cap, the digest
verified; a failure fails the job before the container runs. Pinned inputs already fetched come
from the user's download cache on the node (node_storage/downloads/<sha256>).

`--deliver DEST` (a directory on a writable site volume, NAME/SUB, or an http(s) URL to PUT to):
when the job ends, whatever its state, the output directory is packed (tar.gz) and delivered
with its digest (beside it as .sha256 on a volume; a Digest header over HTTP); retried; each
result goes into the job's record.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from stardock_hpc.errors import StardockError, UsageError

if TYPE_CHECKING:
    from stardock_hpc.site import InputsPolicy

INPUT_NAME_RE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,254}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
INPUT_DIR = "input"             # <mount_root>/input in the container
CHUNK = 1 << 20
TIMEOUT = 60.0                  # seconds without progress before an attempt is given up
Log = Callable[[str], None]


class StagingError(StardockError):
    """An input that could not be fetched, or an output that could not be delivered."""


@dataclass(frozen=True)
class JobInput:
    url: str
    name: str
    sha256: Optional[str] = None

    @classmethod
    def from_json(cls, data: Dict) -> JobInput:
        return cls(str(data["url"]), str(data["name"]), data.get("sha256"))

    def shown(self) -> str:
        return shown_url(self.url)


@dataclass(frozen=True)
class Delivery:
    dest: str                       # as the user gave it
    url: Optional[str] = None       # an http(s) URL to PUT to
    root: Optional[str] = None      # or a site volume's real directory ...
    sub: str = ""                   # ... and the real sub-path below it (no links)

    @classmethod
    def from_json(cls, data: Dict) -> Delivery:
        return cls(str(data["dest"]), data.get("url"), data.get("root"), str(data.get("sub") or ""))


def shown_url(url: str) -> str:
    """A URL as records and logs show it: without a password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# --- at submission ------------------------------------------------------------------------------
def parse_input(text: str, policy: InputsPolicy) -> JobInput:
    """One --input: URL[=NAME], URL#sha256=HEX[=NAME]."""
    where = f"--input {text!r}"
    if " " in text or not text.isprintable():
        raise UsageError(f"{where}: the URL holds spaces or control characters (quote them as %20 ...)")
    url, name = text, None
    head, sep, tail = text.rpartition("=")
    if sep and INPUT_NAME_RE.fullmatch(tail) and not head.endswith("#sha256") and _name_separator(head):
        url, name = head, tail
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"{where}: not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        raise UsageError(f"{where}: the scheme {scheme or '(none)'!r} is not allowed here; allowed: "
                         f"{', '.join(policy.schemes) or '(none)'} (site config: policy.inputs.schemes)")
    sha256 = None
    if parts.fragment:
        m = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", parts.fragment)
        if not m:
            raise UsageError(f"{where}: the only fragment allowed is #sha256= and 64 hexadecimal digits")
        sha256 = m.group(1).lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(f"{where}: a file URL names an absolute path on the nodes (file:///path)")
    else:
        host = (parts.hostname or "").lower()
        if not host:
            raise UsageError(f"{where}: the URL names no host")
        if not host_allowed(host, policy.hosts):
            raise UsageError(f"{where}: the host {host!r} is not allowed here; allowed: "
                             f"{', '.join(policy.hosts)} (site config: policy.inputs.hosts)")
    if name is None:
        name = posixpath.basename(unquote(parts.path))
        if not INPUT_NAME_RE.fullmatch(name):
            raise UsageError(f"{where}: cannot name the file after the URL ({name!r}); add =NAME "
                             "(letters, digits, '.', '_', '+', '-')")
    plain = urlunsplit(parts._replace(fragment=""))
    return JobInput(plain, name, sha256)


def host_allowed(host: str, hosts: Sequence[str]) -> bool:
    """Whether policy.inputs.hosts lets a job fetch from host (none listed: any)."""
    host = host.lower()
    return not hosts or any(host == h or (h.startswith("*.") and host.endswith(h[1:]))
                            for h in (h.lower() for h in hosts))


def _name_separator(head: str) -> bool:
    """Whether the last '=' of an --input ends the URL (URL=NAME) rather than sitting in its
    query (?a=b): in a query, the parameter before it must already have its own '='."""
    if "?" not in head:
        return True
    last = re.split(r"[?&;]", head.split("?", 1)[1].split("#", 1)[0])[-1]
    return "=" in last


def parse_inputs(texts: Sequence[str], policy: InputsPolicy) -> List[JobInput]:
    out: List[JobInput] = []
    for text in texts:
        item = parse_input(text, policy)
        if any(i.name == item.name for i in out):
            raise UsageError(f"--input {text!r}: two inputs named {item.name!r}; give one of them =NAME")
        out.append(item)
    return out


def parse_delivery(text: str, volume_dest: Callable[[str], Tuple[str, str]]) -> Delivery:
    """One --deliver: an http(s) URL, or NAME/SUB on a writable site volume (volume_dest checks
    it as a --mount NAME/SUB:rw and gives its real root and sub-path)."""
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        parts = urlsplit(text)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--deliver {text!r}: a URL to deliver to is http:// or https:// with a host")
        if parts.fragment or not text.isprintable() or " " in text:
            raise UsageError(f"--deliver {text!r}: no fragment, spaces or control characters in the URL")
        return Delivery(text, url=text)
    root, sub = volume_dest(text)
    return Delivery(text, root=root, sub=sub)


# --- on the node: inputs ------------------------------------------------------------------------
def size_cap(policy_bytes: str) -> int:
    from stardock_hpc.slurm.values import size_bytes
    return int(size_bytes(policy_bytes))


def fetch_inputs(inputs: Sequence[JobInput], dest: Path, cache: Optional[Path], max_bytes: int, retries: int,
                 log: Log, sleep: Callable[[float], None] = time.sleep,
                 allowed: Tuple[Sequence[str], Sequence[str]] = (("http", "https"), ())) -> List[Dict]:
    """Each input into dest (a directory of the job's), its digest checked; what each became (for
    the record). StagingError at the first that fails. allowed: the schemes and hosts a redirect
    may lead to (policy.inputs: a server cannot send the job where the site does not let it go)."""
    done: List[Dict] = []
    for item in inputs:
        started = time.time()
        target = dest / item.name
        source = "cache" if item.sha256 and _from_cache(cache, item.sha256, target) else None
        attempts = 0
        digest = item.sha256 or ""
        if source is None:
            digest, attempts = _fetch(item, target, max_bytes, retries, log, sleep, allowed)
            source = "download"
            if item.sha256 and digest != item.sha256:
                target.unlink(missing_ok=True)
                raise StagingError(f"input {item.name} ({item.shown()}): its sha256 is {digest}, "
                                   f"not the {item.sha256} the job asked for")
            _to_cache(cache, digest, target)
        size = target.stat().st_size
        log(f"input {item.name}: {size} bytes from {item.shown() if source == 'download' else 'the download cache'} "
            f"in {time.time() - started:.1f} s (sha256 {digest[:16]}...)")
        done.append({"name": item.name, "url": item.shown(), "bytes": size, "sha256": digest, "source": source,
                     "attempts": attempts})
    return done


def _fetch(item: JobInput, target: Path, max_bytes: int, retries: int, log: Log,
           sleep: Callable[[float], None], allowed: Tuple[Sequence[str], Sequence[str]]) -> Tuple[str, int]:
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            delay = min(2.0 ** (attempt - 1), 30.0)
            log(f"input {item.name}: {last}; trying again in {delay:.0f} s (attempt {attempt + 1} of {retries + 1})")
            sleep(delay)
        try:
            return _download(item, target, max_bytes, allowed, log), attempt + 1
        except _Permanent as exc:
            raise StagingError(f"input {item.name} ({item.shown()}): {exc}") from None
        except _Transient as exc:
            last = str(exc)
    raise StagingError(f"input {item.name} ({item.shown()}): {last} (gave up after {retries + 1} attempts)")


class _Transient(Exception):
    """Worth another attempt (a network error, a server error)."""


class _Permanent(Exception):
    """Not worth another (404, too large, not a file)."""


def _opener(allowed: Tuple[Sequence[str], Sequence[str]]):
    """urllib's opener, whose redirects go only where policy.inputs lets a job go."""
    import urllib.request

    schemes, hosts = allowed

    class Checked(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            parts = urlsplit(newurl)
            if parts.scheme.lower() not in ("http", "https") or parts.scheme.lower() not in schemes or \
                    not host_allowed(parts.hostname or "", hosts):
                raise _Permanent(f"the server sent it on to {shown_url(newurl)}, where the site does not let "
                                 "jobs fetch from (policy.inputs)")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(Checked)


PROGRESS_EVERY = 10.0   # seconds between progress lines of a long download, in the job's log


def _download(item: JobInput, target: Path, max_bytes: int, allowed: Tuple[Sequence[str], Sequence[str]],
              log: Log = lambda _m: None, clock: Callable[[], float] = time.monotonic) -> str:
    import urllib.error
    import urllib.request

    part = target.with_name(f".{target.name}.part")
    h = hashlib.sha256()
    total = 0
    try:
        if item.url.startswith("file:"):
            path = unquote(urlsplit(item.url).path)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError as exc:
                raise _Permanent(f"cannot read {path} ({exc.strerror})") from None
            if not _regular(fd):
                os.close(fd)
                raise _Permanent(f"{path} is not a regular file")
            src = os.fdopen(fd, "rb")
            length = os.fstat(fd).st_size
        else:
            request = urllib.request.Request(item.url, headers={"User-Agent": "stardock-hpc"})
            try:
                src = _opener(allowed).open(request, timeout=TIMEOUT)
            except urllib.error.HTTPError as exc:
                kind = _Transient if exc.code >= 500 or exc.code in (408, 429) else _Permanent
                raise kind(f"the server answered {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise _Transient(f"cannot reach it ({getattr(exc, 'reason', exc)})") from None
            length = int(src.headers.get("Content-Length") or 0)
        if length > max_bytes:
            src.close()
            raise _Permanent(f"{length} bytes, more than the site allows ({max_bytes}; policy.inputs.max_bytes)")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        next_line = clock() + PROGRESS_EVERY
        with src, os.fdopen(fd, "wb") as out:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except OSError as exc:
                    raise _Transient(f"the transfer broke off after {total} bytes ({exc})") from None
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise _Permanent(f"more than the site allows ({max_bytes} bytes; policy.inputs.max_bytes)")
                h.update(chunk)
                out.write(chunk)
                if clock() >= next_line:
                    of = f" of {length >> 20} MiB" if length else ""
                    log(f"input {item.name}: {total >> 20} MiB{of} so far")
                    next_line = clock() + PROGRESS_EVERY
        if length and total != length:
            raise _Transient(f"the transfer broke off after {total} of {length} bytes")
        os.chmod(part, 0o400)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return h.hexdigest()


def _regular(fd: int) -> bool:
    import stat
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _from_cache(cache: Optional[Path], sha256: str, target: Path) -> bool:
    """The cached copy of a pinned input, if it is there and still has its digest."""
    if cache is None or not SHA256_RE.fullmatch(sha256):
        return False
    try:
        fd = os.open(cache / sha256, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    h = hashlib.sha256()
    part = target.with_name(f".{target.name}.part")
    try:
        if not _regular(fd):
            return False
        out_fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "rb", closefd=False) as src, os.fdopen(out_fd, "wb") as out:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            return False
        os.chmod(part, 0o400)
        os.replace(part, target)
        return True
    finally:
        os.close(fd)
        part.unlink(missing_ok=True)


def _to_cache(cache: Optional[Path], sha256: str, path: Path) -> None:
    """Keep a download by its digest (best effort: the job goes on without)."""
    if cache is None:
        return
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(cache)
        if not os.path.isdir(cache) or os.path.islink(cache) or st.st_uid != os.getuid():
            return
        if (cache / sha256).exists():
            return
        tmp = cache / f".{sha256}.{os.getpid()}"
        os.link(path, tmp) if os.stat(path).st_dev == st.st_dev else _copy(path, tmp)
        os.replace(tmp, cache / sha256)
    except OSError:
        pass


def _copy(src: Path, dst: Path) -> None:
    import shutil
    shutil.copyfile(src, dst, follow_symlinks=False)


# --- on the node: outputs -----------------------------------------------------------------------
def pack_output(output: Path, archive: Path, label: str) -> Tuple[str, int]:
    """The output directory as a tar.gz (links kept as links, never followed); its digest and size."""
    import tarfile

    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(output), arcname=label, recursive=True)
    from stardock_hpc.cache.entries import fd_digest
    with open(archive, "rb") as fh:
        return fd_digest(fh.fileno()), os.fstat(fh.fileno()).st_size


def deliver_outputs(deliveries: Sequence[Delivery], output: Path, workdir: Path, label: str, retries: int,
                    log: Log, sleep: Callable[[float], None] = time.sleep) -> List[Dict]:
    """Pack output once and send it to each destination; what each delivery became."""
    if not deliveries:
        return []
    archive = workdir / f"{label}-output.tar.gz"
    try:
        sha256, size = pack_output(output, archive, label)
    except (OSError, ValueError) as exc:
        log(f"error: cannot pack {output} for delivery: {exc}")
        return [{"dest": d.dest, "ok": False, "error": f"cannot pack the output directory: {exc}"} for d in deliveries]
    results = []
    for d in deliveries:
        result: Dict = {"dest": d.dest, "sha256": sha256, "bytes": size, "ok": False, "attempts": 0}
        for attempt in range(retries + 1):
            if attempt:
                delay = min(2.0 ** (attempt - 1), 30.0)
                log(f"deliver {d.dest}: {result['error']}; trying again in {delay:.0f} s")
                sleep(delay)
            result["attempts"] = attempt + 1
            try:
                where = _put(d, archive, sha256) if d.url else _to_volume(d, archive, sha256)
                result.update(ok=True, where=where)
                result.pop("error", None)
                log(f"deliver {d.dest}: {size} bytes to {where} (sha256 {sha256[:16]}...)")
                break
            except _Permanent as exc:
                result["error"] = str(exc)
                break
            except (_Transient, OSError) as exc:
                result["error"] = str(exc)
        if not result["ok"]:
            log(f"error: deliver {d.dest}: {result['error']} (after {result['attempts']} attempts)")
        results.append(result)
    return results


def _put(d: Delivery, archive: Path, sha256: str) -> str:
    import base64
    import urllib.error
    import urllib.request

    assert d.url is not None
    digest = base64.b64encode(bytes.fromhex(sha256)).decode()
    with open(archive, "rb") as body:
        request = urllib.request.Request(d.url, data=body, method="PUT", headers={
            "Content-Type": "application/gzip", "Content-Length": str(archive.stat().st_size),
            "Digest": f"sha-256={digest}", "X-Checksum-Sha256": sha256, "User-Agent": "stardock-hpc"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310 - http(s) checked
                answer.read()
        except urllib.error.HTTPError as exc:
            kind = _Transient if exc.code >= 500 or exc.code in (408, 429) else _Permanent
            raise kind(f"the server answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise _Transient(f"cannot reach it ({getattr(exc, 'reason', exc)})") from None
    return shown_url(d.url)


def _to_volume(d: Delivery, archive: Path, sha256: str) -> str:
    """Into the volume's directory, walked without following any link, written under a
    temporary name and renamed: a reader never sees half an archive."""
    from stardock_hpc.jobs.binds import BindError, open_beneath

    assert d.root is not None
    try:
        dirfd = open_beneath(Path(d.root), d.sub, f"--deliver {d.dest}")
    except BindError as exc:
        raise _Permanent(str(exc)) from None
    try:
        name = archive.name
        for final, data in ((name, None), (f"{name}.sha256", f"{sha256}  {name}\n".encode())):
            tmp = f".{final}.{os.getpid()}.part"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dirfd)
            try:
                with os.fdopen(fd, "wb") as out:
                    if data is None:
                        with open(archive, "rb") as src:
                            for chunk in iter(lambda: src.read(CHUNK), b""):
                                out.write(chunk)
                    else:
                        out.write(data)
                os.rename(tmp, final, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dirfd)
                except OSError:
                    pass
                raise
    finally:
        os.close(dirfd)
    return str(Path(d.root).joinpath(*[p for p in d.sub.split("/") if p], archive.name))


def to_json(items: Sequence) -> List[Dict]:
    return [asdict(i) for i in items]
