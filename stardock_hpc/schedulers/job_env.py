"""The variables sbatch sets from its options in the job's environment, for the backends that do
not run sbatch (slurmrestd, pyslurm): sbatch puts them in its own environment before sending it,
so a job script (and every srun inside it) sees them; slurmd adds others itself for every backend
(SLURM_JOB_ID, SLURM_MEM_PER_CPU, ...).

Measured against sbatch 22.05 on the testbed (one job per option set, `env` diffed against a job
without options; tests/integration/test_pyslurm_backend.py compares the three backends). The GPU
variables are from sbatch's manual ("OUTPUT ENVIRONMENT VARIABLES"): the testbed has no GPUs.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple

from stardock_hpc.slurm.options import Option

# Slurm's own spelling of --cpu-freq words and governors (cpu_freq_to_string)
CPU_FREQ_NAMES = {w.lower(): w for w in ("Low", "Medium", "High", "HighM1", "Conservative", "OnDemand",
                                          "Performance", "PowerSave", "UserSpace", "SchedUtil")}
PROFILE_ORDER = ("None", "Energy", "Lustre", "Network", "Task", "All")  # acct_gather_profile_to_string
Conv = Callable[[Optional[str]], Optional[str]]

# The credentials of the user's session: what authenticates a Slurm client as the user. SLURM_JWT
# is the one Slurm reads (every client command with auth/jwt, slurmrestd): whoever reads it acts as
# the user towards Slurm until it expires, submitting jobs among other things. A job needs none:
# inside an allocation Slurm authenticates its steps itself (munge and the job's credential), and
# Slurm documents srun with $SLURM_JWT set as unsupported. So it reaches neither a container nor the
# environment a REST or pyslurm submission sends unless the user names it (--export, --pass-env).
# (sbatch itself authenticates with it when it is set, so the sbatch backend leaves sbatch's
# environment as the user's; the node keeps it out of the container.) The user's other secrets (a
# registry password, a cloud key) are the job's business, not the session's: they are in the
# job's environment where --export=ALL puts them, and in the container only when named.
SESSION_CREDENTIALS = frozenset({"SLURM_JWT"})


def _same(value: Optional[str]) -> Optional[str]:
    return value


def _one(_value: Optional[str]) -> Optional[str]:
    return "1"


def _cpu_freq(value: Optional[str]) -> Optional[str]:
    def word(w: str) -> str:
        return CPU_FREQ_NAMES.get(w.lower(), w)
    rng, colon, governor = (value or "").partition(":")
    return "-".join(word(p) for p in rng.split("-")) + (":" + word(governor) if colon else "")


def _profile(value: Optional[str]) -> Optional[str]:
    names = {p.strip().lower() for p in (value or "").split(",") if p.strip()}
    return ",".join(p for p in PROFILE_ORDER if p.lower() in names) or value


def _open_mode(value: Optional[str]) -> Optional[str]:
    return "a" if (value or "").lower().startswith("a") else "t"


# option -> (variable, its value from the option's)
SET_BY_SBATCH: Dict[str, Tuple[str, Conv]] = {
    "cpus-per-task": ("SLURM_CPUS_PER_TASK", _same),
    "cpu-freq": ("SLURM_CPU_FREQ_REQ", _cpu_freq),
    "dependency": ("SLURM_JOB_DEPENDENCY", _same),
    "export": ("SLURM_EXPORT_ENV", _same),
    "hint": ("SLURM_HINT", _same),
    "mem-bind": ("SLURM_MEM_BIND", _same),
    "ntasks-per-core": ("SLURM_NTASKS_PER_CORE", _same),
    "ntasks-per-node": ("SLURM_NTASKS_PER_NODE", _same),
    "ntasks-per-socket": ("SLURM_NTASKS_PER_SOCKET", _same),
    "open-mode": ("SLURM_OPEN_MODE", _open_mode),
    "overcommit": ("SLURM_OVERCOMMIT", _one),
    "profile": ("SLURM_PROFILE", _profile),
    "threads-per-core": ("SLURM_THREADS_PER_CORE", _same),
    "cpus-per-gpu": ("SLURM_CPUS_PER_GPU", _same),
    "gpus": ("SLURM_GPUS", _same),
    "gpus-per-node": ("SLURM_GPUS_PER_NODE", _same),
    "gpus-per-socket": ("SLURM_GPUS_PER_SOCKET", _same),
    "gpus-per-task": ("SLURM_GPUS_PER_TASK", _same),
    "gpu-bind": ("SLURM_GPU_BIND", _same),
    "gpu-freq": ("SLURM_GPU_FREQ", _same),
    "mem-per-gpu": ("SLURM_MEM_PER_GPU", _same),
    "ntasks-per-gpu": ("SLURM_NTASKS_PER_GPU", _same),
}


def sbatch_variables(options: Iterable[Option], job_name: str) -> Dict[str, str]:
    """What sbatch would add to the job's environment for these options (lowest precedence first:
    the last of each name counts)."""
    last: Dict[str, Optional[str]] = {}
    for option in options:
        last[option.name] = option.value
    out = {"SLURM_JOB_NAME": last.get("job-name") or job_name}
    for name, value in last.items():
        if name in SET_BY_SBATCH:
            var, conv = SET_BY_SBATCH[name]
            converted = conv(value)
            if converted is not None:
                out[var] = converted
    if "ntasks" in last:
        out["SLURM_NTASKS"] = out["SLURM_NPROCS"] = str(last["ntasks"])
    if "mem-bind" in last:
        out["SLURM_MEM_BIND_VERBOSE"] = "verbose" if "verbose" in (last["mem-bind"] or "") else "quiet"
    dist = last.get("distribution")
    if dist is not None:
        if dist.startswith("plane"):
            out["SLURM_DISTRIBUTION"] = "plane"
            if "=" in dist:
                out["SLURM_DIST_PLANESIZE"] = dist.split("=", 1)[1]
        else:
            out["SLURM_DISTRIBUTION"] = dist
    export = last.get("export")
    if "get-user-env" in last or (export is not None and export.split(",")[0].upper() != "ALL"):
        out["SLURM_GET_USER_ENV"] = "1"
    return out


def without_session_credentials(env: Mapping[str, str], named: Iterable[str]) -> Dict[str, str]:
    """env without the credentials of the user's session, but those the user named."""
    keep = set(named)
    return {k: v for k, v in env.items() if k not in SESSION_CREDENTIALS or k in keep}
