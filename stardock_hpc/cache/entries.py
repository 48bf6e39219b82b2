"""What an entry of the cache is: its name, its metadata (validated, never trusted as text)
and the model the rest of stardock uses."""
from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from stardock_hpc.errors import StardockError
from stardock_hpc.patterns import NAME_RE
from stardock_hpc.safefs import (
    printable,
)

SUBDIRS = ("entries", "tmp", "locks", "used", "inuse")
META = "meta.json"
META_MAX = 1 << 20
ENTRY_LOCK = "stardock.lock"  # the entry's lock (what the image holds, lockfile.py), its digest in meta.json
LOCK_MAX = 8 << 20
ARTIFACTS = {"podman": "image.oci.tar", "apptainer": "image.sif"}  # engines/*.artifact_name (unit-tested)
ENTRY_RE = re.compile(r"(?P<key>[0-9a-f]{64})-u(?P<uid>[0-9]{1,10})(?:\.(?P<suffix>[0-9a-z]{1,32}))?")
STAGE_RE = re.compile(r"(?P<key>[0-9a-f]{64})-u(?P<uid>[0-9]{1,10})\..+")
JOB_RE = re.compile(r"[0-9]{1,20}(?:[_+][0-9]{1,20})?")
TAG_RE = re.compile(rf"localhost/stardock/{NAME_RE}:[0-9a-f]{{16}}")
HEX64 = re.compile(r"[0-9a-f]{64}")
def image_tag(name: str, key: str) -> str:
    """Podman's local name for an entry's image (the name meta.json's image_tag must have)."""
    return f"localhost/stardock/{name}:{key[:16]}"


# Who may read an entry (visibility.py decides it when building): everybody, or its builder alone.
# Its modes are set before the entry is published; an entry recorded before visibility existed
# was published readable by all (0555), and counts as public.
PUBLIC, PRIVATE = "public", "private"
ENTRY_MODES = {PUBLIC: (0o555, 0o444), PRIVATE: (0o500, 0o400)}  # (directory, files)
REASON_MAX = 4096

STAGE_LOCK = ".stardock-build.lock"
Say = Optional[Callable[[str], None]]


class CacheError(StardockError):
    pass


class Invalid(Exception):
    """What was found under the cache is not an entry stardock made (the reason is the message)."""


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    owner: int
    meta: Dict
    ident: Tuple[int, int] = field(default=(0, 0), compare=False)  # (st_dev, st_ino) when read

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def engine(self) -> str:
        return self.meta["engine"]

    @property
    def artifact(self) -> Path:
        return self.path / ARTIFACTS[self.meta["engine"]]

    @property
    def owner_name(self) -> str:
        return user_name(self.owner)

    @property
    def visibility(self) -> str:
        return self.meta.get("visibility") or PUBLIC

    def offered_to(self, uid: int) -> bool:
        """Whether uid may be offered this entry at all (a private one is its builder's alone)."""
        return self.owner == uid or self.visibility != PRIVATE


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def stat_token(st: os.stat_result) -> List[int]:
    """What changes whenever the file's content can have changed. ctime cannot be set back by
    a user, so a matching token spares re-hashing a large artifact on every use."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def fd_digest(fd: int) -> str:
    import hashlib  # only when a stat token does not match: jobs and hits seldom hash

    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)


RUN_FORMS = {"podman": "image.sqfs"}  # what a node runs in place, beside the artifact


def _validate_run_form(meta: Dict, engine: str) -> None:
    form = meta.get("run_form")
    if form is None:
        return
    if form != RUN_FORMS.get(engine):
        raise Invalid(f"its run_form {printable(form, 80)} is not {RUN_FORMS.get(engine, 'allowed')} in the entry")
    if not isinstance(meta.get("run_form_sha256"), str) or not HEX64.fullmatch(meta["run_form_sha256"]):
        raise Invalid("its run_form_sha256 is not a SHA-256 digest")
    token = meta.get("run_form_stat")
    if not (isinstance(token, list) and len(token) == 4 and all(isinstance(x, int) for x in token)):
        raise Invalid("its run_form_stat is not four integers")
    config = meta.get("image_config")
    env = config.get("Env") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not (env is None or (isinstance(env, list) and
                                                           all(isinstance(e, str) and "=" in e for e in env))):
        raise Invalid("its image_config is not the image's config (Env: a list of NAME=VALUE)")


def validate_meta(meta: object, key: str) -> Dict:
    """meta.json of the entry for key, or Invalid naming the first thing wrong with it."""
    if not isinstance(meta, dict):
        raise Invalid("its meta.json is not a JSON object")
    if meta.get("key") != key:
        raise Invalid("its meta.json records another key than its directory name")
    engine = meta.get("engine")
    if engine not in ARTIFACTS:
        raise Invalid(f"its engine {printable(engine, 40)} is none of {', '.join(ARTIFACTS)}")
    name = meta.get("name")
    if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
        raise Invalid(f"its name {printable(name, 60)} is not an environment name")
    if meta.get("artifact") != ARTIFACTS[engine]:
        raise Invalid(f"its artifact {printable(meta.get('artifact'), 80)} is not {ARTIFACTS[engine]} in the entry")
    if not isinstance(meta.get("artifact_sha256"), str) or not HEX64.fullmatch(meta["artifact_sha256"]):
        raise Invalid("its artifact_sha256 is not a SHA-256 digest")
    tag = meta.get("image_tag")
    if tag is not None and not (isinstance(tag, str) and TAG_RE.fullmatch(tag) and tag.endswith(":" + key[:16])):
        raise Invalid(f"its image_tag {printable(tag, 80)} is not stardock's tag for it")
    for number in ("created", "size", "build_seconds"):
        if number in meta and (not isinstance(meta[number], (int, float)) or isinstance(meta[number], bool)):
            raise Invalid(f"its {number} is not a number")
    stat_token = meta.get("artifact_stat")
    if stat_token is not None and not (isinstance(stat_token, list) and len(stat_token) == 4
                                       and all(isinstance(x, int) for x in stat_token)):
        raise Invalid("its artifact_stat is not four integers")
    _validate_run_form(meta, engine)
    visibility = meta.get("visibility")
    if visibility is not None and visibility not in ENTRY_MODES:
        raise Invalid(f"its visibility {printable(visibility, 40)} is none of {', '.join(ENTRY_MODES)}")
    reason = meta.get("visibility_reason")
    if reason is not None and not (isinstance(reason, str) and len(reason) <= REASON_MAX):
        raise Invalid(f"its visibility_reason is not a text of at most {REASON_MAX} characters")
    if (visibility is None) != (reason is None):
        raise Invalid("its visibility and visibility_reason go together")
    lock = meta.get("lock_sha256")
    if lock is not None and not (isinstance(lock, str) and HEX64.fullmatch(lock)):
        raise Invalid("its lock_sha256 is not a SHA-256 digest")
    if not isinstance(meta.get("apps", []), list) or not all(isinstance(a, str) for a in meta.get("apps", [])):
        raise Invalid("its apps are not a list of names")
    return meta
