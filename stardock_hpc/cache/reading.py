"""Reading the cache: entries judged on the directory opened, trusted by their real owner, and
used only while their artifact matches its digest; removing an entry of one's own."""
from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import secrets
import stat
from pathlib import Path
from typing import List, Optional, Tuple

from stardock_hpc.cache.entries import (
    ARTIFACTS,
    ENTRY_LOCK,
    ENTRY_RE,
    HEX64,
    LOCK_MAX,
    META,
    META_MAX,
    CacheError,
    Entry,
    Invalid,
    fd_digest,
    stat_token,
    user_name,
    validate_meta,
)
from stardock_hpc.cache.layout import Layout
from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.safefs import (
    FILE_FLAGS,
    Unsafe,
    open_dir_at,
    opened,
    printable,
    read_regular,
    remove_at,
)


class PrivateEntry(Invalid):
    """Another user's private entry: theirs alone, neither used nor listed."""


class Reader(Layout):
    """Finding, trusting and checking entries; removing one."""

    # --- trust --------------------------------------------------------------------------------
    def trusted(self, owner: int) -> bool:
        """Whether this user runs entries of owner: their own, root's, the site's trusted builders'."""
        return owner == self.uid or self.trusted_builder(owner)

    def trusted_builder(self, owner: int) -> bool:
        """Whether everybody runs entries of owner: root, or a builder the site trusts."""
        if owner == 0:
            return True
        try:
            pw = pwd.getpwuid(owner)
        except KeyError:
            return False
        if pw.pw_name in self.trust.users:
            return True
        for group in self.trust.groups:
            try:
                g = grp.getgrnam(group)
            except KeyError:
                continue
            if pw.pw_name in g.gr_mem or pw.pw_gid == g.gr_gid:
                return True
        return False


    # --- reading ------------------------------------------------------------------------------
    def _read_entry(self, entries_fd: int, name: str) -> Entry:
        """The entry called name, judged on the directory opened (Invalid otherwise)."""
        m = ENTRY_RE.fullmatch(name)
        if not m:
            raise Invalid("its name is not <key>-u<uid>")
        try:
            fd = open_dir_at(entries_fd, name)
        except Unsafe:
            raise Invalid("it is a symbolic link or not a directory") from None
        except PermissionError:
            raise self._private(entries_fd, name, int(m.group("uid"))) from None
        except OSError as exc:
            raise Invalid(f"it cannot be opened ({exc.strerror})") from None
        with opened(fd):
            st = os.fstat(fd)
            if st.st_uid != int(m.group("uid")):
                raise Invalid(f"it is named for uid {m.group('uid')} but belongs to {user_name(st.st_uid)}")
            try:
                raw = read_regular(fd, META, META_MAX, owner=st.st_uid)
                meta = json.loads(raw.decode("utf-8"))
            except Unsafe as exc:
                raise Invalid(f"its meta.json {exc.why}") from None
            except OSError as exc:
                raise Invalid(f"its meta.json cannot be read ({exc.strerror})") from None
            except ValueError:
                raise Invalid("its meta.json is not JSON") from None
        return Entry(m.group("key"), self.dir("entries") / name, st.st_uid, validate_meta(meta, m.group("key")),
                     (st.st_dev, st.st_ino))

    @staticmethod
    def _private(entries_fd: int, name: str, uid: int) -> Invalid:
        """Why an entry we may not open is skipped: another user's private entry, or not one."""
        try:
            st = os.lstat(name, dir_fd=entries_fd)
        except OSError:
            return Invalid("it cannot be opened")
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            return PrivateEntry(f"it is private to its builder, {user_name(uid)}")
        return Invalid("it cannot be opened (permission denied)")

    def entry_at(self, path: Path) -> Optional[Entry]:
        """The valid entry at path (a directory in entries/), or None."""
        if path.parent != self.dir("entries"):
            return None
        try:
            with self._layout("entries") as fd:
                return self._read_entry(fd, path.name)
        except (Invalid, OSError, StardockError):
            return None

    def scan(self, prefix: str = "") -> Tuple[List[Entry], List[Tuple[str, str]]]:
        """Valid entries whose names start with prefix that this user may be offered (not another
        user's private ones, which are theirs alone: `images list` never names them), and (name,
        reason) for what was skipped otherwise."""
        found, skipped = self._scan(prefix)
        return [e for e in found if e.offered_to(self.uid)], skipped

    def _scan(self, prefix: str = "") -> Tuple[List[Entry], List[Tuple[str, str]]]:
        found, skipped = [], []
        try:
            with self._layout("entries") as fd:
                for name in sorted(n for n in os.listdir(fd) if n.startswith(prefix)):
                    try:
                        entry = self._read_entry(fd, name)
                    except PrivateEntry:
                        continue
                    except Invalid as exc:
                        skipped.append((name, str(exc)))
                        continue
                    found.append(entry)
        except FileNotFoundError:
            pass  # not set up yet: no entries
        return found, skipped

    def entries(self) -> List[Entry]:
        """Every valid entry this user can read (pruning: root's reaches private ones too)."""
        return self._scan()[0]

    def candidates(self, key: str) -> List[Entry]:
        """Valid entries for key, the user's own first, then other trusted builders'."""
        if not HEX64.fullmatch(key):
            return []
        found = [e for e in self.scan(f"{key}-u")[0] if self.trusted(e.owner)]
        return sorted(found, key=lambda e: e.owner != self.uid)

    def artifact_problem(self, entry: Entry, sha256: Optional[str] = None) -> Optional[str]:
        """None when entry's artifact is a regular file of the entry's owner, inside the entry,
        matching its recorded digest (or sha256); else what is wrong."""
        return self._file_problem(entry, ARTIFACTS[entry.engine], "artifact", sha256)

    def run_form_problem(self, entry: Entry) -> Optional[str]:
        """The same for the form a node runs in place (a Podman entry's image.sqfs), if it has one."""
        if not entry.meta.get("run_form"):
            return None
        return self._file_problem(entry, entry.meta["run_form"], "run_form", None)

    def _file_problem(self, entry: Entry, name: str, field: str, sha256: Optional[str]) -> Optional[str]:
        want = sha256 or entry.meta.get(f"{field}_sha256")
        what = "artifact" if field == "artifact" else "run form"
        try:
            with self._layout("entries") as efd, opened(open_dir_at(efd, entry.name)) as dfd:
                if os.fstat(dfd).st_uid != entry.owner:
                    return f"{entry.name} no longer belongs to {entry.owner_name}"
                try:
                    fd = os.open(name, FILE_FLAGS, dir_fd=dfd)
                except OSError as exc:
                    return f"its {what} {name} cannot be opened ({exc.strerror})"
                with opened(fd):
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode) or st.st_uid != entry.owner:
                        return f"its {what} {name} is not a regular file of {entry.owner_name}"
                    if want == entry.meta.get(f"{field}_sha256") and stat_token(st) == entry.meta.get(f"{field}_stat"):
                        return None  # unchanged since its (trusted) owner recorded both
                    if fd_digest(fd) != want:
                        return f"its {what} {name} no longer matches the recorded digest"
            return None
        except (OSError, CacheError) as exc:
            return f"it cannot be checked ({getattr(exc, 'strerror', None) or exc})"

    def read_lock(self, entry: Entry) -> Optional[str]:
        """The entry's stardock.lock, exactly as its builder recorded it (its digest is in
        meta.json), or None when the entry has none (built before locks existed)."""
        want = entry.meta.get("lock_sha256")
        if not want:
            return None
        try:
            with self._layout("entries") as efd, opened(open_dir_at(efd, entry.name)) as dfd:
                raw = read_regular(dfd, ENTRY_LOCK, LOCK_MAX, owner=entry.owner)
        except Unsafe as exc:
            raise CacheError(f"{entry.name}: its {ENTRY_LOCK} {exc.why}") from None
        except OSError as exc:
            raise CacheError(f"{entry.name}: its {ENTRY_LOCK} cannot be read ({exc.strerror})") from None
        if hashlib.sha256(raw).hexdigest() != want:
            raise CacheError(f"{entry.name}: its {ENTRY_LOCK} no longer matches the recorded digest")
        return raw.decode()

    def verify(self, entry: Entry) -> bool:
        return self.artifact_problem(entry) is None

    def lookup(self, key: str) -> Optional[Entry]:
        for entry in self.candidates(key):
            if self.verify(entry):
                return entry
        return None

    def find(self, key_prefix: str) -> Entry:
        """An entry by (a prefix of) its key, as `stardock images inspect` takes it. Only valid
        entries count; skipped ones that match are named with the reason."""
        shown = printable(key_prefix, 80)
        entries, skipped = self.scan() if not key_prefix else self.scan(key_prefix[:64])
        matches = [e for e in entries if e.name.startswith(key_prefix)]
        keys = {e.key for e in matches}
        if len(keys) > 1:
            raise UsageError(f"{shown!r} matches {len(keys)} images; give more of the key")
        if not matches:
            why = "".join(f"\n  entries/{printable(n, 90)} was skipped: {r}" for n, r in skipped[:5])
            raise UsageError(f"no image in {self.root} has a key starting with {shown!r}{why}",
                             hint="`stardock images` lists them")
        trusted = [e for e in matches if self.trusted(e.owner)]
        return sorted(trusted or matches, key=lambda e: e.owner != self.uid)[0]

    def entry_for_run(self, path: Path, owner: int, artifact_sha256: str) -> Entry:
        """The entry at path for a job about to run it: a real directory of owner (the builder
        trusted at submission), recording artifact_sha256, whose artifact still matches it."""
        if path.parent != self.dir("entries"):
            raise CacheError(f"{path} is not an entry of the image cache {self.root}")
        m = ENTRY_RE.fullmatch(path.name)
        if not m or int(m.group("uid")) != owner:
            raise CacheError(f"{printable(path)} is not the name of an entry of uid {owner}")
        try:
            with self._layout("entries") as efd:
                entry = self._read_entry(efd, path.name)
        except FileNotFoundError:
            raise CacheError(f"the image cache {self.root} has no entries directory") from None
        except Invalid as exc:
            raise CacheError(f"the image {printable(path)} is not usable: {exc}") from None
        if entry.owner != owner:
            raise CacheError(f"the image {path} now belongs to {entry.owner_name}, not to uid {owner}")
        if not entry.offered_to(self.uid):
            raise CacheError(f"the image {path} is private to its builder, {entry.owner_name}")
        if entry.meta["artifact_sha256"] != artifact_sha256:
            raise CacheError(f"the image {path} records another artifact than the one submitted")
        problem = self.artifact_problem(entry, artifact_sha256) or self.run_form_problem(entry)
        if problem:
            raise CacheError(f"the image {path} is not usable: {problem}")
        return entry


    # --- removing -------------------------------------------------------------------------------
    def remove(self, entry: Entry) -> None:
        """Delete exactly the entry decided on: opened without following links and checked to be
        that directory, moved out of entries/ (so it never looks half there), then removed
        without following any link inside."""
        if entry.owner != self.uid and self.uid != 0:
            raise CacheError(f"{entry.name} belongs to {entry.owner_name}; only they (or root) can remove it")
        with self._layout("entries") as efd:
            self._move_aside_and_remove(efd, entry.name, entry.ident, entry.owner)

    def _move_aside_and_remove(self, efd: int, name: str, ident: Tuple[int, int],
                               owner: Optional[int] = None) -> None:
        try:
            fd = open_dir_at(efd, name)
        except (Unsafe, FileNotFoundError):
            raise CacheError(f"entries/{printable(name)} is no longer the entry chosen; nothing was removed") \
                from None
        with opened(fd):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != ident or (owner is not None and st.st_uid != owner):
                raise CacheError(f"entries/{printable(name)} changed since it was chosen; nothing was removed")
            if st.st_uid == os.geteuid():  # moving a directory to another parent needs it writable
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)  # and opens it to nobody new
            with self._layout("tmp") as tfd:
                aside = f"{name}.removing.{secrets.token_hex(8)}"
                try:
                    os.rename(name, aside, src_dir_fd=efd, dst_dir_fd=tfd)
                except OSError as exc:
                    raise CacheError(f"cannot remove entries/{printable(name)}: {exc.strerror}") from None
                # The owner of the entry alone could have swapped the name meanwhile; whatever
                # was moved is theirs and inside the cache, and it goes without following links.
                remove_at(tfd, aside)
