#!/usr/bin/env python3
"""`stardock sbatch` and jobs in containers, each against a bare Slurm baseline from the same run:
submission time, container start overhead (end to end and inside a job), read throughput
through a read-only volume, CPU-bound work.

Run as an unprivileged user with the site config in $STARDOCK_SITE_CONFIG (see bench/README.md).
Everything submitted is cancelled or waited for; records, outputs, the test file and the images
built here are removed at the end (--keep keeps the images and the work directory).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List

from _common import (
    BENCH_DIR,
    BenchError,
    build_json,
    context,
    describe,
    emit,
    expand,
    forget_jobs,
    job_id,
    median,
    ms,
    parser,
    ratio,
    remove_entry,
    run,
    run_main,
    say,
    site_settings,
    table,
    timed,
    wait_job,
    workdir,
    write_spec,
)

ENGINES = ("podman", "apptainer")
SPEC = "name: bench-jobs\ncommand: [/bin/sh]\n"  # the site's base alone: no nonce, reused run to run
TRIVIAL = "#!/bin/sh\ntrue\n"
# The workload runs bare and in both engines: GNU dd and mawk from Debian 12 on both sides (the
# same builds: the script prints mawk's digest so a mismatch would show).
WORKLOAD = r"""#!/bin/sh
f="$1"; n="$2"; loops="$3"
echo "MAWK $(sha256sum /usr/bin/mawk | cut -c1-16)"
echo "CPUS $(grep Cpus_allowed_list /proc/self/status | cut -f2)"
dd if="$f" of=/dev/null bs=1M 2>&1 | tail -n 1 | sed 's/^/WARM /'
i=0
while [ "$i" -lt "$n" ]; do dd if="$f" of=/dev/null bs=1M 2>&1 | tail -n 1 | sed 's/^/READ /'; i=$((i+1)); done
# fields 16 and 17 of /proc/PID/stat: CPU time (ticks) of the shell's waited-for children
ticks() { awk '{print $16 + $17}' "/proc/$$/stat"; }
i=0
while [ "$i" -lt "$n" ]; do
    c=$(ticks); s=$(date +%s%N)
    mawk "BEGIN{for(i=0;i<$loops;i++)s+=i}"
    e=$(date +%s%N); d=$(ticks)
    echo "CPU $((e-s)) $((d-c))"; i=$((i+1))
done
"""
DD_RE = re.compile(r"^READ (\d+) bytes .* copied, ([0-9.e+-]+) s", re.M)


class Bench:
    def __init__(self, args, settings: Dict, wd: Path) -> None:
        self.args = args
        self.settings = settings
        self.wd = wd
        self.jobs: List[str] = []
        self.images: Dict[str, Dict] = {}
        self.built: List[str] = []

    # --- helpers --------------------------------------------------------------------------------
    def quiet_queue(self, limit: float = 20) -> bool:
        """Wait (a while) until no other job runs or waits for the node: it would skew the timing.
        Held jobs (left by others) neither run nor compete, so they do not count."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            out = run(["squeue", "-h", "-o", "%i %T %r"], check=False).stdout.splitlines()
            busy = [line for line in out if line.split()[0] not in self.jobs
                    and not (" PENDING " in line and "Held" in line)]
            if not busy:
                return True
            time.sleep(0.5)
        return False

    def sbatch(self, argv: List[str]) -> tuple:
        seconds, proc = timed(argv, cwd=self.wd)
        job = job_id(proc.stdout)
        self.jobs.append(job)
        return seconds, job

    def plain(self, *opts: str) -> List[str]:
        return ["sbatch", "--parsable", "-J", "bench-bare", *opts]

    def stardock(self, engine: str, *opts: str, env_spec: bool = False) -> List[str]:
        what = ["--env", str(self.spec), "--engine", engine] if env_spec else ["--image", self.images[engine]["key"]]
        return ["stardock", "sbatch", "--parsable", "-J", f"bench-{engine}", *what, *opts]

    # --- setup -----------------------------------------------------------------------------------
    def setup(self) -> None:
        self.spec = write_spec(self.wd / "env", SPEC)
        for engine in ENGINES:
            t0 = time.monotonic()
            info = build_json(self.spec, engine)
            if info["built"]:
                self.built.append(info["artifact"])
                say(f"built the {engine} image in {time.monotonic() - t0:.1f} s (setup, not measured)")
            self.images[engine] = info
        (self.wd / "trivial.sh").write_text(TRIVIAL)
        (self.wd / "work.sh").write_text(WORKLOAD)

    # --- 1. submission ---------------------------------------------------------------------------
    def submission(self) -> Dict:
        variants = {
            "sbatch (bare)": self.plain("--hold", "-o", "/dev/null", "trivial.sh"),
            "stardock sbatch --image KEY": self.stardock("podman", "--hold", "-o", "/dev/null", "trivial.sh"),
            "stardock sbatch --env SPEC (cache hit)": self.stardock("podman", "--hold", "-o", "/dev/null",
                                                                   "trivial.sh", env_spec=True),
        }
        samples: Dict[str, List[float]] = {k: [] for k in variants}
        for rep in range(self.args.reps + 1):
            for label, argv in variants.items():
                seconds, _job = self.sbatch(argv)
                if rep:
                    samples[label].append(seconds)
        forget_jobs(self.jobs, self.settings)
        return summarize(samples, "sbatch (bare)")

    # --- 2a. end to end -------------------------------------------------------------------------
    def end_to_end(self) -> Dict:
        variants = {
            "bare": self.plain("-o", "e2e-%j.out", "trivial.sh"),
            "podman": self.stardock("podman", "-o", "e2e-%j.out", "trivial.sh"),
            "apptainer": self.stardock("apptainer", "-o", "e2e-%j.out", "trivial.sh"),
        }
        samples: Dict[str, List[float]] = {k: [] for k in variants}
        disturbed = 0
        for rep in range(self.args.e2e_reps + 1):
            for label, argv in variants.items():
                disturbed += 0 if self.quiet_queue() else 1
                t0 = time.perf_counter()
                _s, job = self.sbatch(argv)
                state = wait_job(job, poll=0.1)
                seconds = time.perf_counter() - t0
                if state != "COMPLETED":
                    raise BenchError(f"the {label} job {job} ended {state}: see {self.wd}/e2e-{job}.out")
                if rep:
                    samples[label].append(seconds)
        out = summarize(samples, "bare")
        out["reps_with_other_jobs_around"] = disturbed
        return out

    # --- 2b. inside a job -------------------------------------------------------------------------
    def engine_argvs(self, shim: bool) -> Dict[str, List[str]]:
        from stardock_hpc.engines import get_engine
        from stardock_hpc.engines.base import RunOptions
        from stardock_hpc.jobs.submit import RUNTIME_SHIM
        from stardock_hpc.resources import data_dir
        argvs = {}
        for engine in ENGINES:
            eng = get_engine(engine)
            info = self.images[engine]
            meta = json.loads((Path(info["artifact"]).parent / "meta.json").read_text())
            image = eng.image_for(Path(info["artifact"]), meta.get("image_tag") or "")
            opts = RunOptions(uid=os.getuid(), gid=os.getgid())
            argvs[f"{engine}: engine argv, `true`"] = eng.run_argv(image, ["true"], [], None, opts)
            if shim and engine == "podman":
                opts = RunOptions(uid=os.getuid(), gid=os.getgid(), runtime=str(data_dir("wrappers") / RUNTIME_SHIM))
                argvs["podman: engine argv + stardock-runc shim"] = eng.run_argv(image, ["true"], [], None, opts)
        return argvs

    def in_job(self) -> Dict:
        python = sys.executable
        commands: Dict[str, List[str]] = {"true": ["true"]}
        commands.update(self.engine_argvs(shim=True))
        for engine in ENGINES:
            # exactly what a stardock job runs: the rendered job script (wrapper, checks, cleanup)
            script = run(self.stardock(engine, "--dry-run", "trivial.sh"), cwd=self.wd).stdout
            path = self.wd / f"job-{engine}.sh"
            path.write_text(script)
            commands[f"{engine}: stardock job script"] = ["/bin/bash", str(path)]
        config = self.wd / "injob.json"
        config.write_text(json.dumps({"reps": self.args.reps, "commands": commands}))
        self.quiet_queue()
        _s, job = self.sbatch(self.plain("-o", "injob.out", "--mem=2G", "--wrap",
                                         f"exec {python} {BENCH_DIR / '_injob.py'} {config}"))
        state = wait_job(job, poll=0.5, timeout=900)
        raw = json.loads((self.wd / "injob.out").read_text().strip().splitlines()[-1])
        if state != "COMPLETED" or raw["failures"]:
            raise BenchError(f"the timing job {job} ended {state}: {raw['failures']}")
        inside = summarize(raw["samples"], "true")

        outside_cfg = self.wd / "outside.json"
        outside_cmds = {"true": ["true"], **self.engine_argvs(shim=False)}
        outside_cfg.write_text(json.dumps({"reps": self.args.reps, "commands": outside_cmds}))
        raw = json.loads(run([python, BENCH_DIR / "_injob.py", outside_cfg]).stdout)
        if raw["failures"]:
            raise BenchError(f"timing outside a job failed: {raw['failures']}")
        return {"in_job": inside, "outside_job": summarize(raw["samples"], "true")}

    # --- 3 and 4. read throughput and CPU --------------------------------------------------------
    def workload(self) -> Dict:
        scratch = expand(self.settings["volumes"]["scratch"]["path"])
        sub = f"stardock-bench-{uuid.uuid4().hex[:8]}"
        blob_dir = scratch / sub
        blob_dir.mkdir(parents=True)
        self.blob_dir = blob_dir
        blob = blob_dir / "blob"
        say(f"writing a {self.args.read_mib} MiB test file in the scratch volume ...")
        run(["dd", "if=/dev/urandom", f"of={blob}", "bs=1M", f"count={self.args.read_mib}"])
        run(["dd", f"if={blob}", "of=/dev/null", "bs=1M"])
        in_container = f"{self.settings['mount_root']}/scratch/{sub}/blob"
        n, loops = str(self.args.work_reps), str(self.args.cpu_loops)
        variants = {
            "bare": self.plain("--mem=2G", "-o", "work-%j.out", "work.sh", str(blob), n, loops),
            "podman": self.stardock("podman", "--mem=2G", "-o", "work-%j.out", "--mount", "scratch:ro",
                                    "work.sh", in_container, n, loops),
            "apptainer": self.stardock("apptainer", "--mem=2G", "-o", "work-%j.out", "--mount", "scratch:ro",
                                       "work.sh", in_container, n, loops),
        }
        labels = list(variants)
        reads: Dict[str, List[float]] = {k: [] for k in labels}
        cpu_wall: Dict[str, List[float]] = {k: [] for k in labels}
        cpu_time: Dict[str, List[float]] = {k: [] for k in labels}
        mawk: Dict[str, set] = {k: set() for k in labels}
        cpus: Dict[str, set] = {k: set() for k in labels}
        tick = os.sysconf("SC_CLK_TCK")
        for rnd in range(self.args.work_rounds):
            for label in labels[rnd % 3:] + labels[:rnd % 3]:  # a different order each round
                self.quiet_queue()
                _s, job = self.sbatch(variants[label])
                state = wait_job(job, poll=0.5, timeout=900)
                text = (self.wd / f"work-{job}.out").read_text()
                if state != "COMPLETED":
                    raise BenchError(f"the {label} workload job {job} ended {state}:\n{text[-1500:]}")
                reads[label] += [int(b) / float(s) for b, s in DD_RE.findall(text)]
                for wall, ticks in re.findall(r"^CPU (\d+) (\d+)", text, re.M):
                    cpu_wall[label].append(int(wall) / 1e9)
                    cpu_time[label].append(int(ticks) / tick)
                mawk[label].update(re.findall(r"^MAWK (\S+)", text, re.M))
                cpus[label].update(re.findall(r"^CPUS (\S+)", text, re.M))
        read_out = {label: {"median_MiB_s": median(xs) / 2**20, "best_MiB_s": max(xs) / 2**20,
                            "samples_MiB_s": [x / 2**20 for x in xs],
                            "over_bare": ratio(median(xs), median(reads["bare"])),
                            "best_over_bare": ratio(max(xs), max(reads["bare"]))} for label, xs in reads.items()}
        return {"read": read_out, "read_mib": self.args.read_mib, "cpu_wall": summarize(cpu_wall, "bare"),
                "cpu_time": summarize(cpu_time, "bare"), "cpu_loops": self.args.cpu_loops,
                "rounds": self.args.work_rounds, "mawk_sha256_prefix": {k: sorted(v) for k, v in mawk.items()},
                "same_mawk": len(set().union(*mawk.values())) == 1,
                "cpus_allowed": {k: sorted(v) for k, v in cpus.items()}}

    def cleanup(self) -> None:
        forget_jobs(self.jobs, self.settings)
        if getattr(self, "blob_dir", None):
            run(["rm", "-rf", str(self.blob_dir)], check=False)
        if not self.args.keep:
            for artifact in self.built:
                try:
                    remove_entry(artifact)
                except Exception as exc:  # noqa: BLE001 - cleanup must go on
                    say(f"warning: could not remove {artifact}: {exc}")
            run(["rm", "-rf", str(self.wd)], check=False)
        else:
            say(f"kept {self.wd} and the images")


def summarize(samples: Dict[str, List[float]], baseline: str) -> Dict:
    base = median(samples[baseline])
    return {label: {"median_s": median(xs), "min_s": min(xs, default=float("nan")), "samples_s": xs,
                    "over_baseline": ratio(median(xs), base),
                    "min_over_baseline": ratio(min(xs, default=0.0), min(samples[baseline], default=0.0)),
                    "minus_baseline_s": median(xs) - base, "baseline": baseline}
            for label, xs in samples.items()}


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=10, help="submissions per variant, runs per command in a job")
    p.add_argument("--e2e-reps", type=int, default=5, help="end-to-end `true` jobs per variant (default 5)")
    p.add_argument("--work-reps", type=int, default=4, help="timed reads and CPU runs in each workload job")
    p.add_argument("--work-rounds", type=int, default=2, help="workload jobs per variant, in rotated order")
    p.add_argument("--read-mib", type=int, default=512, help="size of the test file (default 512 MiB)")
    p.add_argument("--cpu-loops", type=int, default=30_000_000, help="iterations of the awk loop (default 3e7)")
    p.add_argument("--only", default="submission,e2e,injob,workload", help="comma-separated parts to run")
    args = p.parse_args()
    parts = args.only.split(",")
    result: Dict = {"bench": "jobs", "context": context()}
    settings = site_settings()
    wd = workdir("stardock-bench-jobs-")
    bench = Bench(args, settings, wd)
    try:
        bench.setup()
        result["images"] = {e: i["key"] for e, i in bench.images.items()}
        steps = [("submission", "submission", bench.submission), ("e2e", "end_to_end", bench.end_to_end),
                 ("injob", "start_overhead", bench.in_job), ("workload", "workload", bench.workload)]
        for part, key, fn in steps:
            if part in parts:
                say(f"{key} ...")
                t0 = time.monotonic()
                result[key] = fn()
                say(f"{key}: {time.monotonic() - t0:.0f} s")
    finally:
        bench.cleanup()
    result["context"]["loadavg_at_end"] = list(os.getloadavg())
    emit(result, args.json, render)
    return 0


def _rows(part: Dict, fmt=ms) -> List[List[str]]:
    return [[label, fmt(v["median_s"]), f"{v['over_baseline']:.2f}x", f"{v['minus_baseline_s'] * 1000:+.0f} ms"]
            for label, v in part.items()]


def render(r: Dict) -> str:
    out = []
    if "submission" in r:
        n = len(next(iter(r["submission"].values()))["samples_s"])
        out.append(table(["submission only (--hold, then scancel)", f"median of {n}", "vs sbatch", "difference"],
                         _rows(r["submission"]), "Submission: stardock sbatch vs sbatch, same trivial script"))
    if "end_to_end" in r:
        e2e = {k: v for k, v in r["end_to_end"].items() if isinstance(v, dict)}
        n = len(next(iter(e2e.values()))["samples_s"])
        out.append(table(["a job running `true`", f"median of {n}", "vs bare", "difference"], _rows(e2e),
                         "\nEnd to end: submit until Slurm reports COMPLETED (polled every 0.1 s)"))
        if r["end_to_end"].get("reps_with_other_jobs_around"):
            out.append(f"  ({r['end_to_end']['reps_with_other_jobs_around']} submissions had other jobs around)")
    if "start_overhead" in r:
        for where, title in (("in_job", "\nStart overhead inside a bare job (its cgroup), per command"),
                             ("outside_job", "\nThe same outside any job (login side)")):
            part = r["start_overhead"][where]
            n = len(next(iter(part.values()))["samples_s"])
            out.append(table(["command", f"median of {n}", "vs true", "difference"], _rows(part), title))
    if "workload" in r:
        w = r["workload"]
        rows = [[label, f"{v['median_MiB_s']:.0f} MiB/s", f"{v['over_bare']:.2f}", f"{v['best_MiB_s']:.0f} MiB/s",
                 f"{v['best_over_bare']:.2f}"] for label, v in w["read"].items()]
        out.append(table([f"read {w['read_mib']} MiB (warm page cache)", "median", "vs bare", "best", "vs bare"], rows,
                         "\nRead throughput: dd from the scratch volume mounted read-only vs the same file bare"))
        rows = [[label, f"{v['median_s']:.3f} s", f"{v['over_baseline']:.2f}",
                 f"{w['cpu_time'][label]['median_s']:.2f} s", f"{w['cpu_time'][label]['over_baseline']:.2f}",
                 f"{v['min_s']:.3f} s", f"{v['min_over_baseline']:.2f}"]
                for label, v in w["cpu_wall"].items()]
        per_job = len(w["cpu_wall"]["bare"]["samples_s"]) // w["rounds"]
        out.append(table([f"mawk loop of {w['cpu_loops']:.0e} iterations", "wall", "vs bare", "CPU time",
                          "vs bare", "best wall", "vs bare"], rows, "\nCPU-bound work inside a job (medians over "
                         f"{w['rounds']} jobs per variant x {per_job} runs)"))
        if not w["same_mawk"]:
            out.append(f"  warning: mawk differs between bare and containers: {w['mawk_sha256_prefix']}")
    out.append("\n" + describe(r["context"]))
    return "\n".join(out)


if __name__ == "__main__":
    run_main(main)
