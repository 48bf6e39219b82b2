"""sbatch's options (Slurm 22.05), as data: which take a value.

stardock never interprets most of them: it must only know where the options end and the
script begins, and which token is whose value. Options stay exactly as the user wrote them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from stardock_hpc.errors import UsageError

NONE, REQUIRED, OPTIONAL = "none", "required", "optional"

# (long name, short letter or "", arity), from `man sbatch` of Slurm 22.05.
TABLE: Tuple[Tuple[str, str, str], ...] = (
    ("account", "A", REQUIRED), ("acctg-freq", "", REQUIRED), ("array", "a", REQUIRED),
    ("batch", "", REQUIRED), ("bb", "", REQUIRED), ("bbf", "", REQUIRED), ("begin", "b", REQUIRED),
    ("chdir", "D", REQUIRED), ("cluster-constraint", "", REQUIRED), ("clusters", "M", REQUIRED),
    ("comment", "", REQUIRED), ("constraint", "C", REQUIRED), ("container", "", REQUIRED),
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
    ("ntasks-per-socket", "", REQUIRED), ("open-mode", "", REQUIRED), ("output", "o", REQUIRED),
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
LONG: Dict[str, str] = {name: arity for name, _short, arity in TABLE}
SHORT: Dict[str, str] = {short: name for name, short, _arity in TABLE if short}


@dataclass(frozen=True)
class Option:
    """One sbatch option as given: its canonical name, its value and the exact tokens."""

    name: str
    value: Optional[str]
    tokens: Tuple[str, ...]


def resolve_long(word: str, where: str) -> str:
    """sbatch (getopt_long) accepts unambiguous prefixes of long options; so do we."""
    if word in LONG:
        return word
    matches = [name for name in LONG if name.startswith(word)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"{where}: unknown sbatch option --{word}", hint="see `man sbatch`")
    raise UsageError(f"{where}: --{word} is ambiguous: --{', --'.join(sorted(matches))}")


def take_option(args: Sequence[str], i: int, where: str) -> Tuple[Option, int]:
    """Parse the sbatch option starting at args[i]; return it and the index after it."""
    token = args[i]
    if token.startswith("--"):
        word, eq, value = token[2:].partition("=")
        name = resolve_long(word, where)
        arity = LONG[name]
        if eq:
            if arity == NONE:
                raise UsageError(f"{where}: --{name} takes no value")
            return Option(name, value, (token,)), i + 1
        if arity == REQUIRED:
            if i + 1 >= len(args):
                raise UsageError(f"{where}: --{name} needs a value")
            return Option(name, args[i + 1], (token, args[i + 1])), i + 2
        return Option(name, None, (token,)), i + 1
    letter = token[1:2]
    if letter not in SHORT:
        raise UsageError(f"{where}: unknown sbatch option -{letter}", hint="see `man sbatch`")
    name = SHORT[letter]
    arity = LONG[name]
    rest = token[2:]
    if arity == NONE:
        if rest:
            raise UsageError(f"{where}: write bundled short options separately: {token!r} (e.g. -H -Q)")
        return Option(name, None, (token,)), i + 1
    if rest or arity == OPTIONAL:
        return Option(name, rest or None, (token,)), i + 1
    if i + 1 >= len(args):
        raise UsageError(f"{where}: -{letter} needs a value")
    return Option(name, args[i + 1], (token, args[i + 1])), i + 2


def parse_options(args: Sequence[str], where: str) -> List[Option]:
    """All of args must be sbatch options (a #SBATCH line, for example)."""
    out: List[Option] = []
    i = 0
    while i < len(args):
        if not args[i].startswith("-") or args[i] in ("-", "--"):
            raise UsageError(f"{where}: {args[i]!r} is not an sbatch option")
        opt, i = take_option(args, i, where)
        out.append(opt)
    return out
