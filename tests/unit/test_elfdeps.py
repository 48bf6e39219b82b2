"""The ELF reader of `stardock deps` (elfdeps.py), checked against binutils' readelf on this
machine's own programs and libraries, and against damaged and hostile files."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stardock_hpc.elfdeps import NotElf, elf_files, read_elf
from stardock_hpc.errors import UsageError

SAMPLES = ["/usr/bin/python3", "/usr/bin/ls", "/bin/sh", "/usr/bin/ssh", "/usr/sbin/ldconfig"]
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")


def readelf(path: str) -> dict:
    out = subprocess.run(["readelf", "-W", "-l", "-d", path], capture_output=True, text=True).stdout
    interp = re.search(r"\[Requesting program interpreter: (.*)\]", out)
    soname = re.search(r"\(SONAME\).*\[(.*)\]", out)
    runpath = re.search(r"\((?:RUNPATH|RPATH)\).*\[(.*)\]", out)
    return {"interpreter": interp.group(1) if interp else None,
            "needed": tuple(re.findall(r"\(NEEDED\).*\[(.*)\]", out)),
            "soname": soname.group(1) if soname else None,
            "runpath": tuple(p for p in runpath.group(1).split(":") if p) if runpath else ()}


def samples() -> list:
    libs = sorted(p for p in LIBDIR.glob("lib*.so.*") if p.is_file() and not p.is_symlink())[:40]
    return [p for p in SAMPLES if Path(p).exists()] + [str(p) for p in libs]


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils' readelf is not installed")
@pytest.mark.parametrize("path", samples())
def test_reads_what_readelf_reads(path):
    info = read_elf(Path(path))
    assert {"interpreter": info.interpreter, "needed": info.needed, "soname": info.soname,
            "runpath": info.runpath} == readelf(path)
    assert info.machine == "x86_64" and info.bits == 64


def test_a_program_we_build_with_a_runpath_and_a_32_bit_like_header(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "lib.c").write_text("int answer(void) { return 42; }\n")
    (tmp_path / "main.c").write_text("int answer(void);\nint main(void) { return answer() - 42; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libanswer.so.3", "-o", tmp_path / "libanswer.so.3",
                    tmp_path / "lib.c"], check=True)
    subprocess.run(["gcc", "-o", tmp_path / "prog", tmp_path / "main.c", tmp_path / "libanswer.so.3",
                    "-Wl,-rpath,$ORIGIN/lib:/opt/x", "-Wl,--enable-new-dtags"], check=True)
    prog, lib = read_elf(tmp_path / "prog"), read_elf(tmp_path / "libanswer.so.3")
    assert prog.needed == ("libanswer.so.3", "libc.so.6") and prog.runpath == ("$ORIGIN/lib", "/opt/x")
    assert prog.interpreter == "/lib64/ld-linux-x86-64.so.2" and not prog.static
    assert lib.soname == "libanswer.so.3" and lib.interpreter is None
    found = sorted(Path(i.path).name for i in elf_files([tmp_path]))
    assert found == ["libanswer.so.3", "prog"]  # the C sources are skipped


def test_scripts_and_data_are_not_elf(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(NotElf):
        read_elf(script)
    assert list(elf_files([script])) == []
    with pytest.raises(UsageError, match="no such file"):
        list(elf_files([tmp_path / "missing"]))


def test_a_truncated_elf_file_is_a_clear_error(tmp_path):
    data = Path("/usr/bin/ls").read_bytes()
    for cut in (20, 64, 200, 1000):
        bad = tmp_path / f"cut{cut}"
        bad.write_bytes(data[:cut])
        with pytest.raises(UsageError, match="damaged ELF file"):
            read_elf(bad)


def test_a_string_table_pointing_anywhere_is_refused(tmp_path):
    """A hostile dynamic section (string offsets past the table, a table outside the file) ends
    in one clear error, never in reading memory or the whole disk."""
    data = bytearray(Path("/usr/bin/ls").read_bytes())
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 32)[0], *struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _flags, offset = struct.unpack_from("<IIQ", data, phoff + i * phentsize)
        if p_type == 2:  # PT_DYNAMIC: make every DT_NEEDED point far away
            for at in range(offset, offset + 16 * 64, 16):
                tag = struct.unpack_from("<q", data, at)[0]
                if tag == 1:
                    struct.pack_into("<Q", data, at + 8, 1 << 40)
    bad = tmp_path / "hostile"
    bad.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="damaged ELF file"):
        read_elf(bad)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=512), st.integers(min_value=0, max_value=4000))
def test_random_bytes_after_an_elf_header_never_crash(tmp_path, noise, at):
    data = bytearray(Path("/bin/sh").read_bytes()[:4096])
    data[at:at + len(noise)] = noise
    path = tmp_path / "fuzz"
    path.write_bytes(bytes(data))
    try:
        read_elf(path)
    except (NotElf, UsageError):
        pass
