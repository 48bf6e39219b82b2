"""srun's command line and environment (Slurm 22.05), as data: its options, the variables it reads
as options, its filename patterns, --export.

A step started from inside a container (jobs/steps.py) is judged here option by option before the
host's srun sees it (slurm/steppolicy.py says what may pass). The table is srun 22.05.8's own
getopt_long table and optstring (read from the binary: slurm/getopt.py), the variables are srun's
"INPUT ENVIRONMENT VARIABLES" (man srun, 22.05) with the ones the binary reads besides (its
strings), and the patterns and --export follow srun's manual.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

from stardock_hpc.slurm.getopt import Option, Table, parse

SRUN = Table("srun", "+A:b:D:M:C:S:c:d:Xm:e:x:B:G:hHI::i:J:K::lL:T:Zk::F:w:N:n:o:Osp:Eq:Qr:t:uvVW:", (
    ("accel-bind", 1, 257), ("account", 1, 65), ("acctg-freq", 1, 258), ("bcast", 2, 262),
    ("bcast-exclude", 1, 263), ("begin", 1, 98), ("bb", 1, 267), ("bbf", 1, 266),
    ("cluster-constraint", 1, 269), ("chdir", 1, 68), ("cluster", 1, 268), ("clusters", 1, 77),
    ("comment", 1, 270), ("compress", 2, 271), ("container", 1, 272), ("context", 1, 273),
    ("contiguous", 0, 274), ("constraint", 1, 67), ("core-spec", 1, 83), ("cores-per-socket", 1, 276),
    ("cpu-bind", 1, 277), ("cpu_bind", 1, 277), ("cpu-freq", 1, 278), ("cpus-per-gpu", 1, 279),
    ("cpus-per-task", 1, 99), ("deadline", 1, 280), ("debugger-test", 0, 281), ("delay-boot", 1, 282),
    ("dependency", 1, 100), ("disable-status", 0, 88), ("distribution", 1, 109), ("epilog", 1, 284),
    ("error", 1, 101), ("exact", 0, 285), ("exclude", 1, 120), ("exclusive", 2, 286), ("export", 1, 287),
    ("extra-node-info", 1, 66), ("gid", 1, 290), ("gpu-bind", 1, 291), ("gpu-freq", 1, 292), ("gpus", 1, 71),
    ("gpus-per-node", 1, 294), ("gpus-per-socket", 1, 295), ("gpus-per-task", 1, 296), ("gres", 1, 297),
    ("gres-flags", 1, 298), ("help", 0, 104), ("het-group", 1, 334), ("hint", 1, 299), ("hold", 0, 72),
    ("immediate", 2, 73), ("input", 1, 105), ("interactive", 0, 301), ("jobid", 1, 302), ("job-name", 1, 74),
    ("kill-on-bad-exit", 2, 75), ("label", 0, 108), ("licenses", 1, 76), ("mail-type", 1, 307),
    ("mail-user", 1, 308), ("threads", 1, 84), ("mcs-label", 1, 309), ("mem", 1, 310), ("mem-bind", 1, 311),
    ("mem-per-cpu", 1, 312), ("mem-per-gpu", 1, 313), ("mincpus", 1, 315), ("mpi", 1, 319),
    ("msg-timeout", 1, 320), ("multi-prog", 0, 321), ("network", 1, 322), ("nice", 2, 323),
    ("no-allocate", 0, 90), ("no-kill", 2, 107), ("nodefile", 1, 70), ("nodelist", 1, 119), ("nodes", 1, 78),
    ("ntasks", 1, 110), ("ntasks-per-core", 1, 327), ("ntasks-per-gpu", 1, 328), ("ntasks-per-node", 1, 329),
    ("ntasks-per-socket", 1, 330), ("ntasks-per-tres", 1, 331), ("open-mode", 1, 332), ("output", 1, 111),
    ("overcommit", 0, 79), ("overlap", 2, 333), ("oversubscribe", 0, 115), ("pack-group", 1, 334),
    ("partition", 1, 112), ("power", 1, 336), ("prefer", 1, 337), ("preserve-env", 0, 69), ("priority", 1, 338),
    ("profile", 1, 339), ("prolog", 1, 340), ("propagate", 2, 341), ("pty", 0, 342), ("qos", 1, 113),
    ("quiet", 0, 81), ("quit-on-interrupt", 0, 343), ("reboot", 0, 345), ("relative", 1, 114),
    ("reservation", 1, 347), ("resv-ports", 2, 348), ("send-libs", 2, 349), ("signal", 1, 350),
    ("slurmd-debug", 1, 351), ("sockets-per-node", 1, 352), ("spread-job", 0, 353), ("switches", 1, 356),
    ("task-epilog", 1, 357), ("task-prolog", 1, 358), ("tasks-per-node", 1, 329), ("test-only", 0, 359),
    ("thread-spec", 1, 360), ("threads-per-core", 1, 361), ("time", 1, 116), ("time-min", 1, 362),
    ("tmp", 1, 363), ("uid", 1, 365), ("unbuffered", 0, 117), ("use-min-nodes", 0, 368), ("verbose", 0, 118),
    ("version", 0, 86), ("usage", 0, 367), ("wait", 1, 87), ("wckey", 1, 370), ("whole", 0, 371),
    ("x11", 2, 373),
))

HET_SEPARATOR = ":"  # srun splits its command line into the components of a heterogeneous step here


@dataclass(frozen=True)
class Component:
    """One component of a step (all of it for an ordinary step): its options and its program."""

    options: List[Option]
    program: List[str]

    @property
    def multi_prog(self) -> bool:  # program[0] is then the --multi-prog configuration file
        return any(o.name == "multi-prog" for o in self.options)


def components(args: Sequence[str]) -> List[Component]:
    """srun's options and program, component by component. srun parses options up to the first
    non-option (or `--`), and the program runs up to the next word that is exactly ':', where the
    next component's options begin, even after `--` (seen with srun 22.05.8's own getopt calls)."""
    out: List[Component] = []
    rest = list(args)
    while True:
        options, program, _stop = parse(SRUN, rest)
        if HET_SEPARATOR in program:
            at = program.index(HET_SEPARATOR)
            out.append(Component(options, program[:at]))
            rest = program[at + 1:]
            continue
        out.append(Component(options, program))
        return out


# srun's input environment variables that stand for an option (srun reads them as that option;
# the command line wins).
ENV_OPTIONS: Dict[str, str] = {
    "SLURM_ACCOUNT": "account", "SLURM_ACCTG_FREQ": "acctg-freq", "SLURM_BCAST": "bcast",
    "SLURM_BCAST_EXCLUDE": "bcast-exclude", "SLURM_BURST_BUFFER": "bb", "SLURM_CLUSTERS": "clusters",
    "SLURM_CLUSTER_CONSTRAINT": "cluster-constraint", "SLURM_COMPRESS": "compress",
    "SLURM_CONSTRAINT": "constraint", "SLURM_CONTAINER": "container", "SRUN_CONTAINER": "container",
    "SLURM_CORE_SPEC": "core-spec", "SLURM_CPU_BIND": "cpu-bind", "SLURM_CPU_FREQ_REQ": "cpu-freq",
    "SLURM_CPUS_PER_GPU": "cpus-per-gpu", "SRUN_CPUS_PER_TASK": "cpus-per-task", "SLURM_DEBUG": "verbose",
    "SRUN_DEBUG": "verbose", "SLURM_DELAY_BOOT": "delay-boot", "SLURM_DEPENDENCY": "dependency",
    "SLURM_DISABLE_STATUS": "disable-status", "SLURM_DISTRIBUTION": "distribution", "SLURM_EPILOG": "epilog",
    "SLURM_EXACT": "exact", "SLURM_EXCLUSIVE": "exclusive", "SLURM_EXPORT_ENV": "export",
    "SRUN_EXPORT_ENV": "export", "SLURM_GPU_BIND": "gpu-bind", "SLURM_GPU_FREQ": "gpu-freq",
    "SLURM_GPUS": "gpus", "SLURM_GPUS_PER_NODE": "gpus-per-node", "SLURM_GPUS_PER_SOCKET": "gpus-per-socket",
    "SLURM_GPUS_PER_TASK": "gpus-per-task", "SLURM_GRES": "gres", "SLURM_STEP_GRES": "gres",
    "SLURM_GRES_FLAGS": "gres-flags", "SLURM_HINT": "hint", "SLURM_IMMEDIATE": "immediate",
    "SLURM_JOB_ID": "jobid", "SLURM_JOB_NAME": "job-name", "SLURM_JOB_NUM_NODES": "nodes", "SLURM_NNODES": "nodes",
    "SLURM_KILL_BAD_EXIT": "kill-on-bad-exit", "SLURM_LABELIO": "label", "SLURM_MEM_BIND": "mem-bind",
    "SLURM_MEM_PER_CPU": "mem-per-cpu", "SLURM_MEM_PER_GPU": "mem-per-gpu", "SLURM_MEM_PER_NODE": "mem",
    "SLURM_MPI_TYPE": "mpi", "SLURM_NCORES_PER_SOCKET": "cores-per-socket", "SLURM_NETWORK": "network",
    "SLURM_NO_KILL": "no-kill", "SLURM_NPROCS": "ntasks", "SLURM_NTASKS": "ntasks",
    "SLURM_NSOCKETS_PER_NODE": "sockets-per-node", "SLURM_NTASKS_PER_CORE": "ntasks-per-core",
    "SLURM_NTASKS_PER_GPU": "ntasks-per-gpu", "SLURM_NTASKS_PER_NODE": "ntasks-per-node",
    "SLURM_NTASKS_PER_SOCKET": "ntasks-per-socket", "SLURM_NTASKS_PER_TRES": "ntasks-per-tres",
    "SLURM_OPEN_MODE": "open-mode", "SLURM_OVERCOMMIT": "overcommit", "SLURM_OVERLAP": "overlap",
    "SLURM_PARTITION": "partition", "SLURM_POWER": "power", "SLURM_PROFILE": "profile", "SLURM_PROLOG": "prolog",
    "SLURM_QOS": "qos", "SLURM_REMOTE_CWD": "chdir", "SLURM_WORKING_DIR": "chdir", "SLURM_REQ_SWITCH": "switches",
    "SLURM_WAIT4SWITCH": "switches", "SLURM_RESERVATION": "reservation", "SLURM_RESV_PORTS": "resv-ports",
    "SLURM_SEND_LIBS": "send-libs", "SLURM_SIGNAL": "signal", "SLURM_SPREAD_JOB": "spread-job",
    "SLURM_STDERRMODE": "error", "SLURM_STDINMODE": "input", "SLURM_STDOUTMODE": "output",
    "SLURM_TASK_EPILOG": "task-epilog", "SLURM_TASK_PROLOG": "task-prolog", "SLURM_THREAD_SPEC": "thread-spec",
    "SLURM_THREADS": "threads", "SLURM_THREADS_PER_CORE": "threads-per-core", "SLURM_TIMELIMIT": "time",
    "SLURM_UNBUFFEREDIO": "unbuffered", "SLURM_USE_MIN_NODES": "use-min-nodes", "SLURM_WAIT": "wait",
    "SLURM_WCKEY": "wckey", "SLURMD_DEBUG": "slurmd-debug",
}
# Where srun reads a variable twice, the later one wins (SRUN_EXPORT_ENV over SLURM_EXPORT_ENV).
ENV_ORDER = ("SLURM_EXPORT_ENV", "SRUN_EXPORT_ENV", "SLURM_WORKING_DIR", "SLURM_REMOTE_CWD")


def env_options(env: Mapping[str, str]) -> List[Option]:
    """The options srun takes from these variables, in the order srun applies them (the command
    line's come after and win). Written as the variable, so that a message names it."""
    names = [n for n in sorted(env) if n in ENV_OPTIONS and n not in ENV_ORDER]
    names += [n for n in ENV_ORDER if n in env]
    return [Option(ENV_OPTIONS[n], env[n], (), f"${n}") for n in names]


# What a value of --output, --error or --input may be besides a filename pattern (srun's "IO
# Redirection"): all, none, a task id. /dev/null means the same on every machine.
IO_MODES = re.compile(r"(?i:all|none)|[0-9]+|/dev/null")
PATTERN = re.compile(r"%(%|[0-9]*([AaJjNnstux])|)")
NUMERIC = set("AaJjnst")


def is_io_mode(value: str) -> bool:
    return IO_MODES.fullmatch(value) is not None


def pattern_problem(pattern: str) -> Optional[str]:
    """Why a filename pattern is not one this reads the way srun does, or None."""
    if "\\" in pattern:
        return "a backslash (srun then takes the rest literally) is not taken here"
    for match in PATTERN.finditer(pattern):
        if not match.group(1):
            bad = pattern[match.start():match.start() + 2]
            return f"'{bad}' is not one of srun's patterns (%% %A %a %J %j %N %n %s %t %u %x)"
    return None


def expand(pattern: str, values: Mapping[str, str]) -> str:
    """A filename pattern with a task's values (letter -> value; numeric ones zero-padded to the
    width given, as srun does: job%4j -> job0128)."""
    def one(match: re.Match) -> str:
        if match.group(1) == "%":
            return "%"
        letter = match.group(2)
        width = match.group(1)[:-1]
        value = values[letter]
        return value.zfill(int(width)) if width and letter in NUMERIC else value
    return PATTERN.sub(one, pattern)


def exported(value: Optional[str], env: Mapping[str, str]) -> Dict[str, str]:
    """The environment --export=value gives a step's tasks from the caller's env (man srun, 22.05):
    ALL (the default): all of it; NONE: none of the user's (Slurm's SLURM_* only); NAME and
    NAME=value lists: SLURM_* with the names, their values from env or the one given; ALL with a
    list: all of env, and the given values only for names env does not have."""
    if value is None or value.strip().upper() == "ALL":
        return dict(env)
    slurm = {k: v for k, v in env.items() if k.startswith("SLURM_")}
    if value.strip().upper() == "NONE":
        return slurm
    tokens = _quoted_split(value)
    everything = any(t.upper() == "ALL" for t in tokens)
    out = dict(env) if everything else slurm
    for token in tokens:
        if token.upper() == "ALL" or not token:
            continue
        name, eq, given = token.partition("=")
        if not eq:
            if name in env:
                out[name] = env[name]
        elif not (everything and name in env):
            out[name] = given
    return out


def _quoted_split(value: str) -> List[str]:
    """value split at commas outside quotes (srun's find_quote_token), the quotes kept."""
    out, current, quote = [], "", ""
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == ",":
            out.append(current)
            current = ""
            continue
        current += ch
    out.append(current)
    return out

