"""Build secrets (the spec's `secrets:`): read when building, by the builder only, from a file of
the user's own or a variable of the build's environment; staged for the engine in a private
directory that goes with the build; masked in whatever the build prints.

A value never reaches a command line (the engine gets the staged file's path), the build context,
the rendered definition, the cache key (which names the secrets, not their values), the cache
entry or a log. What a build step itself does with it is the step's: a step that copies a value
into the image puts it there, and one that prints it transformed (base64, reversed) is not masked.
"""
from __future__ import annotations

import errno
import os
import pwd
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.fsutil import private_runtime_dir
from stardock_hpc.safefs import DIR_FLAGS, Unsafe, opened, read_regular
from stardock_hpc.spec import Secret

SECRET_MAX = 64 << 10     # a token, a key, a licence file: not a data set
MASK = "********"
MASK_MIN = 4              # shorter lines of a value are not masked: they would blot out the log
MAX_LINKS = 40            # as the kernel's limit on links followed in one lookup
ENGINE_UNSAFE = re.compile(r"[,:\s]")  # podman's --secret and apptainer's --bind split on these


@dataclass(frozen=True)
class SecretValue:
    id: str
    value: bytes


def source_path(secret: Secret, spec_dir: Path, uid: int) -> Path:
    """Where a file secret lives: ~/ is the user's own home (from the password database, not $HOME),
    a relative path is relative to the spec's directory."""
    assert secret.file is not None
    text = secret.file
    if text == "~" or text.startswith("~/"):
        return Path(pwd.getpwuid(uid).pw_dir) / text[2:]
    return Path(text) if text.startswith("/") else spec_dir / text


def read_values(secrets: Sequence[Secret], spec: Path, environ: Mapping[str, str],
                uid: Optional[int] = None) -> List[SecretValue]:
    """Every secret's value, checked; UsageError naming the spec and the secret otherwise."""
    uid = os.getuid() if uid is None else uid
    spec_dir = Path(os.path.abspath(spec)).parent
    values = []
    for secret in secrets:
        where = f"{spec}: secrets: {secret.id}"
        if secret.env is not None:
            if secret.env not in environ:
                raise UsageError(f"{where}: the variable {secret.env} is not set in the build's environment",
                                 hint=f"export {secret.env}=... before building (its value is never kept)")
            value = environ[secret.env].encode("utf-8", "surrogateescape")
        else:
            path = source_path(secret, spec_dir, uid)
            try:
                value = read_user_file(path, uid, SECRET_MAX)
            except Unsafe as exc:
                raise UsageError(f"{where}: {exc.filename} {exc.why}; it is not read",
                                 hint="a secret is a regular file of yours, reached through no link of "
                                 "another user's") from None
            except OSError as exc:
                raise UsageError(f"{where}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise UsageError(f"{where}: the value is empty")
        if len(value) > SECRET_MAX:
            raise UsageError(f"{where}: the value is {len(value)} bytes; at most {SECRET_MAX} are read")
        values.append(SecretValue(secret.id, value))
    return values


def read_user_file(path: Path, uid: int, max_bytes: int) -> bytes:
    """A regular file of uid's, at most max_bytes: walked from / one component at a time; its last
    component is never a link, and a link on the way is followed only when root or uid made it
    (planted links are no way to make the user read another file of theirs into a build)."""
    if not path.is_absolute():
        raise Unsafe(path, "is not an absolute path")
    todo = [p for p in path.parts[1:] if p]
    fd = os.open("/", DIR_FLAGS)
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == ".":
                continue
            st = os.lstat(name, dir_fd=fd)
            if stat.S_ISLNK(st.st_mode):
                if not todo:
                    raise Unsafe(path, "is a symbolic link")
                if st.st_uid not in (0, uid):
                    raise Unsafe(path, f"leads through a symbolic link of uid {st.st_uid} ({name})")
                links += 1
                if links > MAX_LINKS:
                    raise Unsafe(path, "leads through too many symbolic links")
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", DIR_FLAGS)
                todo = [p for p in target.split("/") if p] + todo
                continue
            if not todo:
                return read_regular(fd, name, max_bytes, owner=uid)
            try:
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Unsafe(path, f"{name} is not a directory (or changed meanwhile)") from None
                raise
            os.close(fd)
            fd = nxt
        raise Unsafe(path, "is not a file")
    finally:
        os.close(fd)


class Masker:
    """Replaces the values (and each line of a multi-line value) in text with MASK."""

    def __init__(self, values: Sequence[SecretValue]) -> None:
        words = set()
        for secret in values:
            text = secret.value.decode("utf-8", "replace")
            for word in [text, text.strip(), *text.splitlines(), *(line.strip() for line in text.splitlines())]:
                if len(word) >= MASK_MIN:
                    words.add(word)
        # the longest first: a line of a value must not break up the whole value
        self.pattern = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))) \
            if words else None

    def __call__(self, text: str) -> str:
        return self.pattern.sub(MASK, text) if self.pattern is not None and text else text

    def error(self, exc: StardockError) -> None:
        """Mask an error's text in place (a failed build's message carries its last lines)."""
        exc.message = self(exc.message)
        exc.args = (exc.message,)
        if exc.hint:
            exc.hint = self(exc.hint)
        if isinstance(getattr(exc, "output", None), str):
            exc.output = self(exc.output)  # type: ignore[attr-defined]  # BuildFailed's


@contextmanager
def staged(values: Sequence[SecretValue], environ: Mapping[str, str]) -> Iterator[Dict[str, Path]]:
    """{id: file} for the engine: each value in a 0400 file of a fresh 0700 directory (in the user's
    runtime directory, which is memory, when there is a private one), removed after the build
    whatever happens; those of builds killed too hard to clean up go at the next build."""
    if not values:
        yield {}
        return
    from stardock_hpc.engines.podman import private_tmpdir
    from stardock_hpc.safefs import remove_tree

    runtime = private_runtime_dir(environ)
    parent = str(runtime) if runtime is not None and not ENGINE_UNSAFE.search(str(runtime)) else "/tmp"

    def remove(path: Path) -> None:
        try:
            remove_tree(path)
        except OSError:
            pass

    with private_tmpdir("stardock-secrets-", parent, remove) as tmp:
        if ENGINE_UNSAFE.search(str(tmp)):
            raise UsageError(f"cannot stage the build's secrets in {tmp}: the engines split paths on ',' and ':'")
        directory = tmp / "secrets"
        directory.mkdir(mode=0o700)
        with opened(os.open(directory, DIR_FLAGS)) as dfd:
            files = {}
            for secret in values:
                fd = os.open(secret.id, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400,
                             dir_fd=dfd)
                with opened(fd):
                    view = memoryview(secret.value)
                    while view:
                        view = view[os.write(fd, view):]
                files[secret.id] = directory / secret.id
        yield files
