"""URLs as stardock shows them, and the credentials a URL carries to its transfer.

A URL a user gives (--input, --deliver) may carry secrets: a user and password before the host,
a token or a signature in its query (`?X-Amz-Signature=...`), something in its fragment. Logs,
records, `stardock status` and error messages end up in files others can read (slurm-N.out is
0644 in the submit directory by default), so every URL shown goes through redact_url(); the
whole URL lives only in the job's launch, where the transfer needs it. There, the user info
becomes an HTTP Basic Authorization header (a URL's user info is not part of what urllib can
send: it would take it for the host) sent to that origin only.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

MARK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_HOSTPORT = re.compile(r"(?:\[[^\[\]/]*\]|[^:\[\]@/]*)(?::[0-9]*)?")
# what urllib.parse drops from a URL before reading it (so must we, or we would read another URL)
_DROPPED = {ord("\t"): None, ord("\r"): None, ord("\n"): None}
_EDGE = "".join(chr(c) for c in range(0x21))   # C0 controls and space, stripped at both ends


def redact_url(url: object) -> str:
    """url as it may be shown anywhere: its user info, query and fragment each replaced by ***
    (`https://***@host:443/path?***#***`); scheme, host, port and path kept. Never fails, whatever
    the text: an authority that is not a plain host[:port] is replaced whole. Idempotent."""
    text = str(url).translate(_DROPPED).strip(_EDGE)
    head, hash_, fragment = text.partition("#")
    head, question, query = head.partition("?")
    scheme = _SCHEME.match(head)
    start = scheme.end() if scheme else 0
    if head.startswith("//", start):
        begin = start + 2
        end = head.find("/", begin)
        end = len(head) if end < 0 else end
        authority = head[begin:end]
        userinfo, at, hostport = authority.rpartition("@")
        if not _HOSTPORT.fullmatch(hostport):
            hostport = MARK     # a password with a ':' or '/' left unencoded, or no URL at all
        authority = (MARK + "@" if at else "") + hostport
        head = head[:begin] + authority + head[end:]
    return head + (question and question + (MARK if query else "")) + (hash_ and hash_ + (MARK if fragment else ""))


_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/*[^\s]*")


def redact_urls_in(text: object) -> str:
    """text (a message, an option as typed: `--deliver=https://...`) with each URL in it redacted."""
    return _IN_TEXT.sub(lambda m: redact_url(m.group(0)), str(text))


def secrets_of(url: str) -> List[str]:
    """The parts of url that redact_url hides, as they may appear in another text (raw and
    percent-decoded), longest first."""
    text = url.translate(_DROPPED).strip(_EDGE)
    found = []
    try:
        parts = urlsplit(text)
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        found += [userinfo, parts.username or "", parts.password or "", parts.query, parts.fragment]
    except ValueError:
        pass
    head, _, fragment = text.partition("#")
    query = head.partition("?")[2]
    found += [fragment, query]
    found += [part.partition("=")[2] for part in re.split(r"[&;]", query)]  # each value alone too
    found += [unquote(s) for s in found]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def scrub(text: object, urls: Iterable[str]) -> str:
    """text (an error message from a transfer, which may quote the URL it failed on) without any
    secret part of urls; each URL itself shown redacted."""
    out = str(text)
    for url in urls:
        if url:
            out = out.replace(url, redact_url(url))
            for secret in secrets_of(url):
                out = out.replace(secret, MARK)
    return out


@dataclass(frozen=True)
class Target:
    """Where a transfer goes: the URL without its user info, and the Authorization header made
    of that user info (HTTP Basic), for the URL's own origin only."""

    url: str
    auth: Optional[str]
    origin: Tuple[str, str, int]

    def same_origin(self, url: str) -> bool:
        return origin(url) == self.origin


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> Tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; ('', '', 0) when it has none."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return "", "", 0


def transfer_target(url: str) -> Target:
    """The request's URL and credentials: `https://user:p%40ss@host/x` is sent to
    `https://host/x` with `Authorization: Basic base64(user:p@ss)` (user info percent-decoded)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return Target(url, None, origin(url))
    user, _, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    plain = urlunsplit(parts._replace(netloc=hostport))
    return Target(plain, "Basic " + base64.b64encode(pair).decode("ascii"), origin(plain))


def host_allowed(host: str, hosts: Sequence[str], empty_allows_all: bool = True) -> bool:
    """Whether a site list of hosts lets a job reach host: exact names, `*.domain` for any host
    below domain, `*` for any; an empty list allows any host or none (empty_allows_all)."""
    host = host.lower()
    if not hosts:
        return empty_allows_all
    return any(h == "*" or host == h or (h.startswith("*.") and host.endswith(h[1:]))
               for h in (h.lower() for h in hosts))
