"""The testbed's compute nodes (issue 12): three Slurm nodes, each with its own host name,
address, /tmp and /run, and its own cgroup subtree in which Slurm limits and counts jobs; the
home and the shared state the same everywhere."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from clitools import ENGINES, remove, shared_dir, stardock, write_spec

from slurmtools import hog, mem_bytes, sacct, sbatch, sh, wait_job

pytestmark = [pytest.mark.slurm]
NODES = ("node1", "node2", "node3")
HOG = hog(300)  # held until the job's accounting has seen it


@pytest.fixture(scope="module")
def work():
    path = shared_dir("stardock-nodes-")
    write_spec(path, "name: nodes-test\n")
    yield path
    remove(path)


def test_three_idle_nodes_each_with_its_own_name():
    out = sh(["sinfo", "-N", "-h", "-o", "%N %T"]).stdout.split("\n")
    states = dict(line.split() for line in out if line.strip())
    assert sorted(states) == list(NODES), states
    # up and taking jobs (other tests' jobs may be starting or ending there)
    assert all(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states.values()), states
    run = sh(["srun", "-N3", "-t", "1", "hostname"])
    assert run.returncode == 0, run.stderr
    assert sorted(run.stdout.split()) == list(NODES)


def test_a_three_node_job_is_accounted_on_all_three(work):
    job = sbatch("-N3", "-t", "1", f"--chdir={work}", "--output=/dev/null", "--wrap", "srun hostname")
    rows = wait_job(job)
    assert rows[job]["State"] == "COMPLETED", rows
    out = sh(["sacct", "-n", "-P", "-X", "-j", job, "--format=NNodes,NodeList"]).stdout.split("|")
    assert out[0] == "3" and out[1].strip() == "node[1-3]", out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("node", NODES)
def test_on_every_node_the_container_is_accounted_and_limited(work, node, engine):
    hog = work / f"hog-{node}-{engine}.sh"
    hog.write_text("#!/bin/bash\n" + HOG + "\n")

    def submit(mem: str) -> str:
        proc = stardock("sbatch", "--parsable", f"--nodelist={node}", f"--mem={mem}", "--output=/dev/null",
                        "--env", "stardock.yaml", "--engine", engine, str(hog), cwd=work)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    fits, over = submit("1G"), submit("150M")
    rows = wait_job(fits)
    assert rows[fits]["State"] == "COMPLETED", rows
    assert mem_bytes(rows[f"{fits}.batch"]["MaxRSS"]) >= 280 * 2**20, rows
    assert wait_job(over)[over]["State"] == "OUT_OF_MEMORY"


def test_tmp_and_run_are_each_nodes_own_and_home_and_cache_are_shared(work):
    token = uuid.uuid4().hex
    cache = Path(os.environ["STARDOCK_TESTBED"]) / "cache"
    probe = (f"echo {token} > /tmp/probe-{token}; echo {token} > $HOME/.probe-{token}; "
             f"stat -c %i {cache}; grep ' /run ' /proc/self/mountinfo | cut -d' ' -f1-4")
    first = sbatch("-w", "node1", "-t", "1", f"--chdir={work}", f"--output={work}/n1-%j.out", "--wrap", probe)
    wait_job(first)
    second = sbatch("-w", "node2", "-t", "1", f"--chdir={work}", f"--output={work}/n2-%j.out", "--wrap",
                    f"test -e /tmp/probe-{token} && echo seen || echo missing; "
                    f"cat $HOME/.probe-{token}; stat -c %i {cache}; "
                    "grep ' /run ' /proc/self/mountinfo | cut -d' ' -f1-4; echo $(hostname)")
    wait_job(second)
    one = (work / f"n1-{first}.out").read_text().split("\n")
    two = (work / f"n2-{second}.out").read_text().split("\n")
    assert two[0] == "missing", "a file in node1's /tmp is seen on node2"
    assert two[1] == token, "the home is not shared"
    assert one[0] == two[2], "the cache is not the same directory everywhere"
    assert one[1] != two[3], "node1 and node2 share /run"
    assert two[4] == "node2" and not Path(f"/tmp/probe-{token}").exists()
    (Path.home() / f".probe-{token}").unlink()


def test_each_node_has_its_own_cgroup_subtree(work):
    job = sbatch("-w", "node3", "-t", "1", f"--chdir={work}", f"--output={work}/cg-%j.out", "--wrap",
                 "cat /proc/self/cgroup")
    wait_job(job)
    memory = next(line for line in (work / f"cg-{job}.out").read_text().splitlines() if ":memory:" in line)
    # in its own namespace the node sees its subtree as the root: Slurm's tree starts there
    # (Debian's slurmd names it slurm_<node>)
    tree = memory.split(":", 2)[2].split("/")[1]
    assert tree in ("slurm", "slurm_node3") and "/uid_" in memory, memory
    assert any(Path(p).is_dir() for p in (f"/sys/fs/cgroup/memory/sdnode3/{tree}", f"/sys/fs/cgroup/sdnode3/{tree}"))
    assert len([r for r in sacct(job) if r["JobID"] == job]) == 1
