#!/usr/bin/env python3
"""Starting a large image on a node (issue 14): the StarDock-menu image (the golden `menu` case,
about 2 GB unpacked) in a stardock job on a node where this user never ran it, then again, against
a bare job on the same node, in one run: from submission to the script's first line, and from
the node wrapper's start to it. Podman runs the cache's squashfs in place; Apptainer its SIF.

Run as an unprivileged user with the site config in $STARDOCK_SITE_CONFIG (see bench/README.md).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Dict, List

from _common import (
    BENCH_DIR,
    build_json,
    describe,
    expand,
    forget_jobs,
    job_id,
    measure_in_workdir,
    parser,
    ratio,
    remove_entry,
    run,
    run_main,
    say,
    site_settings,
    table,
    wait_job,
)

MENU = BENCH_DIR.parent / "tests" / "golden" / "cases" / "menu"
SCRIPT = "#!/bin/sh\ndate +%s.%N\n"


def first_line(out: Path) -> float:
    return float(out.read_text().split()[0])


def one(argv: List[str], wd: Path, name: str, jobs: List[str]) -> Dict[str, float]:
    t0 = time.time()
    proc = run(argv + ["-o", f"{name}.out", "first.sh"], cwd=wd)
    jobs.append(job_id(proc.stdout))
    state = wait_job(jobs[-1], timeout=1800)
    if state != "COMPLETED":
        raise RuntimeError(f"{name}: job {jobs[-1]} ended {state}: {(wd / f'{name}.out').read_text()[-1000:]}")
    result = {"submit_to_first_line_s": first_line(wd / f"{name}.out") - t0}
    if argv[0] == "stardock":  # the wrapper's record: <records>/<job>/run.json (jobs/records.py)
        record = json.loads((expand(site_settings()["records"]) / jobs[-1] / "run.json").read_text())
        result["wrapper_to_first_line_s"] = first_line(wd / f"{name}.out") - float(record["start"])
    return result


def forget_node_state(node: str) -> None:
    """Remove this user's engine state on the node (site key node_storage), so that the next job
    there is the user's first: nothing loaded, no layers, no containers."""
    store = str(expand(site_settings()["node_storage"]))
    script = ('[ -d "$1" ] || exit 0; cd /; export XDG_RUNTIME_DIR=/run/user/$(id -u); '
              'p() { r=$1; shift; podman --root "$r/podman/storage" --runroot "$r/podman/run" "$@"; }; '
              'p "$1" unshare sh -c \'umount "$0/podman/storage/overlay" 2>/dev/null; rm -rf "$0"\' "$1"')
    run(["srun", "-w", node, "-N1", "-n1", "-t", "5", "sh", "-c", script, "sh", store])


def measure(args, wd: Path) -> Dict:
    spec_dir = wd / "menu"
    shutil.copytree(MENU, spec_dir)
    (wd / "first.sh").write_text(SCRIPT)
    jobs: List[str] = []
    built: List[Dict] = []
    results: Dict[str, Dict] = {}
    try:
        say(f"bare job on {args.node}")
        results["bare"] = one(["sbatch", "--parsable", "-w", args.node, "-t", "10"], wd, "bare", jobs)
        for engine in args.engines:
            say(f"{engine}: building (or finding) the menu image")
            info = build_json(spec_dir / "stardock.yaml", engine)
            built.append(info)
            base = ["stardock", "sbatch", "--parsable", "-w", args.node, "-t", "30", "--image", info["key"]]
            say(f"{engine}: first job on {args.node} (this user's node state there removed first)")
            forget_node_state(args.node)
            results[f"{engine} first"] = one(base, wd, f"{engine}-first", jobs)
            say(f"{engine}: second job on {args.node}")
            results[f"{engine} second"] = one(base, wd, f"{engine}-second", jobs)
            meta = json.loads((Path(info["artifact"]).parent / "meta.json").read_text())
            for run_label in ("first", "second"):
                results[f"{engine} {run_label}"]["start_form"] = meta.get("run_form") or meta["artifact"]
    finally:
        forget_jobs(jobs, site_settings())
        if not args.keep:
            for info in built:
                if info["built"]:
                    remove_entry(info["artifact"])
    return {"results": results, "node": args.node}


def render(r: Dict) -> str:
    res = r["results"]
    bare = res["bare"]["submit_to_first_line_s"]
    rows = [["bare", f"{bare:.2f} s", "1.00x", "", ""]]
    for label, m in res.items():
        if label == "bare":
            continue
        wrapper = m.get("wrapper_to_first_line_s")
        rows.append([label, f"{m['submit_to_first_line_s']:.2f} s", f"{ratio(m['submit_to_first_line_s'], bare):.2f}x",
                     f"{wrapper:.2f} s" if wrapper is not None else "?", m.get("start_form", "")])
    out = [table(["job", "submission to first line", "vs bare", "wrapper start to first line", "runs from"], rows,
                 f"The StarDock-menu image starting on {r['node']} (the first time there, then again)")]
    out += ["", describe(r["context"])]
    return "\n".join(out)


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--node", default="node3", help="the node the jobs run on")
    p.add_argument("--engines", nargs="+", default=["podman", "apptainer"], choices=["podman", "apptainer"])
    return measure_in_workdir(p.parse_args(), "stardock-bench-start-", measure, render)


if __name__ == "__main__":
    run_main(main)
