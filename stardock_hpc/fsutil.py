"""Small file-system helpers: atomic writes, users' text files, the private runtime directory."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

from stardock_hpc.errors import UsageError


def write_atomic(path: Path, data: Union[str, bytes], mode: int = 0o644) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half."""
    import tempfile  # here: reading scripts and specs (the hot path) needs none of it
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_text(path: Path, what: str, max_bytes: Optional[int] = None) -> str:
    """A user's text file (spec, site config, recipe, batch script), or one UsageError naming
    the file and what is wrong with it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise UsageError(f"{path}: the {what} is {len(raw)} bytes; at most {max_bytes} are read")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: the {what} is not UTF-8 text (byte {exc.start})") from None


def private_runtime_dir(environ: Mapping[str, str]) -> Optional[Path]:
    """$XDG_RUNTIME_DIR when it is a real directory of the user's that nobody else can enter
    (memory, gone at logout), else None."""
    import stat

    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if not runtime.startswith("/"):
        return None
    try:
        st = os.lstat(runtime)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return Path(runtime)
