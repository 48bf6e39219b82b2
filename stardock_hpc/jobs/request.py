"""What `stardock sbatch ...` asks for: stardock's own options, sbatch's options (kept exactly as
given), the script and its arguments, and the #SBATCH / #STARDOCK directives of the script.

sbatch's rules are followed: options end at the first word that is not an option (the script);
everything after it belongs to the script. Directives are read from the comment block at the top
of the script and stop at its first command. stardock's option names collide with none of
sbatch's (nor with an abbreviation of one).

The comment block (the header) is copied into the host part of the job script, so it is decided
as bash reads it, not as Python would: lines end at "\n" only, and a header line is blank or a
comment after nothing but spaces and tabs. sbatch 22.05 (src/sbatch/opt.c, _opt_batch_script)
skips any C isspace() byte before "#", so a line such as "\v# x" is a comment to sbatch but a
command to bash; a script where sbatch would go on reading #SBATCH lines past such a line is
refused rather than read two ways. Scripts with NUL bytes or DOS line breaks are refused as
sbatch refuses them (src/sbatch/sbatch.c, _get_script_buffer).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.fsutil import read_text
from stardock_hpc.jobs.sbatch_options import Option, parse_options, take_option

# stardock's options in `stardock sbatch`, with whether they take a value.
OWN = {"env": True, "image": True, "mount": True, "engine": True, "backend": True, "dry-run": False,
       "site": True, "debug": False, "pass-env": True}
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


@dataclass
class SubmitRequest:
    spec: Optional[Path] = None
    image: Optional[str] = None
    mounts: List[str] = field(default_factory=list)
    engine: Optional[str] = None
    backend: Optional[str] = None
    dry_run: bool = False
    site: Optional[str] = None
    debug: bool = False
    pass_env: List[str] = field(default_factory=list)
    sbatch: List[Option] = field(default_factory=list)   # from the command line, as given
    script: Optional[Script] = None
    args: List[str] = field(default_factory=list)

    def sbatch_tokens(self) -> List[str]:
        return [t for opt in self.sbatch for t in opt.tokens]

    def all_sbatch(self) -> List[Option]:
        """Directives first, then the command line, which wins (as with sbatch)."""
        assert self.script is not None
        return [o for _line, opts in self.script.sbatch_lines for o in opts] + self.sbatch

    def has(self, name: str) -> bool:
        return any(o.name == name for o in self.all_sbatch())


def _own(req: SubmitRequest, name: str, value: Optional[str], base: Path) -> None:
    if name == "env":
        req.spec = base / value if value and not Path(value).is_absolute() else Path(value or "")
    elif name == "image":
        req.image = value
    elif name == "mount":
        req.mounts.append(value or "")
    elif name == "pass-env":
        req.pass_env += [v for v in (value or "").split(",") if v]
    elif name in ("engine", "backend", "site"):
        setattr(req, name, value)
    elif name == "dry-run":
        req.dry_run = True
    elif name == "debug":
        req.debug = True


def _take_own(args: Sequence[str], i: int, where: str) -> Tuple[Optional[Tuple[str, Optional[str]]], int]:
    word, eq, value = args[i][2:].partition("=")
    if word not in OWN:
        return None, i
    if OWN[word]:
        if not eq:
            if i + 1 >= len(args):
                raise UsageError(f"{where}: --{word} needs a value")
            return (word, args[i + 1]), i + 2
        return (word, value), i + 1
    if eq:
        raise UsageError(f"{where}: --{word} takes no value")
    return (word, None), i + 1


def parse_command_line(argv: Sequence[str], cwd: Path) -> SubmitRequest:
    req = SubmitRequest()
    i = 0
    wrap: Optional[str] = None
    while i < len(argv):
        token = argv[i]
        if token == "--":
            i += 1
            break
        if not token.startswith("-") or token == "-":
            break
        if token.startswith("--"):
            own, nxt = _take_own(argv, i, "stardock sbatch")
            if own:
                _own(req, own[0], own[1], cwd)
                i = nxt
                continue
        opt, i = take_option(argv, i, "stardock sbatch")
        if opt.name == "wrap":
            wrap = opt.value
        else:
            req.sbatch.append(opt)
    rest = list(argv[i:])
    if wrap is not None:
        if rest:
            raise UsageError(f"stardock sbatch: --wrap and a script ({rest[0]!r}) cannot be given together")
        if "\0" in wrap:  # sbatch checks no --wrap text, but no NUL gets through argv to it either
            raise UsageError(f"stardock sbatch: the --wrap command {NULL_MESSAGE}")
        req.script = Script(None, f"{WRAP_SHEBANG}\n# This script was created by stardock sbatch --wrap.\n\n{wrap}\n",
                            [])
        return req
    if not rest:
        raise UsageError("stardock sbatch: give a SCRIPT (or --wrap CMD)",
                         hint="stardock sbatch [sbatch options] (--env SPEC | --image KEY) SCRIPT [ARGS...]")
    req.script = read_script(Path(rest[0]) if Path(rest[0]).is_absolute() else cwd / rest[0])
    req.args = rest[1:]
    return req


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
        for prefix, into in (("#SBATCH", script.sbatch_lines), ("#STARDOCK", script.stardock_tokens)):
            if stripped.startswith(prefix) and stripped[len(prefix):len(prefix) + 1] in (" ", "\t"):
                where = f"{name or path}:{number}"
                try:
                    tokens = shlex.split(stripped[len(prefix):], comments=True)
                except ValueError as exc:
                    raise UsageError(f"{where}: cannot read the {prefix} line: {exc}") from None
                if prefix == "#SBATCH":
                    into.append((number, parse_options(tokens, where)))
                else:
                    into.append((number, tokens))
    return script


def apply_directives(req: SubmitRequest) -> SubmitRequest:
    """#STARDOCK lines count as if given first on the command line, which wins over them."""
    assert req.script is not None
    from_script = SubmitRequest()
    base = req.script.path.parent if req.script.path else Path.cwd()
    for number, tokens in req.script.stardock_tokens:
        where = f"{req.script.path}:{number}"
        i = 0
        while i < len(tokens):
            if not tokens[i].startswith("--"):
                raise UsageError(f"{where}: {tokens[i]!r} is not a stardock option; #STARDOCK lines take "
                                 f"--{', --'.join(k for k in OWN if k not in ('site', 'debug'))}")
            own, i2 = _take_own(tokens, i, where)
            if own is None or own[0] in ("site", "debug"):
                raise UsageError(f"{where}: {tokens[i]} is not allowed in #STARDOCK lines; allowed: "
                                 f"--{', --'.join(k for k in OWN if k not in ('site', 'debug'))}")
            _own(from_script, own[0], own[1], base)
            i = i2
    return replace(
        req,
        spec=req.spec or from_script.spec,
        image=req.image or from_script.image,
        mounts=from_script.mounts + req.mounts,
        engine=req.engine or from_script.engine,
        backend=req.backend or from_script.backend,
        dry_run=req.dry_run or from_script.dry_run,
        pass_env=from_script.pass_env + req.pass_env,
    )
