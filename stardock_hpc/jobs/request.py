"""What `stardock sbatch ...` asks for: stardock's own options, sbatch's options (kept exactly as
given), the script and its arguments, and the #SBATCH / #STARDOCK directives of the script.

sbatch's rules are followed: options end at the first word that is not an option (the script);
everything after it belongs to the script. Directives are read from the comment block at the top
of the script and stop at its first command. stardock's option names collide with none of
sbatch's (nor with an abbreviation of one) but --input, which is stardock's when its value is a
URL and sbatch's (the script's standard input) otherwise. The script itself is read by
slurm/script.py.

What --export names is also what the script in the container gets (besides Slurm's own
variables and --pass-env): export_names() reads the --export that sbatch uses, with its precedence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.slurm.options import Option, take_options
from stardock_hpc.slurm.script import Script, read_script, wrap_script
from stardock_hpc.urls import redact_urls_in

# stardock's options in `stardock sbatch`, with whether they take a value.
OWN = {"env": True, "image": True, "mount": True, "engine": True, "backend": True, "dry-run": False,
       "site": True, "debug": False, "pass-env": True, "locked": False, "input": True, "deliver": True}
# sbatch has an --input too (the script's standard input, a file name pattern): a value that is a
# URL (scheme://... or file:...) is stardock's --input, anything else sbatch's.
URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|file:/")


@dataclass
class SubmitRequest:
    spec_path: Optional[Path] = None       # --env: the environment's spec file
    image: Optional[str] = None
    mounts: List[str] = field(default_factory=list)
    engine: Optional[str] = None
    backend: Optional[str] = None
    dry_run: bool = False
    locked: bool = False                   # --env SPEC built exactly as SPEC's stardock.lock says
    site: Optional[str] = None
    debug: bool = False
    pass_env: List[str] = field(default_factory=list)
    inputs: List[str] = field(default_factory=list)      # --input URL[=NAME] (jobs/staging.py)
    deliver: List[str] = field(default_factory=list)     # --deliver DEST
    sbatch: List[Option] = field(default_factory=list)   # from the command line, as given
    add_apps: Tuple[str, ...] = ()                      # catalog apps the job needs (stardock notebook)
    notebook_token: str = ""                            # stardock notebook: its server's token
    script: Optional[Script] = None
    args: List[str] = field(default_factory=list)

    def all_sbatch(self) -> List[Option]:
        """Directives first, then the command line, which wins (as with sbatch)."""
        assert self.script is not None
        return [o for _line, opts in self.script.sbatch_lines for o in opts] + self.sbatch

    def has(self, name: str) -> bool:
        return any(o.name == name for o in self.all_sbatch())

    def export_value(self, environ: Mapping[str, str]) -> Optional[str]:
        """The --export sbatch uses: the last one on the command line, else $SBATCH_EXPORT, else the
        last #SBATCH one (sbatch reads the script, then its environment, then the command line)."""
        assert self.script is not None
        given = [o.value for o in self.sbatch if o.name == "export"]
        if given:
            return given[-1]
        if "SBATCH_EXPORT" in environ:
            return environ["SBATCH_EXPORT"]
        given = [o.value for _line, opts in self.script.sbatch_lines for o in opts if o.name == "export"]
        return given[-1] if given else None


def export_names(value: Optional[str]) -> List[str]:
    """The variables an --export value names, in order: FOO in FOO, FOO=bar and ALL,FOO=bar.
    Read as sbatch 22.05 does (src/common/env.c env_merge_filter): NONE and ALL alone name none;
    otherwise the list is split at commas outside quotes (find_quote_token), a word quoted whole
    loses its quotes, and the word ALL stands for the whole environment, not for a variable."""
    if value is None or value.upper() in ("ALL", "NONE"):
        return []
    names: List[str] = []
    for word in _quote_split(value):
        if len(word) >= 2 and word[0] in "'\"" and word[-1] == word[0]:
            word = word[1:-1]
        name = word.split("=", 1)[0]
        if name and word.upper() != "ALL" and name not in names:
            names.append(name)
    return names


def _quote_split(value: str) -> List[str]:
    """value split at the commas outside '...' and "..." (a quote left open runs to the end)."""
    words, word, quote = [], "", ""
    for c in value:
        if c == "," and not quote:
            words.append(word)
            word = ""
            continue
        if c in "'\"":
            quote = "" if quote == c else (quote or c)
        word += c
    words.append(word)
    return [w for w in words if w]


def _own(req: SubmitRequest, name: str, value: Optional[str], base: Path) -> None:
    if name == "env":
        req.spec_path = base / value if value and not Path(value).is_absolute() else Path(value or "")
    elif name == "image":
        req.image = value
    elif name == "mount":
        req.mounts.append(value or "")
    elif name == "input":
        req.inputs.append(value or "")
    elif name == "deliver":
        req.deliver.append(value or "")
    elif name == "pass-env":
        req.pass_env += [v for v in (value or "").split(",") if v]
    elif name in ("engine", "backend", "site"):
        setattr(req, name, value)
    elif name == "dry-run":
        req.dry_run = True
    elif name == "locked":
        req.locked = True
    elif name == "debug":
        req.debug = True


def _take_own(args: Sequence[str], i: int, where: str,
              script_line: bool = False) -> Tuple[Optional[Tuple[str, Optional[str]]], int]:
    word, eq, value = args[i][2:].partition("=")
    if word not in OWN:
        return None, i
    if OWN[word]:
        if not eq:
            if i + 1 >= len(args):
                raise UsageError(f"{where}: --{word} needs a value")
            value, nxt = args[i + 1], i + 2
        else:
            nxt = i + 1
        if word == "input" and not script_line and not URL_RE.match(value):
            return None, i  # sbatch's --input (a file name pattern for the script's standard input)
        return (word, value), nxt
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
        opts, i = take_options(argv, i, "stardock sbatch")
        for opt in opts:
            if opt.name == "wrap":
                wrap = opt.value
            else:
                req.sbatch.append(opt)
    rest = list(argv[i:])
    if wrap is not None:
        if rest:
            raise UsageError(f"stardock sbatch: --wrap and a script ({rest[0]!r}) cannot be given together")
        req.script = wrap_script(wrap)
        return req
    if not rest:
        raise UsageError("stardock sbatch: give a SCRIPT (or --wrap CMD)",
                         hint="stardock sbatch [sbatch options] (--env SPEC | --image KEY) SCRIPT [ARGS...]")
    req.script = read_script(Path(rest[0]) if Path(rest[0]).is_absolute() else cwd / rest[0])
    req.args = rest[1:]
    return req


def apply_directives(req: SubmitRequest) -> SubmitRequest:
    """#STARDOCK lines count as if given first on the command line, which wins over them. Their
    values are checked exactly as the command line's (--input and --deliver against the site's
    policy, --mount against the volume map): a script may come from someone else."""
    assert req.script is not None
    from_script = SubmitRequest()
    base = req.script.path.parent if req.script.path else Path.cwd()
    for number, tokens in req.script.stardock_tokens:
        where = f"{req.script.path}:{number}"
        i = 0
        while i < len(tokens):
            if not tokens[i].startswith("--"):
                raise UsageError(f"{where}: {redact_urls_in(tokens[i])!r} is not a stardock option; #STARDOCK lines "
                                 f"take --{', --'.join(k for k in OWN if k not in ('site', 'debug'))}")
            own, i2 = _take_own(tokens, i, where, script_line=True)
            if own is None or own[0] in ("site", "debug"):
                raise UsageError(f"{where}: {redact_urls_in(tokens[i])} is not allowed in #STARDOCK lines; allowed: "
                                 f"--{', --'.join(k for k in OWN if k not in ('site', 'debug'))}")
            _own(from_script, own[0], own[1], base)
            i = i2
    return replace(
        req,
        spec_path=req.spec_path or from_script.spec_path,
        image=req.image or from_script.image,
        mounts=from_script.mounts + req.mounts,
        engine=req.engine or from_script.engine,
        backend=req.backend or from_script.backend,
        dry_run=req.dry_run or from_script.dry_run,
        locked=req.locked or from_script.locked,
        pass_env=from_script.pass_env + req.pass_env,
        inputs=from_script.inputs + req.inputs,
        deliver=from_script.deliver + req.deliver,
    )
