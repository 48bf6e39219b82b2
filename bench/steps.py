#!/usr/bin/env python3
"""srun steps and MPI in a stardock job against the same bare, on the same three nodes (issue 13):
the start of a 3-node x 2-task step (`srun -N3 --ntasks-per-node=2 true`, timed inside the job),
an MPI ping-pong between two nodes (latency of 1-byte messages, bandwidth of 1 MiB ones; the
image's Open MPI through PMIx vs the nodes' own, the same Debian build), and, for the choice of
one container per task, two tasks on a node each starting a container vs entering one shared
container started beforehand (`podman exec`, as podman-hpc and Pyxis share one per node).

Run as an unprivileged user with the site config in $STARDOCK_SITE_CONFIG (see bench/README.md).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

from _common import (
    build_json,
    describe,
    forget_jobs,
    job_id,
    measure_in_workdir,
    median,
    parser,
    ratio,
    remove_entry,
    run,
    run_main,
    say,
    site_settings,
    table,
    wait_job,
    write_spec,
)

PINGPONG_C = r"""#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
static double exchange(int rank, char *buf, int size, int iters) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < iters; i++) {
        if (rank == 0) {
            MPI_Send(buf, size, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
            MPI_Recv(buf, size, MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(buf, size, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, size, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
        }
    }
    return MPI_Wtime() - t0;
}
int main(int argc, char **argv) {
    int rank, big = 1 << 20;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char *buf = calloc(big, 1);
    exchange(rank, buf, 1, 100);
    double small = exchange(rank, buf, 1, 2000);
    double large = exchange(rank, buf, big, 100);
    if (rank == 0)
        printf("latency_us %.2f\nbandwidth_mibs %.1f\n", small / 4000 * 1e6, 200.0 * big / large / (1 << 20));
    MPI_Finalize();
    return 0;
}
"""
SPEC = ("name: bench-steps\napps: [openmpi]\nfiles:\n  - {src: pingpong.c, dest: /opt/bench/pingpong.c}\n"
        "build:\n  - mpicc -O2 -o /usr/local/bin/pingpong /opt/bench/pingpong.c\n")
# Bare Open MPI as the catalog app sets it (TCP between ranks), so only the container differs.
STEPS_SH = """#!/bin/bash
for i in $(seq {rounds}); do
    s=$(date +%s%N); srun -N3 --ntasks-per-node=2 true; e=$(date +%s%N)
    echo "start_ms $(( (e - s) / 1000000 ))"
done
for i in $(seq {pings}); do
    OMPI_MCA_btl=self,tcp srun --mpi=pmix -N2 -n2 --ntasks-per-node=1 {pingpong}
done
"""
SHARED_SH = """#!/bin/bash
# two tasks on this node: each starts its own container, or both enter one started beforehand
tag={tag}
stardock exec --image {key} -- true  # the node's Podman state made usable, as a job's wrapper does
run="podman run --rm --pull=never --network=none --userns=keep-id"
for i in $(seq {rounds}); do
    s=$(date +%s%N); srun -n2 $run $tag true; e=$(date +%s%N); echo "per_task_ms $(( (e - s) / 1000000 ))"
done
s=$(date +%s%N); c=$(podman run -d --pull=never --network=none --userns=keep-id $tag sleep 600); e=$(date +%s%N)
echo "shared_first_ms $(( (e - s) / 1000000 ))"
for i in $(seq {rounds}); do
    s=$(date +%s%N); srun -n2 podman exec $c true; e=$(date +%s%N); echo "shared_ms $(( (e - s) / 1000000 ))"
done
podman rm -f -t 0 $c > /dev/null
"""


def podman_tag(info: Dict) -> str:
    """Podman's local name for a cache entry's image (what a job loads it as)."""
    import json

    meta = json.loads((Path(info["artifact"]).parent / "meta.json").read_text())
    return meta["image_tag"]


def numbers(text: str, name: str) -> List[float]:
    return [float(m) for m in re.findall(rf"^{name} ([0-9.]+)$", text, re.M)]


def job(argv: List[str], wd: Path, jobs: List[str], name: str) -> str:
    proc = run(argv, cwd=wd)
    jobs.append(job_id(proc.stdout))
    state = wait_job(jobs[-1], timeout=900)
    out = (wd / f"{name}.out").read_text()
    if state != "COMPLETED":
        raise RuntimeError(f"{name} job {jobs[-1]} ended {state}:\n{out[-2000:]}")
    return out


def measure(args, wd: Path) -> Dict:
    (wd / "env").mkdir()
    (wd / "env" / "pingpong.c").write_text(PINGPONG_C)
    spec = write_spec(wd / "env", SPEC)
    (wd / "pingpong.c").write_text(PINGPONG_C)
    run(["mpicc", "-O2", "-o", wd / "pingpong", wd / "pingpong.c"])
    jobs: List[str] = []
    built: List[Dict] = []
    results: Dict[str, Dict] = {}
    alloc = ["-N3", "-n6", "-t", "15", "-J", "bench-steps"]
    try:
        say("bare: step starts and ping-pong")
        (wd / "bare.sh").write_text(STEPS_SH.format(rounds=args.reps + 1, pings=args.pings, pingpong=wd / "pingpong"))
        results["bare"] = parse(job(["sbatch", "--parsable", *alloc, "-o", "bare.out", "bare.sh"], wd, jobs, "bare"))
        for engine in args.engines:
            say(f"{engine}: building the image")
            info = build_json(spec, engine)
            built.append(info)
            say(f"{engine}: step starts and ping-pong in the container")
            script = wd / f"{engine}.sh"
            script.write_text(STEPS_SH.format(rounds=args.reps + 1, pings=args.pings,
                                              pingpong="/usr/local/bin/pingpong"))
            out = job(["stardock", "sbatch", "--parsable", *alloc, "-o", f"{engine}.out", "--image", info["key"],
                       script.name], wd, jobs, engine)
            results[engine] = parse(out)
            if engine == "podman":
                say("podman: a container per task vs one shared container per node")
                (wd / "shared.sh").write_text(SHARED_SH.format(rounds=args.reps + 1, tag=podman_tag(info),
                                                                    key=info["key"]))
                out = job(["sbatch", "--parsable", "-N1", "-n2", "-w", "node1", "-t", "10", "-o", "shared.out",
                           "shared.sh"], wd, jobs, "shared")
                results["sharing"] = {"per_task_ms": median(numbers(out, "per_task_ms")[1:]),
                                      "shared_ms": median(numbers(out, "shared_ms")[1:]),
                                      "shared_first_ms": numbers(out, "shared_first_ms")[0]}
    finally:
        forget_jobs(jobs, site_settings())
        if not args.keep:
            for info in built:
                if info["built"]:
                    remove_entry(info["artifact"])
    return {"results": results, "reps": args.reps, "pings": args.pings}


def parse(out: str) -> Dict[str, float]:
    return {"start_ms": median(numbers(out, "start_ms")[1:]),  # the first round warms up
            "latency_us": median(numbers(out, "latency_us")), "bandwidth_mibs": median(numbers(out, "bandwidth_mibs"))}


def render(r: Dict) -> str:
    res = r["results"]
    bare = res["bare"]
    rows = [["bare", f"{bare['start_ms']:.0f} ms", "1.00x", f"{bare['latency_us']:.1f} us", "1.00x",
             f"{bare['bandwidth_mibs']:.0f} MiB/s", "1.00x"]]
    for engine in (e for e in ("podman", "apptainer") if e in res):
        m = res[engine]
        rows.append([engine, f"{m['start_ms']:.0f} ms", f"{ratio(m['start_ms'], bare['start_ms']):.2f}x",
                     f"{m['latency_us']:.1f} us", f"{ratio(m['latency_us'], bare['latency_us']):.2f}x",
                     f"{m['bandwidth_mibs']:.0f} MiB/s", f"{ratio(m['bandwidth_mibs'], bare['bandwidth_mibs']):.2f}x"])
    out = [table(["where", f"3x2 step start (median of {r['reps']})", "vs bare", "ping-pong latency",
                  "vs bare", "bandwidth (1 MiB)", "vs bare"], rows,
                 "srun steps and MPI in the container vs bare (same nodes, same Open MPI, TCP)")]
    if "sharing" in res:
        s = res["sharing"]
        out += ["", table(["two tasks on a node", f"median of {r['reps']}", "vs a container per task"], [
            ["a container per task (stardock's choice)", f"{s['per_task_ms']:.0f} ms", "1.00x"],
            ["entering one shared container (podman exec)", f"{s['shared_ms']:.0f} ms",
             f"{ratio(s['shared_ms'], s['per_task_ms']):.2f}x"],
            ["  starting that shared container, once", f"{s['shared_first_ms']:.0f} ms", ""]],
            "A container per task vs one per node (Podman)")]
    out += ["", describe(r["context"])]
    return "\n".join(out)


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="step starts measured (after one warm-up)")
    p.add_argument("--pings", type=int, default=3, help="ping-pong runs (median)")
    p.add_argument("--engines", nargs="+", default=["podman", "apptainer"], choices=["podman", "apptainer"])
    return measure_in_workdir(p.parse_args(), "stardock-bench-steps-", measure, render)


if __name__ == "__main__":
    run_main(main)
