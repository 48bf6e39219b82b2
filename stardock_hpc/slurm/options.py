"""sbatch's options (Slurm 22.05), as data: which take a value, and every spelling sbatch accepts.

stardock never interprets most of them: it must only know where the options end and the
script begins, and which token is whose value. Options stay exactly as the user wrote them.

The table is sbatch 22.05.8's own getopt_long table: src/common/slurm_opt.c (`common_options[]`,
the `slurm_cli_opt_t` entries sbatch takes, with their `name`, `has_arg` and `val`) as
slurm_option_table_create() hands it to getopt_long for the command line and for each #SBATCH
line, checked against the installed sbatch (its table and optstring as given to getopt_long,
`sbatch --help`, `sbatch --test-only`). Spellings are resolved as glibc's getopt_long does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from stardock_hpc.errors import UsageError

NONE, REQUIRED, OPTIONAL = "none", "required", "optional"

# (long name, short letter or "", arity): each option by its canonical (documented) name.
TABLE: Tuple[Tuple[str, str, str], ...] = (
    ("account", "A", REQUIRED), ("acctg-freq", "", REQUIRED), ("array", "a", REQUIRED),
    ("batch", "", REQUIRED), ("bb", "", REQUIRED), ("bbf", "", REQUIRED), ("begin", "b", REQUIRED),
    ("chdir", "D", REQUIRED), ("cluster-constraint", "", REQUIRED), ("clusters", "M", REQUIRED),
    ("comment", "", REQUIRED), ("constraint", "C", REQUIRED), ("container", "", REQUIRED),
    ("context", "", REQUIRED),  # SELinux context; undocumented in 22.05's sbatch --help, taken all the same
    ("contiguous", "", NONE), ("core-spec", "S", REQUIRED), ("cores-per-socket", "", REQUIRED),
    ("cpu-freq", "", REQUIRED), ("cpus-per-gpu", "", REQUIRED), ("cpus-per-task", "c", REQUIRED),
    ("deadline", "", REQUIRED), ("delay-boot", "", REQUIRED), ("dependency", "d", REQUIRED),
    ("distribution", "m", REQUIRED), ("error", "e", REQUIRED), ("exclude", "x", REQUIRED),
    ("exclusive", "", OPTIONAL), ("export", "", REQUIRED), ("export-file", "", REQUIRED),
    ("extra-node-info", "B", REQUIRED), ("get-user-env", "", OPTIONAL), ("gid", "", REQUIRED),
    ("gpu-bind", "", REQUIRED), ("gpu-freq", "", REQUIRED), ("gpus", "G", REQUIRED),
    ("gpus-per-node", "", REQUIRED), ("gpus-per-socket", "", REQUIRED), ("gpus-per-task", "", REQUIRED),
    ("gres", "", REQUIRED), ("gres-flags", "", REQUIRED), ("help", "h", NONE), ("hint", "", REQUIRED),
    ("hold", "H", NONE), ("ignore-pbs", "", NONE), ("input", "i", REQUIRED), ("job-name", "J", REQUIRED),
    ("kill-on-invalid-dep", "", REQUIRED), ("licenses", "L", REQUIRED), ("mail-type", "", REQUIRED),
    ("mail-user", "", REQUIRED), ("mcs-label", "", REQUIRED), ("mem", "", REQUIRED),
    ("mem-bind", "", REQUIRED), ("mem-per-cpu", "", REQUIRED), ("mem-per-gpu", "", REQUIRED),
    ("mincpus", "", REQUIRED), ("network", "", REQUIRED), ("nice", "", OPTIONAL),
    ("no-kill", "k", OPTIONAL), ("no-requeue", "", NONE), ("nodefile", "F", REQUIRED),
    ("nodelist", "w", REQUIRED), ("nodes", "N", REQUIRED), ("ntasks", "n", REQUIRED),
    ("ntasks-per-core", "", REQUIRED), ("ntasks-per-gpu", "", REQUIRED), ("ntasks-per-node", "", REQUIRED),
    ("ntasks-per-socket", "", REQUIRED),
    ("ntasks-per-tres", "", REQUIRED),  # undocumented in 22.05, taken all the same
    ("open-mode", "", REQUIRED), ("output", "o", REQUIRED),
    ("overcommit", "O", NONE), ("oversubscribe", "s", NONE), ("parsable", "", NONE),
    ("partition", "p", REQUIRED), ("power", "", REQUIRED), ("prefer", "", REQUIRED),
    ("priority", "", REQUIRED), ("profile", "", REQUIRED), ("propagate", "", OPTIONAL),
    ("qos", "q", REQUIRED), ("quiet", "Q", NONE), ("reboot", "", NONE), ("requeue", "", NONE),
    ("reservation", "", REQUIRED), ("signal", "", REQUIRED), ("sockets-per-node", "", REQUIRED),
    ("spread-job", "", NONE), ("switches", "", REQUIRED), ("test-only", "", NONE),
    ("thread-spec", "", REQUIRED), ("threads-per-core", "", REQUIRED), ("time", "t", REQUIRED),
    ("time-min", "", REQUIRED), ("tmp", "", REQUIRED), ("uid", "", REQUIRED), ("usage", "", NONE),
    ("use-min-nodes", "", NONE), ("verbose", "v", NONE), ("version", "V", NONE), ("wait", "W", NONE),
    ("wait-all-nodes", "", REQUIRED), ("wckey", "", REQUIRED), ("wrap", "", REQUIRED),
)
# The other long names of an option: alias -> (canonical name, whether getopt_long sees the very
# same option). slurm_opt.c gives "tasks-per-node" ("Deprecated form of --ntasks-per-node") the
# val of --ntasks-per-node, and "cluster" ("--clusters and --cluster are equivalent") a val of its
# own; glibc's getopt_long calls an abbreviation ambiguous when the names it matches differ in
# has_arg, flag or val, so "--clust" is ambiguous (--cluster, --cluster-constraint, --clusters).
ALIASES: Dict[str, Tuple[str, bool]] = {
    "cluster": ("clusters", False),
    "tasks-per-node": ("ntasks-per-node", True),
}
LONG: Dict[str, str] = {name: arity for name, _short, arity in TABLE}
SHORT: Dict[str, str] = {short: name for name, short, _arity in TABLE if short}
# Every long name sbatch accepts, with the option it names.
SPELLINGS: Dict[str, str] = {**{name: name for name in LONG}, **{a: c for a, (c, _same) in ALIASES.items()}}


# Errors in getopt_long's own words (what sbatch prints), so that both name the same cause.
HINT = "see `man sbatch` (Slurm 22.05)"


def _spelling(word: str) -> str:
    """The long name getopt_long prints for what the user wrote (resolved): the name it matched, in full."""
    return word if word in SPELLINGS else next(name for name in SPELLINGS if name.startswith(word))


def _getopt_identity(spelling: str) -> str:
    """What getopt_long compares to decide an abbreviation: aliases with the option's own val are one."""
    canonical, same = ALIASES.get(spelling, (spelling, True))
    return canonical if same else spelling


@dataclass(frozen=True)
class Option:
    """One sbatch option as given: its canonical name, its value and the exact tokens."""

    name: str
    value: Optional[str]
    tokens: Tuple[str, ...]


def resolve_long(word: str, where: str) -> str:
    """The option a long name means, as getopt_long decides: an exact name (alias or not), else
    the names it abbreviates, if they are all one option to getopt_long; its canonical name."""
    if word in SPELLINGS:
        return SPELLINGS[word]
    matches = [name for name in SPELLINGS if name.startswith(word)]
    if not matches:
        raise UsageError(f"{where}: unrecognized option '--{word}'", hint=HINT)
    if len({_getopt_identity(name) for name in matches}) == 1:
        return SPELLINGS[matches[0]]
    raise UsageError(f"{where}: option '--{word}' is ambiguous; possibilities: "
                     + " ".join(f"'--{name}'" for name in matches), hint=HINT)


def take_options(args: Sequence[str], i: int, where: str) -> Tuple[List[Option], int]:
    """Parse the sbatch option(s) starting at args[i]; return them and the index after them.

    One token gives several options when short options are bundled, as getopt allows ("-vv",
    "-Hn2", "-Hn 2"): each gets its own tokens ("-v", "-v"; "-H", "-n2"), which getopt reads
    exactly as the bundle. A short option that takes a value ends the bundle: the rest of the
    token is its value (an optional value too: "-kH" is --no-kill=H)."""
    token = args[i]
    if token.startswith("--"):
        word, eq, value = token[2:].partition("=")
        name = resolve_long(word, where)
        arity = LONG[name]
        if eq:
            if arity == NONE:
                raise UsageError(f"{where}: option '--{_spelling(word)}' doesn't allow an argument "
                                 "(it takes no value)", hint=HINT)
            return [Option(name, value, (token,))], i + 1
        if arity == REQUIRED:
            if i + 1 >= len(args):
                raise UsageError(f"{where}: option '--{_spelling(word)}' requires an argument "
                                 "(it needs a value)", hint=HINT)
            return [Option(name, args[i + 1], (token, args[i + 1]))], i + 2
        return [Option(name, None, (token,))], i + 1
    out: List[Option] = []
    at = 1
    while at < len(token):
        letter = token[at]
        if letter not in SHORT:
            raise UsageError(f"{where}: invalid option -- '{letter}'", hint=HINT)
        name = SHORT[letter]
        arity = LONG[name]
        rest = token[at + 1:]
        if arity == NONE:
            out.append(Option(name, None, (f"-{letter}",)))
            at += 1
            continue
        if rest or arity == OPTIONAL:
            out.append(Option(name, rest or None, (f"-{letter}{rest}",) if out else (token,)))
            return out, i + 1
        if i + 1 >= len(args):
            raise UsageError(f"{where}: option requires an argument -- '{letter}' (-{letter} needs a value)",
                             hint=HINT)
        out.append(Option(name, args[i + 1], (f"-{letter}" if out else token, args[i + 1])))
        return out, i + 2
    return out, i + 1


def take_option(args: Sequence[str], i: int, where: str) -> Tuple[Option, int]:
    """Parse the one sbatch option at args[i] (a bundle of short options is refused here)."""
    options, nxt = take_options(args, i, where)
    if len(options) != 1:
        raise UsageError(f"{where}: {args[i]!r} holds {len(options)} options")
    return options[0], nxt


def parse_options(args: Sequence[str], where: str) -> List[Option]:
    """All of args must be sbatch options (a #SBATCH line, for example)."""
    out: List[Option] = []
    i = 0
    while i < len(args):
        if not args[i].startswith("-") or args[i] in ("-", "--"):
            raise UsageError(f"{where}: Invalid directive found in batch script: {args[i]} "
                             "(it is not an sbatch option)")
        opts, i = take_options(args, i, where)
        out.extend(opts)
    return out
