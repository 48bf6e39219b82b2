"""sbatch options as a job description, for the backends that do not run sbatch (slurmrestd, pyslurm).

sbatch reads its options from three places: the script's #SBATCH lines, then $SBATCH_* variables,
then the command line, each winning over the one before. slurmrestd and pyslurm read none of them,
so these backends must. One table (RULES) says what every sbatch option becomes: a REST job field
(v0.0.38 names; rest_versions renames them for older API versions) with its converter, and the
pyslurm JobSubmitDescription attribute where the meaning is the same. What a backend cannot carry
is refused by name with the reason, never dropped.
"""
from __future__ import annotations

import os
import re
import resource
import socket
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.schedulers.base import Submission
from stardock_hpc.schedulers.job_env import sbatch_variables
from stardock_hpc.slurm import values
from stardock_hpc.slurm.options import LONG, Option
from stardock_hpc.slurm.script import parse_script


class Refused(Exception):
    """A value this backend cannot carry (the message says why)."""


@dataclass(frozen=True)
class Ctx:
    cwd: str                                  # where the user submitted from


Conv = Callable[[Optional[str], Ctx], Any]


def text(value: Optional[str], _ctx: Ctx) -> Any:
    return value


def integer(value: Optional[str], _ctx: Ctx) -> Any:
    if value is None or not re.fullmatch(r"[0-9]+", value.strip()):
        raise UsageError(f"{value!r} is not a whole number")
    return int(value)


def minutes(value: Optional[str], _ctx: Ctx) -> Any:
    """sbatch's times as Slurm keeps them: whole minutes, rounded up; unlimited stays the word
    UNLIMITED, which the server reads as sbatch does."""
    return values.whole_minutes(value or "")


def megabytes(value: Optional[str], _ctx: Ctx) -> Any:
    """sbatch's sizes (Slurm's str_to_mbytes): a number of MB, or with a K, M, G or T suffix."""
    return values.mem_mb(value or "")


def py_megabytes(value: Optional[str], ctx: Ctx) -> Any:
    mb = megabytes(value, ctx)
    if mb == 0:  # sbatch's --mem=0: all of each node's memory
        raise Refused("pyslurm 22.5 sends a size of 0 as 'not set' (its u64(0) is NO_VAL), so the job "
                      "would get the default memory instead of all of it")
    return mb


def py_seconds_of_minutes(value: Optional[str], ctx: Ctx) -> Any:
    """sbatch reads --delay-boot in minutes; pyslurm's delay_boot_time is a time string in seconds
    (a bare number there means seconds)."""
    mins = minutes(value, ctx)
    return mins if mins == values.UNLIMITED else values.duration(mins * 60)


def py_distribution(value: Optional[str], _ctx: Ctx) -> Any:
    """pyslurm 22.5 builds a distribution from sbatch's form but fills the levels left out with
    "cyclic" and None, which Slurm refuses ("cyclic:cyclic:None"); all three levels, or plane, pass."""
    levels = (value or "").split(",", 1)[0]
    if not levels.startswith("plane") and len(levels.split(":")) != 3:
        raise Refused("pyslurm 22.5 cannot describe a distribution without all three levels (it fills in "
                      "\"cyclic:None\", which Slurm refuses, and three levels are a different distribution); give "
                      "node:socket:core, e.g. block:cyclic:cyclic, or plane=N")
    return value


CPU_FREQ_WORDS = {"low", "medium", "high", "highm1"}


def py_cpu_frequency(value: Optional[str], _ctx: Ctx) -> Any:
    """sbatch's --cpu-freq=p1[-p2[:gov]] as pyslurm's dict: pyslurm's own parser reads a single word
    (low, medium, high, highm1) as a governor and refuses it."""
    text_value = value or ""
    rng, _colon, governor = text_value.partition(":")
    low, dash, high = rng.partition("-")
    if not dash and not governor and low.lower() not in CPU_FREQ_WORDS and not low.isdigit():
        return {"governor": low}          # a governor alone (performance, ondemand, ...)
    freq: Dict[str, str] = {"max": high} if dash else {"max": low}
    if dash:
        freq["min"] = low
    if governor:
        freq["governor"] = governor
    return freq


def absolute(value: Optional[str], ctx: Ctx) -> Any:
    # slurmrestd would resolve a relative path against its own working directory: sbatch's is the user's
    return value if (value or "").startswith("/") else f"{ctx.cwd}/{value}"


def nice(value: Optional[str], _ctx: Ctx) -> Any:
    if value is None:
        return 100  # sbatch's --nice without a value
    if not re.fullmatch(r"[-+]?[0-9]+", value.strip()):
        raise UsageError(f"{value!r} is not a whole number")
    return int(value)


def const(result: Any) -> Conv:
    return lambda _value, _ctx: result


def yes_no(value: Optional[str], _ctx: Ctx) -> Any:
    if (value or "").lower() not in ("yes", "no"):
        raise UsageError(f"{value!r}: give yes or no")
    return value.lower() == "yes"  # type: ignore[union-attr]


def signal(value: Optional[str], _ctx: Ctx) -> Any:
    if (value or "").upper().startswith("B:"):
        raise Refused("slurmrestd 22.05 rejects the B: flag (\"Invalid SIGNAL specification\")")
    return value


def exclusive(value: Optional[str], _ctx: Ctx) -> Any:
    return value or "exclusive"  # what slurmrestd 22.05 reads as a bare --exclusive (not "true")


@dataclass(frozen=True)
class Rule:
    rest: Optional[str]                   # the REST job field (v0.0.38 name); None: REST cannot carry it
    conv: Conv = text
    pyslurm: Optional[str] = None         # the JobSubmitDescription attribute; None: pyslurm cannot
    py_conv: Optional[Conv] = None        # pyslurm's value, when it differs from the REST one
    rest_why: str = ""                    # why REST refuses it
    py_why: str = ""                      # why pyslurm refuses it


def same(rest: str, conv: Conv = text, pyslurm: Optional[str] = None, py_conv: Optional[Conv] = None) -> Rule:
    return Rule(rest, conv, pyslurm or rest, py_conv)


def rest_only(rest: str, conv: Conv = text, py_why: str = "JobSubmitDescription has no such attribute") -> Rule:
    return Rule(rest, conv, None, None, "", py_why)


def py_only(pyslurm: str, rest_why: str, py_conv: Conv = text) -> Rule:
    return Rule(None, text, pyslurm, py_conv, rest_why)


def neither(why: str, py_why: str = "") -> Rule:
    return Rule(None, text, None, None, why, py_why or why)


DISABLED = "disabled in slurmrestd (it refuses the field)"
NO_ATTR = "JobSubmitDescription has no such attribute"
NEVER_SENT = "pyslurm 22.5 takes the attribute but never sends it to Slurm (its setter is never called)"
# Options that change only what the submitting command does, not the job: each backend honours them
# itself (stardock prints what sbatch would), so they are carried, not dropped.
CLIENT_SIDE = {"parsable", "quiet", "verbose", "ignore-pbs", "export", "wrap"}

RULES: Dict[str, Rule] = {
    "account": same("account"),
    "acctg-freq": same("account_gather_frequency", pyslurm="accounting_gather_frequency"),
    "array": same("array"),
    "batch": same("batch_features", pyslurm="batch_constraints"),
    "bb": rest_only("burst_buffer"),
    "bbf": neither("a burst buffer file is read by sbatch on the submit host"),
    "begin": same("begin_time"),
    "chdir": same("current_working_directory", absolute, pyslurm="working_directory"),
    "cluster-constraint": same("cluster_constraint", pyslurm="cluster_constraints"),
    "clusters": py_only("clusters", "slurmrestd submits to its own cluster only (" + DISABLED + ")"),
    "comment": same("comment"),
    "constraint": same("constraints"),
    "container": same("container"),
    "context": neither("an SELinux context is set by sbatch on the submit host; slurmrestd 22.05 and "
                       "JobSubmitDescription carry none"),
    "contiguous": py_only("requires_contiguous_nodes", DISABLED, const(True)),
    "core-spec": rest_only("core_specification", integer, py_why=NEVER_SENT),
    "cores-per-socket": same("cores_per_socket", integer),
    "cpu-freq": same("cpu_frequency", py_conv=py_cpu_frequency),
    "cpus-per-gpu": same("cpus_per_gpu", py_conv=integer),
    "cpus-per-task": same("cpus_per_task", integer),
    "deadline": same("deadline"),
    "delay-boot": same("delay_boot", pyslurm="delay_boot_time", py_conv=py_seconds_of_minutes),
    "dependency": same("dependency", pyslurm="dependencies"),
    "distribution": same("distribution", py_conv=py_distribution),
    "error": same("standard_error"),
    "exclude": same("exclude_nodes", pyslurm="excluded_nodes"),
    "exclusive": Rule("exclusive", exclusive, "resource_sharing",
                      lambda v, _c: {None: "no", "user": "user", "mcs": "mcs"}.get(v, v)),
    "export-file": neither("the file is read by sbatch on the submit host"),
    "extra-node-info": neither(DISABLED, NO_ATTR),
    # slurmrestd 22.05 reads null as the bare flag (true is "Invalid ... specification")
    "get-user-env": Rule("get_user_environment", text, "get_user_environment", lambda v, _c: v or True),
    "gid": py_only("group_id", "slurmrestd runs the job as the token's user and group"),
    "gpu-bind": same("gpu_binding"),
    "gpu-freq": rest_only("gpu_frequency"),
    "gpus": same("gpus"),
    "gpus-per-node": rest_only("gpus_per_node", py_why="pyslurm takes GPUs per node through gres_per_node"),
    "gpus-per-socket": same("gpus_per_socket"),
    "gpus-per-task": same("gpus_per_task"),
    "gres": same("gres", pyslurm="gres_per_node"),
    "gres-flags": same("gres_flags", pyslurm="gres_binding"),
    "help": neither("it asks sbatch for its help text, it does not describe a job"),
    "hint": neither("sbatch turns --hint into socket, core and thread requests itself; slurmrestd does not "
                    "(the job would differ)", NO_ATTR),
    "hold": Rule("hold", const(True), "priority", const(0)),
    "input": same("standard_input", pyslurm="standard_in"),
    "job-name": same("name"),
    "kill-on-invalid-dep": same("kill_on_invalid_dependency", yes_no),
    "licenses": same("licenses"),
    "mail-type": same("mail_type", pyslurm="mail_types"),
    "mail-user": same("mail_user"),
    "mcs-label": same("mcs_label"),
    "mem": same("memory_per_node", megabytes, py_conv=py_megabytes),
    "mem-bind": rest_only("memory_binding"),
    "mem-per-cpu": same("memory_per_cpu", megabytes, py_conv=py_megabytes),
    "mem-per-gpu": same("memory_per_gpu", megabytes),
    "mincpus": rest_only("minimum_cpus_per_node", integer,
                         py_why="pyslurm 22.5 sends it as the job's total minimum of CPUs, not per node"),
    "network": py_only("network", DISABLED),
    "nice": same("nice", nice),
    "no-kill": same("no_kill", text, pyslurm="kill_on_node_fail",  # null: the bare flag, as above
                    py_conv=lambda v, _c: (v or "").lower() == "off"),
    # slurmrestd 22.05 ignores "requeue": false; its no_requeue field works
    "no-requeue": Rule("no_requeue", const(True), "is_requeueable", const(False)),
    "nodefile": neither("the file is read by sbatch on the submit host"),
    "nodelist": same("nodelist", pyslurm="required_nodes"),
    # sbatch's spelling: the schema's [min, max] list loses the maximum in 22.05 ([1, 2] gives NumNodes=1)
    "nodes": same("nodes"),
    "ntasks": same("tasks", integer, pyslurm="ntasks"),
    "ntasks-per-core": same("tasks_per_core", integer, pyslurm="ntasks_per_core"),
    "ntasks-per-gpu": same("ntasks_per_gpu", integer),
    "ntasks-per-tres": neither("slurmrestd 22.05 has no such field", NO_ATTR),
    "ntasks-per-node": same("tasks_per_node", integer, pyslurm="ntasks_per_node"),
    "ntasks-per-socket": same("tasks_per_socket", integer, pyslurm="ntasks_per_socket"),
    "open-mode": same("open_mode", pyslurm="log_files_open_mode"),
    "output": same("standard_output"),
    "overcommit": py_only("overcommit", DISABLED, const(True)),
    "oversubscribe": py_only("resource_sharing", DISABLED, const("yes")),
    "partition": same("partition", pyslurm="partitions"),
    "power": neither(DISABLED, NO_ATTR),
    "prefer": rest_only("prefer"),
    "priority": same("priority", py_conv=integer),
    "profile": same("profile", pyslurm="profile_types"),
    "propagate": neither(DISABLED, NO_ATTR),
    "qos": same("qos"),
    "reboot": py_only("requires_node_reboot", DISABLED, const(True)),
    "requeue": same("requeue", const(True), pyslurm="is_requeueable"),
    "reservation": same("reservation", pyslurm="reservations"),
    "signal": rest_only("signal", signal, py_why=NEVER_SENT),
    "sockets-per-node": same("sockets_per_node", integer),
    "spread-job": same("spread_job", const(True), pyslurm="spreads_over_nodes"),
    "switches": neither(DISABLED, NEVER_SENT),
    "test-only": neither("it asks whether the job could run and submits nothing; use --backend sbatch"),
    "thread-spec": rest_only("thread_specification", integer, py_why=NEVER_SENT),
    "threads-per-core": same("threads_per_core", integer),
    # whole minutes for both: pyslurm hands a plain number through as a string, which libslurm cannot take
    "time": same("time_limit", minutes),
    "time-min": same("time_minimum", minutes, pyslurm="time_limit_min"),
    "tmp": same("temporary_disk_per_node", megabytes),
    "uid": py_only("user_id", "slurmrestd runs the job as the token's user"),
    "usage": neither("it asks sbatch for its usage text, it does not describe a job"),
    "use-min-nodes": same("minimum_nodes", const(True), pyslurm="use_min_nodes"),
    "version": neither("it asks sbatch for its version, it does not describe a job"),
    "wait": neither("waiting for the job's end is sbatch's own loop; use `stardock status` instead"),
    "wait-all-nodes": same("wait_all_nodes", text, py_conv=lambda v, _c: (v or "").strip() == "1"),
    "wckey": same("wckey"),
}
# Options whose fields exclude each other: the later one wins, as with sbatch.
EXCLUSIVE_GROUPS = (("mem", "mem-per-cpu", "mem-per-gpu"), ("requeue", "no-requeue"))
# sbatch's memory options are stricter (slurm_opt.c's _validate_memory_options): two of them in the
# script and command line together, or two in the environment, are an error; one from the script or
# command line beats the environment's.
MEMORY = ("mem", "mem-per-cpu", "mem-per-gpu")

# sbatch's input environment variables (man sbatch, 22.05) and the options they stand for.
ENV_OPTIONS: Dict[str, str] = {
    "SBATCH_ACCOUNT": "account", "SBATCH_ACCTG_FREQ": "acctg-freq", "SBATCH_ARRAY_INX": "array",
    "SBATCH_BATCH": "batch", "SBATCH_CLUSTERS": "clusters", "SLURM_CLUSTERS": "clusters",
    "SBATCH_CONSTRAINT": "constraint", "SBATCH_CONTAINER": "container", "SBATCH_CORE_SPEC": "core-spec",
    "SBATCH_CPUS_PER_GPU": "cpus-per-gpu", "SBATCH_DEBUG": "verbose", "SBATCH_DELAY_BOOT": "delay-boot",
    "SBATCH_DISTRIBUTION": "distribution", "SBATCH_EXCLUSIVE": "exclusive", "SBATCH_EXPORT": "export",
    "SBATCH_GET_USER_ENV": "get-user-env", "SBATCH_GPU_BIND": "gpu-bind", "SBATCH_GPU_FREQ": "gpu-freq",
    "SBATCH_GPUS": "gpus", "SBATCH_GPUS_PER_NODE": "gpus-per-node", "SBATCH_GPUS_PER_TASK": "gpus-per-task",
    "SBATCH_GRES": "gres", "SBATCH_GRES_FLAGS": "gres-flags", "SBATCH_HINT": "hint",
    "SBATCH_IGNORE_PBS": "ignore-pbs", "SBATCH_JOB_NAME": "job-name", "SBATCH_MEM_BIND": "mem-bind",
    "SBATCH_MEM_PER_CPU": "mem-per-cpu", "SBATCH_MEM_PER_GPU": "mem-per-gpu", "SBATCH_MEM_PER_NODE": "mem",
    "SBATCH_NETWORK": "network", "SBATCH_NO_KILL": "no-kill", "SBATCH_NO_REQUEUE": "no-requeue",
    "SBATCH_OPEN_MODE": "open-mode", "SBATCH_OVERCOMMIT": "overcommit", "SBATCH_PARTITION": "partition",
    "SBATCH_POWER": "power", "SBATCH_PROFILE": "profile", "SBATCH_QOS": "qos", "SBATCH_REQ_SWITCH": "switches",
    "SBATCH_REQUEUE": "requeue", "SBATCH_RESERVATION": "reservation", "SBATCH_SIGNAL": "signal",
    "SBATCH_SPREAD_JOB": "spread-job", "SBATCH_THREAD_SPEC": "thread-spec",
    "SBATCH_THREADS_PER_CORE": "threads-per-core", "SBATCH_TIMELIMIT": "time",
    "SBATCH_USE_MIN_NODES": "use-min-nodes", "SBATCH_WAIT": "wait", "SBATCH_WAIT_ALL_NODES": "wait-all-nodes",
    "SBATCH_WCKEY": "wckey",
}


def env_options(environ: Mapping[str, str]) -> List[Option]:
    out = []
    for var, name in ENV_OPTIONS.items():
        if var in environ:
            value = None if LONG[name] == "none" or (LONG[name] == "optional" and not environ[var]) \
                else environ[var]
            out.append(Option(name, value, (f"{var}={environ[var]}",)))
    return out


def gather(script: str, command_line: Sequence[Option], environ: Mapping[str, str],
           where: str = "job script") -> Tuple[List[Option], List[str]]:
    """Every sbatch option of a submission, lowest precedence first (the #SBATCH lines, then
    $SBATCH_*, then the command line), and the script's #PBS lines (which sbatch also reads)."""
    parsed = parse_script(script, None, where)
    directives = [o for _line, opts in parsed.sbatch_lines for o in opts]
    pbs = [line.strip() for line in parsed.header if line.strip().startswith("#PBS")]
    given, from_env = directives + list(command_line), env_options(environ)
    if len({o.name for o in given if o.name in MEMORY}) > 1:
        raise UsageError("--mem, --mem-per-cpu and --mem-per-gpu are mutually exclusive (in the job script and "
                         "on the command line together, as sbatch says)")
    if any(o.name in MEMORY for o in given):
        from_env = [o for o in from_env if o.name not in MEMORY]
    elif len({o.name for o in from_env if o.name in MEMORY}) > 1:
        raise UsageError("SBATCH_MEM_PER_NODE, SBATCH_MEM_PER_CPU and SBATCH_MEM_PER_GPU are mutually exclusive")
    return directives + from_env + list(command_line), pbs


def _spelled(option: Option) -> str:
    return " ".join(option.tokens) if option.tokens else f"--{option.name}"


def describe(options: Iterable[Option], ctx: Ctx, backend: str) -> Dict[str, Any]:
    """The job fields (REST names for backend "rest", JobSubmitDescription attributes for
    "pyslurm") of options given lowest precedence first. Raises one UsageError naming every
    option the backend cannot carry."""
    options = list(options)
    given = {o.name for o in options}
    fields: Dict[str, Any] = {}
    origin: Dict[str, str] = {}        # field -> the option that set it
    refused: List[str] = []
    for option in options:
        if option.name in CLIENT_SIDE:
            continue
        rule = RULES.get(option.name)
        target = None if rule is None else (rule.rest if backend == "rest" else rule.pyslurm)
        if rule is None or target is None:
            why = "not known to stardock" if rule is None else (rule.rest_why if backend == "rest" else rule.py_why)
            refused.append(f"{_spelled(option)}: {why}")
            continue
        conv = rule.conv if backend == "rest" or rule.py_conv is None else rule.py_conv
        try:
            value = conv(option.value, ctx)
        except Refused as exc:
            refused.append(f"{_spelled(option)}: {exc}")
            continue
        except UsageError as exc:
            raise UsageError(f"{_spelled(option)}: {exc.message}") from None
        for group in EXCLUSIVE_GROUPS:
            if option.name in group:
                for other in group:
                    other_rule = RULES[other]
                    other_field = other_rule.rest if backend == "rest" else other_rule.pyslurm
                    if other != option.name and other_field and origin.get(other_field) == other:
                        del fields[other_field], origin[other_field]
        fields[target] = value
        origin[target] = option.name
    if backend == "pyslurm" and "hold" in given:
        fields["priority"] = 0  # sbatch holds a job whatever --priority says; pyslurm holds by priority 0
    if refused:
        raise UsageError(f"the {backend} backend cannot carry these sbatch options:\n  " + "\n  ".join(refused),
                         hint="drop them, or submit with --backend sbatch")
    return fields


def export_environment(value: Optional[str], environ: Mapping[str, str]) -> Dict[str, str]:
    """The job's environment under sbatch's --export: ALL (the default) sends the submitting
    environment; ALL,VAR=value,... adds or replaces variables. NONE and lists without ALL make
    Slurm load the user's login environment on the node, which these backends cannot ask for."""
    env = dict(environ)
    if value is None:
        return env
    words = [w for w in value.split(",") if w]
    if not words or words[0].upper() != "ALL":
        raise UsageError(f"--export={value}: only ALL and ALL,VAR[=value],... can be sent without sbatch "
                         "(NONE and bare lists need sbatch's login-environment loading)",
                         hint="use --backend sbatch for this job")
    for word in words[1:]:
        name, eq, val = word.partition("=")
        if eq:
            env[name] = val
    return env  # a bare VAR after ALL is already in the environment


RLIMITS = {"CPU": "RLIMIT_CPU", "FSIZE": "RLIMIT_FSIZE", "DATA": "RLIMIT_DATA", "STACK": "RLIMIT_STACK",
           "CORE": "RLIMIT_CORE", "RSS": "RLIMIT_RSS", "NPROC": "RLIMIT_NPROC", "NOFILE": "RLIMIT_NOFILE",
           "MEMLOCK": "RLIMIT_MEMLOCK", "AS": "RLIMIT_AS"}


def submit_environment(env: Mapping[str, str], cwd: str) -> Dict[str, str]:
    """The variables sbatch adds to a job's environment (sbatch.c's _set_submit_dir_env,
    _set_umask_env, _set_prio_process_env, _set_rlimit_env): the job sees SLURM_SUBMIT_DIR/HOST,
    and slurmd applies the submitter's umask, nice value and resource limits from them."""
    out = dict(env)
    out["SLURM_SUBMIT_DIR"] = cwd
    out["SLURM_SUBMIT_HOST"] = socket.gethostname()
    if "SLURM_UMASK" not in out:
        mask = os.umask(0)
        os.umask(mask)
        out["SLURM_UMASK"] = f"0{mask >> 6 & 7}{mask >> 3 & 7}{mask & 7}"
    out["SLURM_PRIO_PROCESS"] = str(os.getpriority(os.PRIO_PROCESS, 0))
    for name, attr in RLIMITS.items():
        soft, _hard = resource.getrlimit(getattr(resource, attr))
        out[f"SLURM_RLIMIT_{name}"] = str(soft if soft != resource.RLIM_INFINITY else (1 << 64) - 1)
    return out


def describe_submission(submission: Submission, backend: str, server: str, cwd_field: str) -> Dict[str, Any]:
    """A submission as the job fields of a backend that does not run sbatch ("rest" or "pyslurm"),
    with what sbatch fills in itself: the exported environment, the script's file name as the
    job's name, the submit directory as its working directory (cwd_field names that field).
    server names the reader in messages."""
    options, pbs = gather(submission.script, submission.options, submission.environ)
    if pbs and "ignore-pbs" not in {o.name for o in options}:
        raise UsageError(f"the job script has #PBS lines, which sbatch would read but {server} cannot:\n  "
                         + "\n  ".join(pbs), hint="turn them into #SBATCH lines, or add --ignore-pbs")
    fields = describe(options, Ctx(str(submission.cwd)), backend)
    export = [o.value for o in options if o.name == "export"]
    environment = export_environment(export[-1] if export else None, submission.environ)
    fields.setdefault("name", submission.script_name or "sbatch")
    fields["environment"] = {**submit_environment(environment, str(submission.cwd)),
                             **sbatch_variables(options, fields["name"])}
    fields.setdefault(cwd_field, str(submission.cwd))
    return fields
