"""What code in a job's container may ask of the host through Slurm's commands, as data.

The batch script runs in a container; Slurm's commands there are stand-ins that hand the command
to the job's wrapper on the host (jobs/steps.py), which runs Slurm's own as the user, with the
node's network and the user's home. The container is a boundary (DESIGN.md, "Trust, stated"):
what runs in it (the user's code, a library, an image someone else built) may ask for steps of its
job and for Slurm's facts, and nothing else; no request may make the host run a program or open a
path the container could not. So every option of every command is judged here by an allow-list
(an option not named is refused), and so is every variable the container set or changed:

  * srun: the options that shape a step pass as written; the ones naming files or the tasks'
    environment and working directory are taken by stardock in the container's own view
    (IN_CONTAINER: jobs/steps.py); the rest are refused with the reason. Variables that stand for
    an option (slurm/srun.py ENV_OPTIONS) are judged as that option;
  * scontrol, squeue, sacct, sinfo, sstat, scancel: their options, except the few that open a host
    file or act as another user; scontrol's commands by name (reading its facts and acting on jobs;
    no writing of files, no tokens, no administration, no interactive mode); their own formatting
    variables, never SLURM_CONF.

The option tables are each binary's own (slurm/getopt.py); the variables are the manuals'
ENVIRONMENT VARIABLES sections (Slurm 22.05) and what the binaries read besides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence

from stardock_hpc.slurm.getopt import Option, Table

PASS = "pass"                # given to the host's command as written
IN_CONTAINER = "container"   # srun: resolved by stardock in the container's view (jobs/steps.py)

HOST_PROGRAM = "it runs a program of the node, outside the container"
HOST_FILE = "it opens a file of the node (a host path), outside the container's view"
OTHER_USER = "it acts as another user or group"
ALLOCATION = "it is for a new job allocation; a step of this job takes none"
ADMIN = "it is an administrator's command"
NOT_HERE = "it is not among what a step from the container may ask for"

_PASS = (
    "accel-bind", "account", "acctg-freq", "comment", "constraint", "contiguous", "core-spec", "cores-per-socket",
    "cpu-bind", "cpu-freq", "cpus-per-gpu", "cpus-per-task", "disable-status", "distribution", "exact", "exclusive",
    "extra-node-info", "gpu-bind", "gpu-freq", "gpus", "gpus-per-node", "gpus-per-socket", "gpus-per-task", "gres",
    "gres-flags", "help", "het-group", "hint", "immediate", "job-name", "kill-on-bad-exit", "label", "licenses",
    "mem", "mem-bind", "mem-per-cpu", "mem-per-gpu", "mincpus", "mpi", "msg-timeout", "no-kill", "nodes", "ntasks",
    "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-node", "ntasks-per-socket", "ntasks-per-tres", "overcommit",
    "overlap", "oversubscribe", "partition", "prefer", "preserve-env", "propagate", "qos", "quiet",
    "quit-on-interrupt", "relative", "reservation", "resv-ports", "signal", "slurmd-debug", "sockets-per-node",
    "spread-job", "switches", "test-only", "thread-spec", "threads", "threads-per-core", "time", "time-min", "tmp",
    "unbuffered", "usage", "use-min-nodes", "verbose", "version", "wait", "wckey", "whole",
)
_IN_CONTAINER = ("chdir", "error", "exclude", "export", "input", "jobid", "multi-prog", "nodefile", "nodelist",
                 "open-mode", "output")
_REFUSED = {
    "prolog": HOST_PROGRAM + ", before the step",
    "epilog": HOST_PROGRAM + ", after the step",
    "task-prolog": HOST_PROGRAM + ", before each task",
    "task-epilog": HOST_PROGRAM + ", after each task",
    "bcast": "it copies a file of the node (a host path) to the nodes and runs that copy",
    "bcast-exclude": "it belongs to --bcast, which copies files of the node (host paths)",
    "send-libs": "it belongs to --bcast, which copies files of the node (host paths)",
    "compress": "it belongs to --bcast, which copies files of the node (host paths)",
    "container": "it runs an OCI bundle of the node (a host path) with the node's own runtime",
    "uid": OTHER_USER, "gid": OTHER_USER,
    "x11": "it forwards an X11 display of the node into the step",
    "bb": "it asks for a burst buffer, whose scripts run and files stage outside the container",
    "bbf": "it reads a burst buffer file of the node (a host path)",
    "reboot": "it reboots the nodes",
    "no-allocate": "it launches without an allocation (an administrator's option)",
    "pty": "it needs a terminal, which the script's srun does not have",
    "interactive": "it is srun's interactive step, for salloc",
    "clusters": "it sends the step to another cluster, outside this job",
    "cluster": "it sends the step to another cluster, outside this job",
    "cluster-constraint": "it sends the step to another cluster, outside this job",
    "profile": "it has the nodes write profiling files outside the container",
    "network": NOT_HERE, "context": NOT_HERE, "mcs-label": NOT_HERE, "power": NOT_HERE, "debugger-test": NOT_HERE,
    "begin": ALLOCATION, "deadline": ALLOCATION, "delay-boot": ALLOCATION, "dependency": ALLOCATION,
    "hold": ALLOCATION, "mail-type": ALLOCATION, "mail-user": ALLOCATION, "nice": ALLOCATION, "priority": ALLOCATION,
}
# every option of srun's table, judged: PASS, IN_CONTAINER or the reason it is refused
SRUN_OPTIONS: Dict[str, str] = {**{n: PASS for n in _PASS}, **{n: IN_CONTAINER for n in _IN_CONTAINER}, **_REFUSED}
# values that name a plugin: a plain name, never a path
PLUGIN_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def srun_problem(option: Option) -> Optional[str]:
    """Why srun's option may not be asked from the container, or None."""
    verdict = SRUN_OPTIONS.get(option.name, NOT_HERE)
    if verdict not in (PASS, IN_CONTAINER):
        return verdict
    if option.name == "mpi" and option.value is not None and not PLUGIN_NAME.fullmatch(option.value):
        return "its value names an MPI plugin: a plain name (srun --mpi=list), not a path"
    return None


# srun's variables that stand for no option, harmless on the host: PMI's tuning, exit codes,
# debug flags, how times print
SRUN_ENV_PASS: FrozenSet[str] = frozenset({
    "PMI_FANOUT", "PMI_FANOUT_OFF_HOST", "PMI_TIME", "SLURM_DEBUG_FLAGS", "SLURM_DIST_PLANESIZE", "SLURM_EXIT_ERROR",
    "SLURM_EXIT_IMMEDIATE", "SLURM_PMI_KVS_NO_DUP_KEYS", "SLURM_SRUN_REDUCE_TASK_EXIT_MSG",
    "SLURM_STEP_KILLED_MSG_NODE_ID", "SLURM_TIME_FORMAT", "SLURM_UMASK",
})
# srun's variables taken in the container's view like their option (jobs/steps.py)
SRUN_ENV_IN_CONTAINER: FrozenSet[str] = frozenset({"SLURM_HOSTFILE"})
OTHER_CONFIG = "it points Slurm's commands at another configuration or controller"
# variables no command may get from the container (a changed value is refused)
ENV_REFUSED = (
    (re.compile(r"SLURM_CONF\w*"), OTHER_CONFIG),
    (re.compile(r"SLURM_WORKING_CLUSTER|SLURM_NODE_ALIASES"), OTHER_CONFIG),
    (re.compile(r"(SLURM|SRUN)_\w*(PROLOG|EPILOG)\w*"), HOST_PROGRAM),
    (re.compile(r"SLURM_SPANK_\w*"), "it sets options of Slurm's plugins (SPANK) on the node"),
    (re.compile(r"SLURM_JOBID"), "it names another job than this one"),
)


def env_problem(name: str) -> Optional[str]:
    """Why the container may not set this variable for a host command, or None."""
    for pattern, why in ENV_REFUSED:
        if pattern.fullmatch(name):
            return why
    return None


SCONTROL = Table("scontrol", "adhM:FoQu:vV", (
    ("all", 0, 97), ("cluster", 1, 77), ("clusters", 1, 77), ("details", 0, 100), ("federation", 0, 261),
    ("future", 0, 70), ("help", 0, 104), ("hide", 0, 258), ("local", 0, 259), ("oneliner", 0, 111),
    ("quiet", 0, 81), ("sibling", 0, 260), ("uid", 1, 117), ("usage", 0, 104), ("verbose", 0, 118),
    ("version", 0, 86),
))
SQUEUE = Table("squeue", "A:ahi:j::lL:n:M:O:o:p:Pq:R:rs::S:t:u:U:vVw:", (
    ("accounts", 1, 65), ("all", 0, 97), ("array", 0, 114), ("array-unique", 0, 261), ("Format", 1, 79),
    ("format", 1, 111), ("federation", 0, 264), ("help", 0, 256), ("hide", 0, 258), ("iterate", 1, 105),
    ("jobs", 2, 106), ("local", 0, 262), ("long", 0, 108), ("licenses", 1, 76), ("cluster", 1, 77),
    ("clusters", 1, 77), ("me", 0, 265), ("name", 1, 110), ("noconvert", 0, 260), ("node", 1, 119),
    ("nodes", 1, 119), ("nodelist", 1, 119), ("noheader", 0, 104), ("partitions", 1, 112), ("priority", 0, 80),
    ("qos", 1, 113), ("reservation", 1, 82), ("sib", 0, 263), ("sibling", 0, 263), ("sort", 1, 83),
    ("start", 0, 259), ("steps", 2, 115), ("states", 1, 116), ("usage", 0, 257), ("user", 1, 117),
    ("users", 1, 117), ("verbose", 0, 118), ("version", 0, 86), ("json", 0, 272), ("yaml", 0, 273),
))
SACCT = Table("sacct", "aA:bBcC:DeE:f:F:g:hi:I:j:k:K:lLM:nN:o:pPq:r:s:S:Ttu:UvVW:x:X", (
    ("allusers", 0, 97), ("accounts", 1, 65), ("allocations", 0, 88), ("brief", 0, 98), ("batch-script", 0, 66),
    ("completion", 0, 99), ("constraints", 1, 67), ("delimiter", 1, 256), ("duplicates", 0, 68),
    ("federation", 0, 261), ("helpformat", 0, 101), ("help-fields", 0, 101), ("endtime", 1, 69),
    ("env-vars", 0, 264), ("file", 1, 102), ("flags", 1, 70), ("gid", 1, 103), ("group", 1, 103),
    ("help", 0, 104), ("local", 0, 257), ("name", 1, 258), ("nnodes", 1, 105), ("ncpus", 1, 73),
    ("jobs", 1, 106), ("timelimit-min", 1, 107), ("timelimit-max", 1, 75), ("long", 0, 108),
    ("allclusters", 0, 76), ("cluster", 1, 77), ("clusters", 1, 77), ("nodelist", 1, 78), ("noconvert", 0, 259),
    ("units", 1, 260), ("noheader", 0, 110), ("fields", 1, 111), ("format", 1, 111), ("parsable", 0, 112),
    ("parsable2", 0, 80), ("qos", 1, 113), ("partition", 1, 114), ("reason", 1, 82), ("state", 1, 115),
    ("starttime", 1, 83), ("truncate", 0, 84), ("uid", 1, 117), ("use-local-uid", 0, 263), ("usage", 0, 85),
    ("user", 1, 117), ("verbose", 0, 118), ("version", 0, 86), ("wckeys", 1, 87), ("whole-hetjob", 2, 262),
    ("associations", 1, 120), ("json", 0, 265), ("yaml", 0, 272),
))
SINFO = Table("sinfo", "adehi:lM:n:No:O:p:rRsS:t:TvV", (
    ("all", 0, 97), ("dead", 0, 100), ("exact", 0, 101), ("federation", 0, 261), ("help", 0, 256),
    ("hide", 0, 258), ("iterate", 1, 105), ("local", 0, 259), ("long", 0, 108), ("cluster", 1, 77),
    ("clusters", 1, 77), ("nodes", 1, 110), ("noconvert", 0, 260), ("noheader", 0, 104), ("Node", 0, 78),
    ("format", 1, 111), ("Format", 1, 79), ("partition", 1, 112), ("responding", 0, 114),
    ("list-reasons", 0, 82), ("summarize", 0, 115), ("sort", 1, 83), ("states", 1, 116), ("reservation", 0, 84),
    ("usage", 0, 257), ("verbose", 0, 118), ("version", 0, 86), ("json", 0, 262), ("yaml", 0, 263),
))
SSTAT = Table("sstat", "aehij:no:pPvV", (
    ("allsteps", 0, 97), ("helpformat", 0, 101), ("help", 0, 104), ("jobs", 1, 106), ("noheader", 0, 110),
    ("fields", 1, 111), ("format", 1, 111), ("noconvert", 0, 256), ("pidformat", 0, 105), ("parsable", 0, 112),
    ("parsable2", 0, 80), ("usage", 0, 3), ("verbose", 0, 118), ("version", 0, 86),
))
SCANCEL = Table("scancel", "A:bfHiM:n:p:Qq:R:s:t:u:vVw:", (
    ("account", 1, 65), ("batch", 0, 98), ("ctld", 0, 258), ("full", 0, 102), ("help", 0, 256),
    ("hurry", 0, 72), ("interactive", 0, 105), ("cluster", 1, 77), ("clusters", 1, 77), ("jobname", 1, 110),
    ("me", 0, 261), ("name", 1, 110), ("nodelist", 1, 119), ("partition", 1, 112), ("qos", 1, 113),
    ("quiet", 0, 81), ("reservation", 1, 82), ("sibling", 1, 260), ("signal", 1, 115), ("state", 1, 116),
    ("usage", 0, 257), ("user", 1, 117), ("verbose", 0, 118), ("version", 0, 86), ("wckey", 1, 259),
))


@dataclass(frozen=True)
class Client:
    """One of Slurm's other commands: its table, its options refused (name -> why; the rest of
    its table passes) and the variables of its own it may take from the container."""

    table: Table
    refused: Dict[str, str]
    env: FrozenSet[str]


# what Slurm stored of your jobs' submissions: their environments may hold credentials (SLURM_JWT),
# stardock's job scripts a notebook's token
STORED = "it prints what your jobs were submitted with (environments, scripts), credentials included"
_COMMON_ENV = ("SLURM_BITSTR_LEN", "SLURM_CLUSTERS", "SLURM_DEBUG_FLAGS", "SLURM_TIME_FORMAT")
CLIENTS: Dict[str, Client] = {
    "scontrol": Client(SCONTROL, {"uid": OTHER_USER}, frozenset({
        *_COMMON_ENV, "SCONTROL_ALL", "SCONTROL_FEDERATION", "SCONTROL_FUTURE", "SCONTROL_LOCAL", "SCONTROL_SIB",
        "SCONTROL_SIBLING", "SLURM_TOPO_LEN", "SLURM_JOB_NODELIST", "SLURM_NODELIST"})),
    "squeue": Client(SQUEUE, {}, frozenset({
        *_COMMON_ENV, "SQUEUE_ACCOUNT", "SQUEUE_ALL", "SQUEUE_ARRAY", "SQUEUE_ARRAY_UNIQUE", "SQUEUE_FEDERATION",
        "SQUEUE_FORMAT", "SQUEUE_FORMAT2", "SQUEUE_LICENSES", "SQUEUE_LOCAL", "SQUEUE_NAMES", "SQUEUE_PARTITION",
        "SQUEUE_PRIORITY", "SQUEUE_QOS", "SQUEUE_SIB", "SQUEUE_SIBLING", "SQUEUE_SORT", "SQUEUE_STATES",
        "SQUEUE_USERS"})),
    "sacct": Client(SACCT, {"file": HOST_FILE, "env-vars": STORED, "batch-script": STORED}, frozenset({
        *_COMMON_ENV, "SACCT_FEDERATION", "SACCT_FORMAT", "SACCT_LOCAL"})),
    "sinfo": Client(SINFO, {}, frozenset({
        *_COMMON_ENV, "SINFO_ALL", "SINFO_FEDERATION", "SINFO_FORMAT", "SINFO_LOCAL", "SINFO_PARTITION",
        "SINFO_SORT"})),
    "sstat": Client(SSTAT, {}, frozenset(_COMMON_ENV)),
    "scancel": Client(SCANCEL, {}, frozenset({
        *_COMMON_ENV, "SCANCEL_ACCOUNT", "SCANCEL_BATCH", "SCANCEL_CTLD", "SCANCEL_FULL", "SCANCEL_HURRY",
        "SCANCEL_INTERACTIVE", "SCANCEL_NAME", "SCANCEL_PARTITION", "SCANCEL_QOS", "SCANCEL_STATE", "SCANCEL_USER",
        "SCANCEL_VERBOSE", "SCANCEL_WCKEY"})),
}

# scontrol's commands (its manual and the binary's strings). scontrol takes any prefix of a
# command long enough to tell it apart, case-insensitively; here a word is judged by every
# command it could be the prefix of, so no abbreviation reaches one that is refused.
INTERACTIVE = "it belongs to scontrol's interactive mode, which reads commands from standard input"
SCONTROL_COMMANDS: Dict[str, str] = {
    **{c: PASS for c in ("completing", "errnumstr", "help", "hold", "listpids", "notify", "pidinfo", "ping",
                         "release", "requeue", "requeuehold", "show", "top", "uhold", "update", "version",
                         "wait_job")},
    "write": "it writes files of the node (host paths): the batch script or the configuration",
    "token": "it makes a Slurm token (JWT) that acts as you from anywhere, outside the container",
    **{c: ADMIN for c in ("abort", "cancel_reboot", "create", "delete", "fsdampeningfactor", "reboot",
                          "reboot_nodes", "reconfigure", "resume", "schedloglevel", "setdebug", "setdebugflags",
                          "shutdown", "suspend", "takeover")},
    **{c: INTERACTIVE for c in ("!!", "all", "cluster", "details", "exit", "hide", "oneliner", "quiet", "quit",
                                "verbose")},
    **{c: NOT_HERE for c in ("callerid", "getent", "gethost")},
}
SHOW_ENTITIES: Dict[str, str] = {
    **{e: PASS for e in ("aliases", "assoc_mgr", "burstbuffer", "config", "daemons", "federation", "frontend",
                         "hostlist", "hostlistsorted", "hostnames", "job", "jobs", "licenses", "node", "nodes",
                         "partition", "partitions", "reservation", "reservations", "slurmd", "step", "steps",
                         "topology")},
    **{e: "it runs the burst buffer's status program (dwstat) with your arguments" for e in ("bbstat", "dwstat")},
}
HOST_LISTS = ("hostlist", "hostlistsorted", "hostnames")  # which read a file when a word names one
# `scontrol update` of jobs and steps: their fields (scontrol(1), JOBS/STEPS - SPECIFICATIONS
# FOR UPDATE COMMAND). scontrol updates a job when a word is JobId= or JobName= (a prefix of at
# least 3 letters), else a step for StepId= (4), before any other entity's tag (NodeName=...):
# one of those is required, and every other word must be a field here that is allowed.
UPDATE_FIELDS: Dict[str, str] = {
    **{f: PASS for f in (
        "account", "arraytaskthrottle", "comment", "contiguous", "corespec", "cpuspertask", "deadline", "delayboot",
        "dependency", "eligibletime", "endtime", "excnodelist", "features", "gres", "jobid", "jobname", "licenses",
        "mailtype", "mailuser", "mincpusnode", "minmemorycpu", "minmemorynode", "mintmpdisknode", "name", "nice",
        "nodelist", "numcpus", "numnodes", "numtasks", "oversubscribe", "partition", "prefer", "priority", "qos",
        "reqcores", "reqnodelist", "reqnodes", "reqprocs", "reqsockets", "reqthreads", "requeue",
        "reservationname", "shared", "starttime", "stepid", "switches", "taskspernode", "threadspec", "timelimit",
        "timemin", "wait-for-switch", "wckey")},
    **{f: HOST_FILE for f in ("stderr", "stdin", "stdout", "workdir")},
    "burstbuffer": "it asks for a burst buffer, whose scripts run and files stage outside the container",
    "reboot": "it reboots the job's nodes",
    "userid": OTHER_USER,
    **{f: ADMIN for f in ("admincomment", "clusterfeatures", "clusters", "resetaccruetime", "sitefactor")},
}


def _judge(word: str, table: Dict[str, str], what: str) -> Optional[str]:
    """The verdict on a word that may abbreviate any of table's names: None when every name it
    could be is allowed."""
    low = word.lower()
    could = sorted(n for n in table if low and n.startswith(low))
    if not could:
        return f"{word!r} is refused: it is not {what} a job's container may use"
    refused = [n for n in could if table[n] != PASS]
    if refused:
        name = refused[0]
        why = table[name]
        return f"{word!r} is refused: {why}" if name == low else f"{word!r} is refused: it could be {name!r}, and {why}"
    return None


def scontrol_problem(operands: Sequence[str], options: List[Option]) -> Optional[str]:
    """Why this scontrol command line may not be asked from the container, or None."""
    if not operands:
        if any(o.name in ("help", "version") for o in options):
            return None
        return ("scontrol without a command is refused: it reads commands from standard input (its interactive "
                "mode), which a job's container may not use; give the command on scontrol's command line")
    command, rest = operands[0], list(operands[1:])
    why = _judge(command, SCONTROL_COMMANDS, "a command of scontrol")
    if why:
        return why
    low = command.lower()
    if "show".startswith(low) and rest:
        entity, _eq, value = rest[0].partition("=")
        why = _judge(entity, SHOW_ENTITIES, "a thing scontrol shows that")
        if why:
            return why
        if any(e.startswith(entity.lower()) for e in HOST_LISTS) and any("/" in w for w in [value, *rest[1:]]):
            return f"{' '.join(operands)!r} is refused: a host list given as a file (a word with '/') is read " \
                   "from the node (a host path)"
    if "update".startswith(low):
        keys = [w.partition("=")[0] for w in rest]
        for key in keys:
            why = _judge(key, UPDATE_FIELDS, "a field of a job or step that")
            if why:
                return why
        if not any(_tag(k, ("jobid", "jobname"), 3) or _tag(k, ("stepid",), 4) for k in keys):
            return ("this update is refused: only jobs (JobId=...) and steps (StepId=...) are updated from a job's "
                    "container")
    return None


def _tag(key: str, names: Sequence[str], shortest: int) -> bool:
    """Whether scontrol reads key as one of these tags (a prefix of at least `shortest` letters)."""
    low = key.lower()
    return len(low) >= shortest and any(n.startswith(low) for n in names)
