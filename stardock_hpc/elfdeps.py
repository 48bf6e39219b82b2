"""What an ELF program or library needs to run: its interpreter and the shared libraries it names
(DT_NEEDED), read from the file itself the way the dynamic loader does (program headers, then the
dynamic section), without running it or any tool. `stardock deps` (deps.py) turns what a spec's
image lacks into Debian packages.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple

from stardock_hpc.errors import UsageError

ELF_MAGIC = b"\x7fELF"
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 21: "ppc64", 22: "s390", 243: "riscv"}
MAX_ENTRIES = 1 << 16   # program headers and dynamic entries read at most (a hostile file ends here)
MAX_NAME = 4096


class NotElf(Exception):
    """Not an ELF file (scripts, data): skipped, not an error."""


@dataclass(frozen=True)
class ElfInfo:
    path: str
    machine: str                     # x86_64, aarch64, ...
    bits: int                        # 32 or 64
    interpreter: Optional[str]       # the dynamic loader it asks for (programs only)
    needed: Tuple[str, ...]          # DT_NEEDED, in order
    soname: Optional[str]            # what a library calls itself
    runpath: Tuple[str, ...]         # DT_RUNPATH (or the older DT_RPATH), split at ':'

    @property
    def static(self) -> bool:
        return self.interpreter is None and not self.needed


def read_elf(path: Path) -> ElfInfo:
    """The dynamic dependencies of the ELF file at path; NotElf if it is none, UsageError if it is
    an ELF file too damaged to read."""
    try:
        with open(path, "rb") as fh:
            return _read(fh, str(path))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: a damaged ELF file ({exc})") from None


def _read(fh: BinaryIO, name: str) -> ElfInfo:
    ident = fh.read(16)
    if len(ident) < 16 or ident[:4] != ELF_MAGIC:
        raise NotElf(name)
    bits = {1: 32, 2: 64}.get(ident[4])
    order = {1: "<", 2: ">"}.get(ident[5])
    if bits is None or order is None:
        raise ValueError("unknown ELF class or byte order")
    size = fh.seek(0, os.SEEK_END)
    if bits == 64:
        header = _unpack(fh, 16, order + "HHIQQQIHHHHHH", size)
        _type, machine, _version, _entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum = header[:10]
        phdr = order + "IIQQQQQQ"
        dyn = order + "qQ"
    else:
        header = _unpack(fh, 16, order + "HHIIIIIHHHHHH", size)
        _type, machine, _version, _entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum = header[:10]
        phdr = order + "IIIIIIII"
        dyn = order + "iI"
    if phnum > MAX_ENTRIES or (phnum and phentsize < struct.calcsize(phdr)):
        raise ValueError("bad program header table")
    loads: List[Tuple[int, int, int]] = []   # (vaddr, offset, filesz)
    dynamic: Optional[Tuple[int, int]] = None
    interpreter: Optional[str] = None
    for i in range(phnum):
        fields = _unpack(fh, phoff + i * phentsize, phdr, size)
        if bits == 64:
            p_type, _pflags, offset, vaddr, _paddr, filesz = fields[:6]
        else:
            p_type, offset, vaddr, _paddr, filesz = fields[:5]
        if p_type == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (offset, filesz)
        elif p_type == PT_INTERP:
            interpreter = _bytes(fh, offset, min(filesz, MAX_NAME), size).split(b"\0")[0].decode()
    needed_offsets: List[int] = []
    tags: Dict[int, int] = {}
    if dynamic is not None:
        offset, filesz = dynamic
        step = struct.calcsize(dyn)
        for i in range(min(filesz // step, MAX_ENTRIES)):
            tag, value = _unpack(fh, offset + i * step, dyn, size)
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED:
                needed_offsets.append(value)
            elif tag in (DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH):
                tags.setdefault(tag, value)
    needed: List[str] = []
    soname: Optional[str] = None
    runpath: Tuple[str, ...] = ()
    if DT_STRTAB in tags:
        strtab = _file_offset(tags[DT_STRTAB], loads)
        strsz = tags.get(DT_STRSZ, MAX_NAME)

        def string(at: int) -> str:
            if at >= strsz:
                raise ValueError("a name outside the string table")
            return _bytes(fh, strtab + at, min(MAX_NAME, strsz - at), size).split(b"\0")[0].decode()

        needed = [string(at) for at in needed_offsets]
        if DT_SONAME in tags:
            soname = string(tags[DT_SONAME])
        path_tag = DT_RUNPATH if DT_RUNPATH in tags else DT_RPATH if DT_RPATH in tags else None
        if path_tag is not None:
            runpath = tuple(p for p in string(tags[path_tag]).split(":") if p)
    return ElfInfo(name, MACHINES.get(machine, f"machine-{machine}"), bits, interpreter, tuple(needed), soname,
                   runpath)


def _unpack(fh: BinaryIO, offset: int, fmt: str, size: int) -> tuple:
    return struct.unpack(fmt, _bytes(fh, offset, struct.calcsize(fmt), size))


def _bytes(fh: BinaryIO, offset: int, length: int, size: int) -> bytes:
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError("a table past the end of the file")
    fh.seek(offset)
    return fh.read(length)


def _file_offset(vaddr: int, loads: List[Tuple[int, int, int]]) -> int:
    for start, offset, filesz in loads:
        if start <= vaddr < start + filesz:
            return vaddr - start + offset
    raise ValueError("the string table is in no loaded segment")


def elf_files(paths: List[Path]) -> Iterator[ElfInfo]:
    """The ELF files among paths and in the directories among them (links not followed into
    directories; scripts and data skipped)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    found = _maybe(Path(root) / name)
                    if found is not None:
                        yield found
        elif path.exists():
            found = _maybe(path)
            if found is not None:
                yield found
        else:
            raise UsageError(f"{path}: no such file or directory")


def _maybe(path: Path) -> Optional[ElfInfo]:
    if not path.is_file():
        return None
    try:
        return read_elf(path)
    except NotElf:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None
