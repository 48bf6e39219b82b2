"""A job's inputs fetched before its container starts, and its outputs delivered when it ends
(Ahoy's wrapper; StarDock's data service).

`--input URL[=NAME]` (http, https; file only where the site allows it; `URL#sha256=HEX` pins
the digest): checked against the site's policy.inputs at submission and again on the node;
fetched there by the wrapper, outside the container (the container's own network policy still
holds), into a directory of the job's that the container sees read-only at <mount_root>/input.
Bounded retries with backoff, a size cap, the digest verified; a failure fails the job before the
container runs. Pinned inputs already fetched come from the user's download cache on the node
(jobs/downloads.py).

`--deliver DEST` (a directory on a writable site volume, NAME/SUB, or an http(s) URL to PUT to
where policy.deliveries allows it): parsed and checked here at submission; when the job ends,
whatever its state, the output directory is packed (tar.gz) and delivered with its digest
(jobs/deliveries.py); each result goes into the job's record.

A URL's user info is sent as HTTP Basic authentication to that URL's origin (never on to
another host a redirect names); every URL shown (logs, records, errors) is redacted (urls.py):
the whole URL is only in the job's launch.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.jobs import downloads
from stardock_hpc.urls import Target, host_allowed, redact_url, scrub, transfer_target

if TYPE_CHECKING:
    from stardock_hpc.site import DeliveriesPolicy, InputsPolicy

INPUT_NAME_RE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,254}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
INPUT_DIR = "input"             # <mount_root>/input in the container
CHUNK = 1 << 20
TIMEOUT = 60.0                  # seconds without progress before an attempt is given up
Log = Callable[[str], None]
Allowed = Tuple[Sequence[str], Sequence[str]]   # (schemes, hosts) of a site policy


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
        return redact_url(self.url)


@dataclass(frozen=True)
class Delivery:
    dest: str                       # as the user gave it (a URL redacted: it is shown)
    url: Optional[str] = None       # an http(s) URL to PUT to (whole: the transfer needs it)
    root: Optional[str] = None      # or a site volume's real directory ...
    sub: str = ""                   # ... and the real sub-path below it (no links)

    @classmethod
    def from_json(cls, data: Dict) -> Delivery:
        return cls(str(data["dest"]), data.get("url"), data.get("root"), str(data.get("sub") or ""))

    def shown(self) -> str:
        return redact_url(self.url) if self.url else self.dest


# --- at submission ------------------------------------------------------------------------------
def parse_input(text: str, policy: InputsPolicy) -> JobInput:
    """One --input: URL[=NAME], URL#sha256=HEX[=NAME]. Whatever it came from (the command line or
    a #STARDOCK line of a script someone else may have written), the site's policy.inputs holds."""
    where = f"--input {redact_url(text)!r}"
    if " " in text or not text.isprintable():
        raise UsageError(f"{where}: the URL holds spaces or control characters (quote them as %20 ...)")
    url, name = text, None
    head, sep, tail = text.rpartition("=")
    if sep and INPUT_NAME_RE.fullmatch(tail) and not head.endswith("#sha256") and _name_separator(head):
        url, name = head, tail
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"{where}: not a URL ({scrub(exc, [text])})") from None
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
        _check_host(where, parts, policy.hosts, "policy.inputs.hosts", True)
    if name is None:
        name = posixpath.basename(unquote(parts.path))
        if not INPUT_NAME_RE.fullmatch(name):
            raise UsageError(f"{where}: cannot name the file after the URL ({name!r}); add =NAME "
                             "(letters, digits, '.', '_', '+', '-')")
    plain = urlunsplit(parts._replace(fragment=""))
    return JobInput(plain, name, sha256)


def _check_host(where: str, parts, hosts: Sequence[str], key: str, empty_allows_all: bool) -> None:
    try:
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - a port that is not a number is an error now, not on the node
    except ValueError:
        raise UsageError(f"{where}: not a URL (its host or port cannot be read)") from None
    if not host:
        raise UsageError(f"{where}: the URL names no host")
    if not host_allowed(host, hosts, empty_allows_all):
        allowed = ", ".join(hosts) if hosts else "none"
        raise UsageError(f"{where}: the host {host!r} is not allowed here; allowed: {allowed} (site config: {key})")


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


def parse_delivery(text: str, volume_dest: Callable[[str], Tuple[str, str]], policy: DeliveriesPolicy) -> Delivery:
    """One --deliver: an http(s) URL to a host policy.deliveries lists, or NAME/SUB on a writable
    site volume (volume_dest checks it as a --mount NAME/SUB:rw and gives its real root and
    sub-path). Whether it came from the command line or a #STARDOCK line, the same rules hold."""
    if ":" in text.split("/", 1)[0]:  # a scheme (a volume's name holds no ':')
        where = f"--deliver {redact_url(text)!r}"
        if not text.isprintable() or " " in text:
            raise UsageError(f"{where}: no spaces or control characters in the URL (quote them as %20 ...)")
        try:
            parts = urlsplit(text)
        except ValueError as exc:
            raise UsageError(f"{where}: not a URL ({scrub(exc, [text])})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UsageError(f"{where}: a URL to deliver to is http:// or https:// (or give a volume's "
                             "NAME/SUB)")
        if scheme not in policy.schemes:
            raise UsageError(f"{where}: the scheme {scheme!r} is not allowed here; allowed: "
                             f"{', '.join(policy.schemes) or 'none'} (site config: policy.deliveries.schemes)")
        if parts.fragment or "#" in text:
            raise UsageError(f"{where}: no fragment in a URL to deliver to")
        _check_host(where, parts, policy.hosts, "policy.deliveries.hosts", False)
        return Delivery(redact_url(text), url=text)
    root, sub = volume_dest(text)
    return Delivery(text, root=root, sub=sub)


# --- on the node: inputs ------------------------------------------------------------------------
def size_cap(policy_bytes: str) -> int:
    from stardock_hpc.slurm.values import size_bytes
    return int(size_bytes(policy_bytes))


def allowed_here(url: str, allowed: Allowed, empty_allows_all: bool = True) -> bool:
    """Whether the site's policy (schemes, hosts) lets a job reach url: checked again on the node,
    whatever the launch says, and for every redirect."""
    schemes, hosts = allowed
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    except ValueError:
        return False
    if scheme not in schemes:
        return False
    return scheme == "file" or (bool(host) and host_allowed(host, hosts, empty_allows_all))


def fetch_inputs(inputs: Sequence[JobInput], dest: Path, cache: Optional[Path], max_bytes: int, retries: int,
                 log: Log, sleep: Callable[[float], None] = time.sleep,
                 allowed: Allowed = (("http", "https"), ()), cache_max: int = 0) -> List[Dict]:
    """Each input into dest (a directory of the job's), its digest checked; what each became (for
    the record). StagingError at the first that fails. allowed: the schemes and hosts of
    policy.inputs, for the input and any redirect (a server cannot send the job where the site
    does not let it go). cache_max: the bound of the download cache (0: none is kept)."""
    done: List[Dict] = []
    for item in inputs:
        if not allowed_here(item.url, allowed):
            raise StagingError(f"input {item.name} ({item.shown()}): the site does not let jobs fetch from there "
                               "(policy.inputs)")
        started = time.time()
        target = dest / item.name
        source = "cache" if item.sha256 and downloads.take(cache, item.sha256, target) else None
        attempts = 0
        digest = item.sha256 or ""
        if source is None:
            digest, attempts = _fetch(item, target, max_bytes, retries, log, sleep, allowed)
            source = "download"
            if item.sha256 and digest != item.sha256:
                target.unlink(missing_ok=True)
                raise StagingError(f"input {item.name} ({item.shown()}): its sha256 is {digest}, "
                                   f"not the {item.sha256} the job asked for")
            downloads.keep(cache, digest, target, cache_max, log)  # pinned by its digest next time
        size = target.stat().st_size
        log(f"input {item.name}: {size} bytes from {item.shown() if source == 'download' else 'the download cache'} "
            f"in {time.time() - started:.1f} s (sha256 {digest[:16]}...)")
        done.append({"name": item.name, "url": item.shown(), "bytes": size, "sha256": digest, "source": source,
                     "attempts": attempts})
    return done


def _fetch(item: JobInput, target: Path, max_bytes: int, retries: int, log: Log,
           sleep: Callable[[float], None], allowed: Allowed) -> Tuple[str, int]:
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            delay = min(2.0 ** (attempt - 1), 30.0)
            log(f"input {item.name}: {last}; trying again in {delay:.0f} s (attempt {attempt + 1} of {retries + 1})")
            sleep(delay)
        try:
            return _download(item, target, max_bytes, allowed, log), attempt + 1
        except Permanent as exc:
            raise StagingError(f"input {item.name} ({item.shown()}): {scrub(exc, [item.url])}") from None
        except Transient as exc:
            last = scrub(exc, [item.url])
    raise StagingError(f"input {item.name} ({item.shown()}): {last} (gave up after {retries + 1} attempts)")


class Transient(Exception):
    """Worth another attempt (a network error, a server error)."""


class Permanent(Exception):
    """Not worth another (404, too large, not a file)."""


def opener(allowed: Allowed, target: Target, empty_allows_all: bool = True):
    """urllib's opener, whose redirects go only where the site's policy lets a job go, and carry
    the URL's credentials only to its own origin (never to another host, nor from https to http)."""
    import urllib.request

    class Checked(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            parts = urlsplit(newurl)
            if "@" in parts.netloc:  # a server's credentials are never used
                newurl = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
            if parts.scheme.lower() not in ("http", "https") or not allowed_here(newurl, allowed, empty_allows_all):
                raise Permanent(f"the server sent it on to {redact_url(newurl)}, where the site does not let "
                                 "jobs go (policy.inputs, policy.deliveries)")
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and target.auth and target.same_origin(newurl):
                new.add_unredirected_header("Authorization", target.auth)
            return new

    return urllib.request.build_opener(Checked)


def request_for(url: str, method: str = "GET", data=None, headers: Optional[Dict[str, str]] = None):
    """The request for url (its user info taken out) and the target it was made for."""
    import urllib.request

    target = transfer_target(url)
    request = urllib.request.Request(target.url, data=data, method=method,
                                     headers={"User-Agent": "stardock-hpc", **(headers or {})})
    if target.auth:  # unredirected: urllib never copies it to a redirect's request (Checked decides)
        request.add_unredirected_header("Authorization", target.auth)
    return request, target


PROGRESS_EVERY = 10.0   # seconds between progress lines of a long download, in the job's log


def _download(item: JobInput, target: Path, max_bytes: int, allowed: Allowed,
              log: Log = lambda _m: None, clock: Callable[[], float] = time.monotonic) -> str:
    import http.client
    import urllib.error

    part = target.with_name(f".{target.name}.part")
    h = hashlib.sha256()
    total = 0
    try:
        if item.url.startswith("file:"):
            path = unquote(urlsplit(item.url).path)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError as exc:
                raise Permanent(f"cannot read {path} ({exc.strerror})") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise Permanent(f"{path} is not a regular file")
            src = os.fdopen(fd, "rb")
            length = os.fstat(fd).st_size
        else:
            try:
                request, where = request_for(item.url)
                src = opener(allowed, where).open(request, timeout=TIMEOUT)
            except urllib.error.HTTPError as exc:
                kind = Transient if exc.code >= 500 or exc.code in (408, 429) else Permanent
                raise kind(f"the server answered {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
                raise Transient(f"cannot reach it ({getattr(exc, 'reason', exc)})") from None
            try:
                length = int(src.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
        if length > max_bytes:
            src.close()
            raise Permanent(f"{length} bytes, more than the site allows ({max_bytes}; policy.inputs.max_bytes)")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        next_line = clock() + PROGRESS_EVERY
        with src, os.fdopen(fd, "wb") as out:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise Transient(f"the transfer broke off after {total} bytes ({exc})") from None
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise Permanent(f"more than the site allows ({max_bytes} bytes; policy.inputs.max_bytes)")
                h.update(chunk)
                out.write(chunk)
                if clock() >= next_line:
                    of = f" of {length >> 20} MiB" if length else ""
                    log(f"input {item.name}: {total >> 20} MiB{of} so far")
                    next_line = clock() + PROGRESS_EVERY
        if length and total != length:
            raise Transient(f"the transfer broke off after {total} of {length} bytes")
        os.chmod(part, 0o400)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return h.hexdigest()


def redacted_json(items: Sequence[Dict]) -> List[Dict]:
    """Inputs or deliveries as the launch carries them, their URLs redacted: `--dry-run` shows them
    so (a job script shown is a job script copied into a ticket or a chat)."""
    return [{k: redact_url(v) if k in ("url", "dest") and isinstance(v, str) else v for k, v in item.items()}
            for item in items]


def to_json(items: Sequence) -> List[Dict]:
    return [asdict(i) for i in items]
