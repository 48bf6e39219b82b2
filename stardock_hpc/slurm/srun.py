"""srun's command line (Slurm 22.05), as data: where its options end and the program begins.

A step started from inside a container (jobs/steps.py) runs host srun with the user's options
exactly as given and stardock's task wrapper put in front of the program, so the options must be
told from the program. srun stops at the first word that is not an option (its optstring starts
with '+'); long options may be abbreviated as getopt_long allows. The table is srun's entries of
src/common/slurm_opt.c (22.05.8), checked against the installed `srun --help`.
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence

from stardock_hpc.errors import UsageError
from stardock_hpc.slurm.options import NONE, OPTIONAL, REQUIRED

LONG = {
    **{name: REQUIRED for name in (
        "account", "acctg-freq", "bb", "bbf", "bcast-exclude", "begin", "chdir", "cluster", "cluster-constraint",
        "clusters", "comment", "constraint", "container", "context", "core-spec", "cores-per-socket", "cpu-bind",
        "cpu-freq", "cpus-per-gpu", "cpus-per-task", "deadline", "delay-boot", "dependency", "distribution",
        "epilog", "error", "exclude", "export", "extra-node-info", "gid", "gpu-bind", "gpu-freq", "gpus",
        "gpus-per-node", "gpus-per-socket", "gpus-per-task", "gres", "gres-flags", "het-group", "hint", "input",
        "job-name", "jobid", "licenses", "mail-type", "mail-user", "mcs-label", "mem", "mem-bind", "mem-per-cpu",
        "mem-per-gpu", "mincpus", "mpi", "msg-timeout", "network", "nodefile", "nodelist", "nodes", "ntasks",
        "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-node", "ntasks-per-socket", "ntasks-per-tres",
        "open-mode", "output", "partition", "power", "prefer", "priority", "profile", "prolog", "qos",
        "relative", "reservation", "signal", "slurmd-debug", "sockets-per-node", "switches", "task-epilog",
        "task-prolog", "thread-spec", "threads", "threads-per-core", "time", "time-min", "tmp",
        "tres-per-task", "uid", "wait", "wckey", "accel-bind", "cpu_bind", "mem_bind")},
    **{name: OPTIONAL for name in (
        "bcast", "compress", "exclusive", "immediate", "kill-on-bad-exit", "nice", "no-kill", "propagate",
        "resv-ports", "send-libs", "x11")},
    **{name: NONE for name in (
        "contiguous", "debugger-test", "disable-status", "exact", "help", "hold", "label", "multi-prog",
        "no-allocate", "overcommit", "overlap", "oversubscribe", "preserve-env", "pty", "quiet",
        "quit-on-interrupt", "reboot", "spread-job", "test-only", "unbuffered", "usage", "use-min-nodes",
        "verbose", "version")},
}
# srun 22.05's getopt optstring: a letter followed by ':' takes a value, by '::' an optional one
SHORT = "A:B:c:C:d:D:e:EG:hHi:I::J:kK::lL:m:M:n:N:o:Op:q:QsS:t:T:uvVw:W:x:XZ"
HINT = "see `man srun` (Slurm 22.05)"


def _short_arity(letter: str) -> str:
    at = SHORT.find(letter)
    if at < 0:
        return ""
    if SHORT[at + 1:at + 3] == "::":
        return OPTIONAL
    return REQUIRED if SHORT[at + 1:at + 2] == ":" else NONE


def _long(word: str) -> str:
    if word in LONG:
        return word
    found = sorted({name for name in LONG if name.startswith(word)})
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(f"srun: unrecognized option '--{word}'; {HINT}")
    raise UsageError(f"srun: option '--{word}' is ambiguous ({', '.join('--' + f for f in found)})")


class Split(NamedTuple):
    options: List[str]    # as given, in order
    program: List[str]    # the program and its arguments
    multi_prog: bool      # --multi-prog: program[0] is a configuration file


def split(args: Sequence[str]) -> Split:
    """srun's options and its program, as srun's getopt_long tells them apart."""
    i, multi = 0, False
    while i < len(args):
        token = args[i]
        if token == "--":
            return Split(list(args[:i + 1]), list(args[i + 1:]), multi)
        if token.startswith("--"):
            word, eq, _value = token[2:].partition("=")
            name = _long(word)
            multi = multi or name == "multi-prog"
            if LONG[name] == NONE and eq:
                raise UsageError(f"srun: option '--{name}' doesn't allow an argument")
            if LONG[name] == REQUIRED and not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"srun: option '--{name}' requires an argument; {HINT}")
                i += 1
        elif token.startswith("-") and token != "-":
            j = 1
            while j < len(token):
                arity = _short_arity(token[j])
                if not arity:
                    raise UsageError(f"srun: invalid option -- '{token[j]}'; {HINT}")
                if arity != NONE:
                    if j + 1 == len(token) and arity == REQUIRED:
                        if i + 1 >= len(args):
                            raise UsageError(f"srun: option requires an argument -- '{token[j]}'")
                        i += 1
                    break
                j += 1
        else:
            return Split(list(args[:i]), list(args[i:]), multi)
        i += 1
    return Split(list(args), [], multi)
