"""Batch scripts as sbatch reads them: the comment block at the top (the header), its #SBATCH and
#STARDOCK directives, and what sbatch refuses in a script.

The header is copied into the host part of the job script, so it is decided as bash reads it,
not as Python would: lines end at "\n" only, and a header line is blank or a comment after
nothing but spaces and tabs. sbatch 22.05 (src/sbatch/opt.c, _opt_batch_script) skips any C
isspace() byte before "#", so a line such as "\v# x" is a comment to sbatch but a command to
bash; a script where sbatch would go on reading #SBATCH lines past such a line is refused rather
than read two ways. Scripts with NUL bytes or DOS line breaks are refused as sbatch refuses them
(src/sbatch/sbatch.c, _get_script_buffer).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.fsutil import read_text
from stardock_hpc.slurm.options import Option, parse_options

WRAP_SHEBANG = "#!/bin/sh"
# A line bash reads as a comment or a blank line, and nothing else: bash skips only spaces and
# tabs before "#", and a comment ends at "\n". CR and NUL are kept out of the host part as well.
HOST_LINE = re.compile(r"[ \t]*(?:#[^\n\r\0]*)?")
# What sbatch skips before "#" when it decides where its directives stop (C isspace()), and the
# words that make a line a directive to it wherever the line is in its comment block.
SBATCH_SPACE = " \t\n\v\f\r"
SBATCH_MAGIC = ("#SBATCH", "#SLURM")
NULL_MESSAGE = "contains a NULL character '\\0', which the Slurm controller does not allow in a script"


@dataclass
class Script:
    path: Optional[Path]          # None for --wrap
    text: str
    header: List[str]             # the comment block after the shebang, as bash reads it (kept verbatim)
    sbatch_lines: List[Tuple[int, List[Option]]] = field(default_factory=list)
    stardock_tokens: List[Tuple[int, List[str]]] = field(default_factory=list)


def wrap_script(command: str) -> Script:
    """The script `sbatch --wrap CMD` makes (it has no header)."""
    if "\0" in command:  # sbatch checks no --wrap text, but no NUL gets through argv to it either
        raise UsageError(f"stardock sbatch: the --wrap command {NULL_MESSAGE}")
    return Script(None, f"{WRAP_SHEBANG}\n# This script was created by stardock sbatch --wrap.\n\n{command}\n", [])


def read_script(path: Path) -> Script:
    text = read_text(path, "batch script")
    if not text.startswith("#!"):
        raise UsageError(f"{path}:1: this does not look like a batch script: the first line must start "
                         "with #! followed by the path to an interpreter (as sbatch requires)")
    check_text(text, str(path))
    return parse_script(text, path)


def check_text(text: str, where: str) -> None:
    """Refuse what sbatch refuses in a script file, in its order: NUL bytes, then DOS line breaks."""
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise UsageError(f"{where}:{line}: the batch script {NULL_MESSAGE} (sbatch refuses it)")
    if "\r\n" in text:
        line = text.count("\n", 0, text.index("\r\n")) + 1
        raise UsageError(f"{where}:{line}: the batch script contains DOS line breaks (\\r\\n) instead of "
                         "expected UNIX line breaks (\\n) (sbatch refuses it)",
                         hint=f"convert it: dos2unix {shlex.quote(where)}")


def script_lines(text: str) -> List[str]:
    """The lines of a script as bash and sbatch see them: split at "\n" only (str.splitlines also
    splits at \v, \f, \x1c-\x1e, \x85, U+2028, U+2029 and \r, which bash reads as plain bytes)."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def is_host_line(line: str) -> bool:
    """Whether bash reads the line as a comment or a blank line (so it may stand outside the container)."""
    return HOST_LINE.fullmatch(line) is not None


def _why_not_plain(line: str) -> str:
    """Why a line that sbatch reads as a comment is kept out of the host part."""
    if "\r" in line:
        return "contains a carriage return (\\r)"
    if "\0" in line:
        return "contains a NULL character"
    first = line.lstrip(" \t")[0]
    return f"starts with U+{ord(first):04X} {first!r}, so bash runs it as a command"


def _check_sbatch_agrees(lines: List[str], end: int, where: str) -> None:
    """Refuse a script where sbatch would read #SBATCH lines past lines[end], the line that ends the
    header as bash reads it: those directives would be read one way by sbatch on the user's script and
    another on the job script, and the line cannot go outside the container to keep them together."""
    for i in range(end, len(lines)):
        if lines[i].startswith(SBATCH_MAGIC):
            word = next(m for m in SBATCH_MAGIC if lines[i].startswith(m))
            then = "" if i == end else f"; sbatch reads it as a comment and goes on to the {word} line {i + 1}"
            raise UsageError(f"{where}:{end + 1}: this line {_why_not_plain(lines[end])}{then}, but only plain "
                             "comment lines stay outside the container, where Slurm reads the directives",
                             hint="write comment lines as # after nothing but spaces and tabs, without \\r")
        if lines[i].split("\0", 1)[0].lstrip(SBATCH_SPACE)[:1] not in ("", "#"):
            return  # sbatch stops reading directives here as well


def shell_words(text: str) -> List[str]:
    """The words of a #STARDOCK line as bash splits the same words typed on the command line: a
    comment starts at a '#' that begins a word, not inside one (shlex's comments=True would cut
    `URL#sha256=HEX` at its '#' and drop the pin without a word)."""
    quote, at_word_start, i = "", True, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"':
                i += 1
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c == "#" and at_word_start:
            text = text[:i]
            break
        at_word_start = not quote and c in " \t" and text[i - 1:i] != "\\"
        i += 1
    return shlex.split(text, comments=False)


def parse_script(text: str, path: Optional[Path], name: Optional[str] = None) -> Script:
    """The header and directives of a batch script's text (also of a rendered job script, whose
    header is the user's, verbatim: the backends that do not run sbatch read it from there)."""
    script = Script(path, text, [])
    lines = script_lines(text)
    end = 1
    while end < len(lines) and is_host_line(lines[end]):
        end += 1  # the header is what bash skips as comments and blank lines
    _check_sbatch_agrees(lines, end, str(name or path or "the batch script"))
    for number, line in enumerate(lines[1:end], start=2):
        stripped = line.strip()
        script.header.append(line)
        for prefix in ("#SBATCH", "#STARDOCK"):
            if stripped.startswith(prefix) and stripped[len(prefix):len(prefix) + 1] in (" ", "\t"):
                where = f"{name or path}:{number}"
                try:
                    tokens = shlex.split(stripped[len(prefix):], comments=True) if prefix == "#SBATCH" else \
                        shell_words(stripped[len(prefix):])
                except ValueError as exc:
                    raise UsageError(f"{where}: cannot read the {prefix} line: {exc}") from None
                if prefix == "#SBATCH":
                    script.sbatch_lines.append((number, parse_options(tokens, where)))
                else:
                    script.stardock_tokens.append((number, tokens))
    return script
