#!/usr/bin/env python3
"""The command line's own cost, against baselines measured in the same run (issue 10's goals):
`stardock --version` against `python -c pass` (goal: within 2x), and `stardock sbatch --hold`
with `--image KEY` and with `--env SPEC` (a cache hit) against plain `sbatch --hold` (goals:
within +60 ms and +90 ms). Interleaved rounds, the first dropped as a warm-up; every job is
cancelled and forgotten at the end.

Run as an unprivileged user with the site config in $STARDOCK_SITE_CONFIG (see bench/README.md).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List

from _common import (
    build_json,
    describe,
    forget_jobs,
    job_id,
    measure_in_workdir,
    median,
    ms,
    parser,
    ratio,
    remove_entry,
    run_main,
    say,
    site_settings,
    table,
    timed,
    write_spec,
)

SPEC = "name: bench-cli\ncommand: [/bin/sh]\n"
GOALS = {"stardock --version": "<= 2x python -c pass", "stardock sbatch --image KEY --hold": "<= sbatch + 60 ms",
         "stardock sbatch --env SPEC --hold (cache hit)": "<= sbatch + 90 ms"}


def measure(args, wd: Path) -> Dict:
    spec = write_spec(wd / "env", SPEC)
    info = build_json(spec, "podman")
    (wd / "trivial.sh").write_text("#!/bin/sh\ntrue\n")
    hold = ["--parsable", "--hold", "-o", "/dev/null", "-J", "bench-cli"]
    startup = {"python -c pass": [sys.executable, "-c", "pass"], "stardock --version": ["stardock", "--version"]}
    submits = {"sbatch --hold": ["sbatch", *hold, "trivial.sh"],
               "stardock sbatch --image KEY --hold": ["stardock", "sbatch", *hold, "--image", info["key"],
                                                      "trivial.sh"],
               "stardock sbatch --env SPEC --hold (cache hit)": ["stardock", "sbatch", *hold, "--env", str(spec),
                                                                 "trivial.sh"]}
    samples: Dict[str, List[float]] = {k: [] for k in [*startup, *submits]}
    jobs: List[str] = []
    try:
        for rep in range(args.reps + 1):
            say(f"round {rep + 1} of {args.reps + 1}")
            for label, argv in {**startup, **submits}.items():
                seconds, proc = timed(argv, cwd=wd)
                if label in submits:
                    jobs.append(job_id(proc.stdout))
                if rep:
                    samples[label].append(seconds)
    finally:
        forget_jobs(jobs, site_settings())
        if info["built"] and not args.keep:
            remove_entry(info["artifact"])
    med = {k: median(v) for k, v in samples.items()}
    return {"medians_s": med, "samples_s": samples, "reps": args.reps,
            "version_vs_python": ratio(med["stardock --version"], med["python -c pass"]),
            "image_minus_sbatch_s": med["stardock sbatch --image KEY --hold"] - med["sbatch --hold"],
            "env_minus_sbatch_s": med["stardock sbatch --env SPEC --hold (cache hit)"] - med["sbatch --hold"]}


def render(r: Dict) -> str:
    m, n = r["medians_s"], r["reps"]
    rows = [["python -c pass", ms(m["python -c pass"]), "1.00x", "+0 ms", ""],
            ["stardock --version", ms(m["stardock --version"]), f"{r['version_vs_python']:.2f}x",
             f"+{(m['stardock --version'] - m['python -c pass']) * 1000:.0f} ms", GOALS["stardock --version"]]]
    base = m["sbatch --hold"]
    rows.append(["sbatch --hold", ms(base), "1.00x", "+0 ms", ""])
    for label in ("stardock sbatch --image KEY --hold", "stardock sbatch --env SPEC --hold (cache hit)"):
        rows.append([label, ms(m[label]), f"{ratio(m[label], base):.2f}x", f"+{(m[label] - base) * 1000:.0f} ms",
                     GOALS[label]])
    out = [table(["command", f"median of {n}", "vs baseline", "difference", "goal"], rows,
                 "The command line's own cost (baselines: python -c pass; sbatch --hold)")]
    out.append("")
    out.append(describe(r["context"]))
    return "\n".join(out)


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=10, help="rounds measured (after one warm-up round)")
    return measure_in_workdir(p.parse_args(), "stardock-bench-cli-", measure, render)


if __name__ == "__main__":
    run_main(main)
