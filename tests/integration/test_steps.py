"""srun in a stardock job (issue 13): steps whose tasks run in the environment on every node of
the 3-node testbed, Slurm's client commands from the script, MPI through PMIx and PMI2 and with
mpirun, per-step accounting and limits, and a cancel that leaves nothing on any node."""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from clitools import ENGINES, remove, shared_dir, stardock, stardock_argv, stardock_json, write_spec
from suiteimages import suite_spec

from slurmtools import hog_until, job_cgroup_tasks, mem_bytes, node_containers, sh, until_accounted, wait_job

pytestmark = [pytest.mark.slurm]
NODES = ["node1", "node2", "node3"]
SEEN = "$STARDOCK_OUTPUT/accounted"  # the batch script makes it once the step's accounting saw the memory
HOG = hog_until(SEEN)  # single-quoted in the script


@pytest.fixture(scope="module")
def work():
    path = shared_dir("stardock-steps-")
    write_spec(path, "name: steps-test\nenv: {GREETING: hello}\n")
    # the MPI images are the suite's kept ones (tests/suiteimages.py): their specs copied here, where
    # the jobs write their outputs (the same text and files: the same keys, cache hits)
    for name, image in (("mpi", "openmpi"), ("mpich", "mpich")):
        shutil.copytree(suite_spec(image).parent, path / name)
    yield path
    remove(path)


def run_job(work: Path, name: str, body: str, *sbatch: str, spec: str = "stardock.yaml",
            engine: str = "podman", timeout: float = 600) -> tuple:
    """Submit body as a batch script; its job id, its standard output and error once it ended."""
    script = work / f"{name}.sh"
    script.write_text("#!/bin/bash\n" + body)
    proc = stardock("sbatch", "--parsable", "--env", spec, "--engine", engine, "-t", "5",
                    f"--output={name}-%j.out", f"--error={name}-%j.err", *sbatch, str(script), cwd=work)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    rows = wait_job(job, timeout=timeout)
    out, err = (work / f"{name}-{job}.out").read_text(), (work / f"{name}-{job}.err").read_text()
    assert rows[job]["State"] == "COMPLETED", out + err
    return job, out, err


def steps_of(job: str) -> dict:
    out = sh(["sacct", "-n", "-P", "-j", job, "--format=JobID,State,ExitCode,NNodes,NodeList,NTasks,MaxRSS"]).stdout
    rows = {}
    for line in out.splitlines():
        f = line.split("|")
        rows[f[0]] = {"State": f[1], "ExitCode": f[2], "NNodes": f[3], "NodeList": f[4], "NTasks": f[5],
                      "MaxRSS": f[6]}
    return rows


@pytest.mark.parametrize("engine", ENGINES)
def test_srun_steps_run_in_the_environment_on_every_node(work, engine):
    body = """srun -N3 -n6 hostname
srun false; echo "false=$?"
echo "hostnames=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | tr '\\n' ' ')"
srun -N3 -n3 sh -c 'echo "task $SLURM_PROCID local $SLURM_LOCALID node $SLURM_NODEID on $(hostname) \
$STARDOCK_IMAGE $GREETING"; echo "$SLURM_PROCID" > "$STARDOCK_OUTPUT/task-$SLURM_PROCID"'
echo "squeue=$(squeue -h -j "$SLURM_JOB_ID" -o %i)"
test -e /usr/bin/sbatch || echo "no slurm in the image"
sbcast /etc/hostname /tmp/hostname; echo "sbcast=$?"
"""
    job, out, err = run_job(work, f"steps-{engine}", body, "-N3", "-n6", engine=engine)
    lines = out.splitlines()
    hosts = [line for line in lines if line in NODES]
    assert len(hosts) == 6 and sorted(set(hosts)) == NODES, out
    assert "false=1" in lines, out
    assert "hostnames=node1 node2 node3 " in lines, out
    [row] = stardock_json("status", job)
    tasks = sorted(line for line in lines if line.startswith("task "))
    assert tasks == [f"task {i} local 0 node {i} on {NODES[i]} {row['image']} hello" for i in range(3)], out
    assert sorted(p.name for p in Path(row["output"]).iterdir()) == ["task-0", "task-1", "task-2"]
    assert f"squeue={job}" in lines, out
    assert "no slurm in the image" in lines  # the commands come from the host, not the image
    assert "sbcast=1" in lines and "put the file in the output directory or a volume" in err, err
    steps = steps_of(job)
    assert steps[f"{job}.0"]["NNodes"] == "3" and steps[f"{job}.0"]["NodeList"] == "node[1-3]", steps
    assert steps[f"{job}.0"]["NTasks"] == "6" and steps[f"{job}.0"]["State"] == "COMPLETED", steps
    assert steps[f"{job}.1"]["State"] == "FAILED" and steps[f"{job}.1"]["ExitCode"] == "1:0", steps


@pytest.mark.podman
def test_a_signal_to_srun_reaches_its_tasks_and_srun_status_comes_back(work):
    body = """srun -N2 -n2 sh -c 'touch "$STARDOCK_OUTPUT/up-$SLURM_PROCID"; exec sleep 321.5' &
pid=$!
n=0
until [ -e "$STARDOCK_OUTPUT/up-0" ] && [ -e "$STARDOCK_OUTPUT/up-1" ] || [ $n -ge 600 ]; do
    sleep 0.1; n=$((n + 1))
done
kill -TERM $pid
wait $pid
echo "srun=$?"
"""
    job, out, err = run_job(work, "signal", body, "-N2", "-n2")
    assert re.search(r"^srun=(1[0-9][0-9])$", out, re.M), out + err
    steps = steps_of(job)
    assert steps[f"{job}.0"]["State"].startswith(("CANCELLED", "FAILED")), steps
    assert not [line for line in sh(["ps", "-u", str(os.getuid()), "-o", "args="]).stdout.splitlines()
                if line.startswith("sleep 321.5")]


RANK_RE = re.compile(r"rank (\d) of 6 on (node\d) sum 15")


def ranks_of(out: str, label: str) -> None:
    """Six ranks, each once, on all three nodes, every one with the right sum."""
    found = [RANK_RE.fullmatch(line) for line in out.splitlines() if line.startswith("rank ")]
    assert all(found) and sorted(int(m.group(1)) for m in found if m) == list(range(6)), f"{label}:\n{out}"
    assert sorted({m.group(2) for m in found if m}) == NODES, f"{label}:\n{out}"


@pytest.mark.parametrize("engine", ENGINES)
def test_mpi_across_nodes_with_pmix_mpi4py_and_mpirun(work, engine):
    cases = {"pmix": "srun --mpi=pmix mpi-ring", "mpi4py": "srun --mpi=pmix python3 /opt/mpi/ring.py",
             "mpirun": "mpirun mpi-ring"}
    for label, command in cases.items():
        _job, out, err = run_job(work / "mpi", f"{label}-{engine}", f"{command}\necho status=$?\n",
                                 "-N3", "-n6", engine=engine)
        assert "status=0" in out, f"{label}: {out}{err}"
        assert "WARNING" not in out + err, f"{label}: {out}{err}"
        ranks_of(out, label)
    # two ranks of one node through shared memory alone (the tasks share the node's PID namespace
    # and /dev/shm; in PID namespaces of their own both were PID 6 and vader crashed)
    _job, out, err = run_job(work / "mpi", f"shm-{engine}", "OMPI_MCA_btl=self,vader srun --mpi=pmix mpi-ring\n"
                             "echo status=$?\n", "-N1", "-n2", engine=engine)
    assert "status=0" in out and "WARNING" not in out + err, out + err
    assert sorted(line.split(" on ")[0] for line in out.splitlines() if line.startswith("rank ")) == \
        ["rank 0 of 2", "rank 1 of 2"], out + err


# A PMIx fence without data is a barrier: Open MPI ends MPI_Init and begins MPI_Finalize with one,
# and a rank that leaves MPI_Init early sends its first message to a peer still in the modex fence,
# whose receive callbacks are not registered yet (a jump to address 0: "Segmentation fault", or
# "failed to TCP connect" to a peer that already left). The last rank enters only once every other
# one is about to (its file entered-R) and after two seconds in which none came out (out-R); each
# rank says whether the last one had entered when it came out.
PMIX_FENCE_C = r"""#include <pmix.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
static int exists(const char *dir, const char *what, unsigned r) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%u", dir, what, r);
    return access(path, F_OK) == 0;
}
static void touch(const char *dir, const char *what, unsigned r) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%u", dir, what, r);
    close(open(path, O_CREAT | O_WRONLY, 0644));
}
int main(int argc, char **argv) {
    pmix_proc_t me, job;
    pmix_value_t *size;
    unsigned last, r;
    if (argc != 2 || PMIx_Init(&me, NULL, 0) != PMIX_SUCCESS) return 2;
    PMIX_LOAD_PROCID(&job, me.nspace, PMIX_RANK_WILDCARD);
    if (PMIx_Get(&job, PMIX_JOB_SIZE, NULL, 0, &size) != PMIX_SUCCESS) return 3;
    last = size->data.uint32 - 1;
    if (me.rank == last) {
        for (r = 0; r < last; r++)
            for (int tick = 0; tick < 30000 && !exists(argv[1], "entered", r); tick++) usleep(10000);
        for (int tick = 0; tick < 200; tick++) {
            for (r = 0; r < last && !exists(argv[1], "out", r); r++) {}
            if (r < last) break;
            usleep(10000);
        }
    }
    touch(argv[1], "entered", me.rank);
    if (PMIx_Fence(NULL, 0, NULL, 0) != PMIX_SUCCESS) return 4;
    int held = exists(argv[1], "entered", last);
    touch(argv[1], "out", me.rank);
    printf("rank %u %s\n", me.rank, held ? "held" : "came out early");
    fflush(stdout);
    PMIx_Finalize(NULL, 0);
    return 0;
}
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_a_pmix_fence_holds_every_rank_until_the_last_enters(work, engine):
    body = f"""cat > "$STARDOCK_OUTPUT/fence.c" <<'EOF'
{PMIX_FENCE_C}EOF
gcc -O2 -I/usr/lib/x86_64-linux-gnu/pmix2/include -o "$STARDOCK_OUTPUT/fence" "$STARDOCK_OUTPUT/fence.c" -lpmix
srun --mpi=pmix "$STARDOCK_OUTPUT/fence" "$STARDOCK_OUTPUT"
echo status=$?
"""
    _job, out, err = run_job(work / "mpi", f"fence-{engine}", body, "-N3", "-n6", engine=engine)
    assert "status=0" in out, out + err
    assert sorted(line for line in out.splitlines() if line.startswith("rank ")) == \
        [f"rank {r} held" for r in range(6)], out + err


@pytest.mark.podman
def test_mpi_across_nodes_with_pmi2(work):
    """Debian's Open MPI speaks PMIx only; MPICH speaks PMI2 (PMI_FD passed into each container)."""
    _job, out, err = run_job(work / "mpich", "pmi2", "srun --mpi=pmi2 mpi-ring\necho status=$?\n", "-N3", "-n6")
    assert "status=0" in out, out + err
    ranks_of(out, "pmi2")


@pytest.mark.podman
@pytest.mark.parametrize("spec, app", [("mpi", "openmpi"), ("mpich", "mpich")])
def test_the_mpi_apps_pass_their_smoke_commands(work, spec, app):
    from stardock_hpc.catalog import load_catalog

    key = stardock_json("build", str(work / spec / "stardock.yaml"))["key"]
    smoke = load_catalog().apps[app].smoke
    proc = stardock("exec", "--image", key, "--", "sh", "-c", smoke, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_each_step_is_accounted_and_limited_on_its_node(work, engine):
    body = f"""srun -n1 --mem=1G bash -c '{HOG}' &
{until_accounted("$SLURM_JOB_ID.0", 300)}; touch "{SEEN}"; wait
srun -n1 --mem=150M bash -c '{HOG}'; echo "oom=$?"
"""
    job, out, err = run_job(work, f"stepmem-{engine}", body, "-w", "node3", "--mem=2G", engine=engine)
    steps = steps_of(job)
    assert steps[f"{job}.0"]["State"] == "COMPLETED" and steps[f"{job}.0"]["NodeList"] == "node3", steps
    assert mem_bytes(steps[f"{job}.0"]["MaxRSS"]) >= 280 * 2**20, steps
    assert steps[f"{job}.1"]["State"] == "OUT_OF_MEMORY", steps
    assert re.search(r"^oom=[1-9]", out, re.M), out + err


def _leftovers(job: str, marker: str) -> list:
    found = [line for line in sh(["ps", "-u", str(os.getuid()), "-o", "pid=,args="]).stdout.splitlines()
             if marker in line or f"stardock-{job}" in line]
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == os.getuid() and \
                    f"SLURM_JOB_ID={job}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"process {entry.name}")
        except OSError:
            continue
    names = [n for node in NODES for n in node_containers(node)]
    return found + [f"container {n}" for n in names if n.startswith(f"stardock-{job}-")]


@pytest.mark.parametrize("engine", ENGINES)
def test_cancel_of_a_three_node_job_leaves_nothing_on_any_node(work, engine):
    marker = f"sleep 31{7 if engine == 'podman' else 8}.5"
    script = work / f"cancel-{engine}.sh"
    script.write_text(f"#!/bin/bash\nsrun -N3 -n6 {marker}\n")
    proc = stardock("sbatch", "--parsable", "--env", "stardock.yaml", "--engine", engine, "-N3", "-n6", "-t", "5",
                    "--output=/dev/null", str(script), cwd=work)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    deadline = time.time() + 180
    while time.time() < deadline:
        running = [line for line in sh(["ps", "-u", str(os.getuid()), "-o", "args="]).stdout.splitlines()
                   if line.startswith(marker)]
        if len(running) == 6:
            break
        time.sleep(0.5)
    assert len(running) == 6, running
    assert stardock("cancel", job).returncode == 0
    rows = wait_job(job, timeout=120)
    assert rows[job]["State"].startswith("CANCELLED"), rows
    deadline = time.time() + 60
    while time.time() < deadline and (_leftovers(job, marker) or any(job_cgroup_tasks(n, job) for n in NODES)):
        time.sleep(0.2)
    # with the job's cgroups empty on every node, what is still found escaped them: it would stay
    assert _leftovers(job, marker) == [], "parts of the job survived it"
    # each node's runtime directory keeps nothing of the job (its prepared image, its /dev/shm)
    state = sh(["srun", "-N3", "--ntasks-per-node=1", "-t", "1", "sh", "-c",
                'echo "$(hostname): $(ls -a /run/user/$(id -u) | grep -c "^.stardock-job-' + job + '")"'])
    assert state.returncode == 0, state.stderr
    assert sorted(state.stdout.split("\n")[:-1]) == [f"{n}: 0" for n in NODES], state.stdout


@pytest.mark.podman
def test_stardock_exec_here_and_as_the_tasks_of_a_plain_step(work):
    key = stardock_json("build", str(work / "stardock.yaml"))["key"]
    here = stardock("exec", "--image", key, "--", "sh", "-c", 'echo "$GREETING from $STARDOCK_IMAGE"', cwd=work)
    assert here.returncode == 0 and here.stdout.strip() == f"hello from {key}", here.stderr
    failed = stardock("exec", "--image", key, "--", "sh", "-c", "exit 7", cwd=work)
    assert failed.returncode == 7, failed.stderr
    bad = stardock("exec", "--image", key, "sh", cwd=work)
    assert bad.returncode == 2 and "--" in bad.stderr and "Traceback" not in bad.stderr
    out = sh(["srun", "-N3", "-n3", "-t", "2", *stardock_argv("exec", "--image", key, "--", "sh", "-c",
                                                              'echo "$SLURM_PROCID $(hostname) $GREETING"')],
             cwd=work)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split("\n")[:-1]) == [f"{i} {NODES[i]} hello" for i in range(3)], out.stdout
