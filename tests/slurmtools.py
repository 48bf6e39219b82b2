"""Small helpers the integration tests use to drive the real Slurm cluster."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
SACCT_FIELDS = ["JobID", "JobName", "State", "ExitCode", "MaxRSS", "ReqMem", "Timelimit",
                "AllocCPUS", "Elapsed", "User"]


def job_cgroup_tasks(node: str, job: str) -> List[int]:
    """The processes still in the job's cgroups on node (every controller; the nodes' cgroup
    subtrees are the machine's /sys/fs/cgroup/CONTROLLER/sdNODE/slurm_NODE)."""
    pids: List[int] = []
    for procs in Path("/sys/fs/cgroup").glob(f"*/sd{node}/slurm_{node}/uid_*/job_{job}/**/cgroup.procs"):
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(pids))


def until_accounted(step: str, mib: int) -> str:
    """Shell: wait (a minute at most) until Slurm's accounting has seen step hold about mib MiB
    (jobacct_gather samples every second): the event a memory test waits for, not a clock.
    step: e.g. "$SLURM_JOB_ID.batch" (sstat is there in a stardock job's container too)."""
    least = mib * 2**20 * 9 // 10
    return (f'n=0; until r=$(sstat -n -P --noconvert -j "{step}" -o MaxRSS 2>/dev/null | head -n1); '
            f'[ "${{r:-0}}" -ge {least} ] 2>/dev/null || [ $n -ge 600 ]; do sleep 0.1; n=$((n + 1)); done')


def hog(mib: int = 300) -> str:
    """Shell (no single quote: it goes inside bash -c '...'): hold mib MiB in the batch script until
    the job's accounting has seen it, then print its size."""
    return (f'x=$(head -c {mib}M /dev/zero | tr "\\0" a); '
            f'{until_accounted("$SLURM_JOB_ID.batch", mib)}; echo ${{#x}}')


def hog_until(flag: str, mib: int = 300) -> str:
    """Shell (no single quote): hold mib MiB until the file flag exists (a minute at most; the
    batch script makes it once the step's accounting saw the memory), then print its size: a
    step's task, whose container has no Slurm commands of its own."""
    return (f'x=$(head -c {mib}M /dev/zero | tr "\\0" a); n=0; '
            f'until [ -e "{flag}" ] || [ $n -ge 600 ]; do sleep 0.1; n=$((n + 1)); done; echo ${{#x}}')


# Podman as the user's jobs run it on a node: against the user's node storage there (stardock's
# site key node_storage; the testbed's default), in a user namespace of its own, never the user's
# pause process (engines/podman_userns.py).
NODE_PODMAN = """ns=/var/tmp/stardock-$(id -u)
[ -d "$ns/podman" ] || exit 0
export XDG_RUNTIME_DIR=/run/user/$(id -u)
exec "$0" -m stardock_hpc.engines.podman_userns podman --root "$ns/podman/storage" --runroot "$ns/podman/run" "$@"
"""


def node_podman_argv(node: str, *args: str) -> List[str]:
    import sys
    return ["srun", "-w", node, "-N1", "-n1", "-t", "2", "--overlap", "sh", "-c", NODE_PODMAN, sys.executable, *args]


def node_containers(node: str) -> List[str]:
    """The names of the user's containers in the node's store."""
    out = sh(node_podman_argv(node, "ps", "-a", "--format", "{{.Names}}"))
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def sh(argv: List[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(argv, **kw)


def sbatch(*args: str, cwd: Optional[str] = None) -> str:
    proc = sh(["sbatch", "--parsable", *args], cwd=cwd)
    assert proc.returncode == 0, f"sbatch failed: {proc.stderr}"
    return proc.stdout.strip().split(";")[0]


def sacct(jobid: str) -> List[Dict[str, str]]:
    proc = sh(["sacct", "-n", "-P", "-j", jobid, f"--format={','.join(SACCT_FIELDS)}"])
    assert proc.returncode == 0, proc.stderr
    return [dict(zip(SACCT_FIELDS, line.split("|"))) for line in proc.stdout.splitlines() if line]


def wait_job(jobid: str, timeout: float = 180, need_batch_step: bool = True) -> Dict[str, Dict[str, str]]:
    """Poll sacct until the job is terminal and its records settled (they lag the job's end)."""
    deadline = time.monotonic() + timeout
    rows: Dict[str, Dict[str, str]] = {}
    while time.monotonic() < deadline:
        rows = {r["JobID"]: r for r in sacct(jobid)}
        job = rows.get(jobid)
        # Timelimit too: slurmdbd may show the end of a job before the rest of its record
        if job and job["State"].split()[0] in TERMINAL and job.get("Timelimit", "-"):
            batch = rows.get(f"{jobid}.batch")
            if not need_batch_step or (batch and batch["State"].split()[0] in TERMINAL):
                return rows
        time.sleep(0.3)
    raise AssertionError(f"job {jobid} did not finish within {timeout}s; last sacct: {rows}")


def mem_bytes(text: str) -> int:
    """sacct's 60720K / 1.5G / 123 into bytes ('' is 0)."""
    if not text:
        return 0
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


def scontrol_job(jobid: str) -> Dict[str, str]:
    """`scontrol show job -o` as a dict (values with spaces are rare in the fields we compare)."""
    proc = sh(["scontrol", "show", "job", "-o", jobid])
    assert proc.returncode == 0, proc.stderr
    fields: Dict[str, str] = {}
    for token in proc.stdout.split():
        if "=" in token:
            key, _, value = token.partition("=")
            fields[key] = value
    return fields


def user() -> str:
    return os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True,
                                                     text=True).stdout.strip()


def replace_job_ids(record: Dict[str, str], keys) -> Dict[str, str]:
    """The `scontrol show job` record with the job's own ids (JobId, ArrayJobId) in `keys`
    replaced by placeholders, so that two submissions can be compared. Paths under the job's
    WorkDir keep that directory as it is: its name may hold the same digits by chance."""
    out = dict(record)
    ids = [(record["ArrayJobId"], "<ARRAY_JOB_ID>")] if "ArrayJobId" in record else []
    ids.append((record["JobId"], "<JOB_ID>"))
    workdir = record.get("WorkDir", "")
    for key in keys:
        if key not in out:
            continue
        value, prefix = out[key], ""
        if workdir and value.startswith(workdir + "/"):
            prefix, value = workdir + "/", value[len(workdir) + 1:]
        for number, placeholder in ids:
            value = re.sub(rf"(?<![0-9]){number}(?![0-9])", placeholder, value)
        out[key] = prefix + value
    return out
