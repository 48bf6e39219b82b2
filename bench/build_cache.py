#!/usr/bin/env python3
"""Unprivileged builds and the shared cache: what a cache hit costs, what a `build:`-only change
costs after a full build, and how large each engine's artifact is.

Baselines measured in the same run: `stardock --version` (Python start-up plus the CLI import)
and `python -c pass` for the cache hit; the full build for the rebuild. Every spec carries a
fresh nonce in `env:` (rendered before the package layers), so the first build is really full.
Run as an unprivileged user with the site config in $STARDOCK_SITE_CONFIG (see bench/README.md).
"""
from __future__ import annotations

import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Dict, List

from _common import (
    BenchError,
    context,
    describe,
    emit,
    median,
    mib,
    ms,
    parser,
    ratio,
    remove_entry,
    run,
    run_main,
    say,
    secs,
    table,
    timed,
    workdir,
    write_spec,
)

ENGINES = ("podman", "apptainer")
SPEC = """\
name: {name}
packages: {{apt: [jq, bc]}}
env: {{BENCH_NONCE: "{nonce}"}}
build:
  - jq -n '"{step}"' > /opt/bench-step
  - echo '2^64' | bc > /opt/bench-bc
"""


def build_verbose(spec: Path, engine: str) -> Dict:
    """A build as a user runs it (output streamed), timed; the key and artifact from stdout and,
    for Podman, how many steps came from the layer cache."""
    seconds, proc = timed(["stardock", "build", str(spec), "--engine", engine], cwd=spec.parent)
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    if "nothing to build" in proc.stderr:
        raise BenchError(f"{spec} was already cached: the nonce did not make it new")
    steps = len(re.findall(r"^\s*\|\s*STEP \d+/\d+", proc.stderr, re.M))
    reused = len(re.findall(r"-->\s+Using cache", proc.stderr))
    meta = json.loads((Path(fields["artifact"]).parent / "meta.json").read_text())
    return {"seconds": seconds, "key": fields["key"], "artifact": fields["artifact"],
            "engine_seconds": meta.get("build_seconds"), "steps": steps, "steps_from_cache": reused}


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=10, help="timed cache hits per engine (default 10)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated (default: both)")
    args = p.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    ctx = context()
    wd = workdir("stardock-bench-build-")
    nonce = uuid.uuid4().hex[:12]
    name = f"bench-build-{nonce[:8]}"
    v1 = write_spec(wd / "v1", SPEC.format(name=name, nonce=nonce, step="v1"))
    v2 = write_spec(wd / "v2", SPEC.format(name=name, nonce=nonce, step="v2"))  # only build: differs
    made: List[str] = []
    result: Dict = {"bench": "build_cache", "context": ctx, "nonce": nonce, "engines": {}}
    try:
        for engine in engines:
            say(f"{engine}: full build of {v1.name} (nonce {nonce}) ...")
            full = build_verbose(v1, engine)
            made.append(full["artifact"])
            say(f"{engine}: full build {secs(full['seconds'])}; rebuild after a build:-only change ...")
            rebuild = build_verbose(v2, engine)
            made.append(rebuild["artifact"])
            say(f"{engine}: rebuild {secs(rebuild['seconds'])}")
            result["engines"][engine] = {
                "full_build_s": full["seconds"], "rebuild_s": rebuild["seconds"],
                # the engine's own part (podman build + podman save / apptainer build), from the
                # entry's meta.json; the rest is stardock's: context, base check, versions, digest
                "full_engine_s": full["engine_seconds"], "rebuild_engine_s": rebuild["engine_seconds"],
                "rebuild_over_full": ratio(rebuild["seconds"], full["seconds"]),
                "podman_steps": full["steps"] if engine == "podman" else None,
                "rebuild_steps_from_layer_cache": rebuild["steps_from_cache"] if engine == "podman" else None,
                "artifact": full["artifact"], "artifact_bytes": os.path.getsize(full["artifact"]),
                "key": full["key"],
            }

        say(f"cache hits: {args.reps} x `stardock build --quiet` per engine, interleaved with the baselines ...")
        commands = {"python -c pass": ([sys.executable, "-c", "pass"], None),
                    "stardock --version": (["stardock", "--version"], None)}
        for e in engines:
            commands[f"stardock build --quiet ({e}, hit)"] = (
                ["stardock", "build", str(v1), "--engine", e, "--quiet"], result["engines"][e]["artifact"])
        samples: Dict[str, List[float]] = {label: [] for label in commands}
        for i in range(args.reps + 1):  # the first round warms the page cache and is dropped
            for label, (argv, expected) in commands.items():
                seconds, proc = timed(argv, cwd=wd)
                if expected and proc.stdout.split()[-1] != expected:
                    raise BenchError(f"{label} gave {proc.stdout.split()[-1]}, not {expected}")
                if i:
                    samples[label].append(seconds)
        base = median(samples["stardock --version"])
        result["startup"] = {label: {"median_s": median(xs), "samples_s": xs,
                                     "over_stardock_version": ratio(median(xs), base)}
                             for label, xs in samples.items()}
        for engine in engines:
            hit = median(samples[f"stardock build --quiet ({engine}, hit)"])
            # stardock's own measure of the same hit, inside the process: plan, key, lookup, verify
            inside = [json.loads(run(["stardock", "build", str(v1), "--engine", engine, "--json"],
                                     cwd=wd).stdout)["seconds"] for _ in range(args.reps)]
            result["engines"][engine].update(cache_hit_s=hit, cache_hit_over_version=ratio(hit, base),
                                             cache_hit_in_process_s=median(inside))
        sizes = {e: result["engines"][e]["artifact_bytes"] for e in engines}
        if "podman" in sizes and "apptainer" in sizes:
            result["sif_over_oci_archive"] = ratio(sizes["apptainer"], sizes["podman"])
    finally:
        if not args.keep:
            for artifact in made:
                try:
                    remove_entry(artifact)
                except Exception as exc:  # noqa: BLE001 - cleanup must go on
                    say(f"warning: could not remove {artifact}: {exc}")
            run(["rm", "-rf", str(wd)], check=False)
        else:
            say(f"kept {wd} and the cache entries {made}")
    result["context"]["loadavg_at_end"] = list(os.getloadavg())
    emit(result, args.json, render)
    return 0


def render(r: Dict) -> str:
    out = []
    st = r["startup"]
    base = st["stardock --version"]["median_s"]
    rows = [[label, ms(v["median_s"]), f"{v['over_stardock_version']:.2f}x"] for label, v in st.items()]
    n = len(next(iter(st.values()))["samples_s"])
    out.append(table([f"command (median of {n})", "wall", "vs stardock --version"], rows,
                     f"Cache hit vs start-up (baseline: stardock --version = {ms(base)})"))
    out.append("in-process part of a hit (plan, key, lookup, verify; `seconds` of --json): " + ", ".join(
        f"{engine} {ms(e['cache_hit_in_process_s'])}" for engine, e in r["engines"].items()))
    rows = []
    for engine, e in r["engines"].items():
        reuse = (f"{e['rebuild_steps_from_layer_cache']}/{e['podman_steps']} steps from layer cache"
                 if engine == "podman" else "no layer reuse: every build is full")
        rows.append([engine, f"{secs(e['full_build_s'])} ({secs(e['full_engine_s'])})",
                     f"{secs(e['rebuild_s'])} ({secs(e['rebuild_engine_s'])})", f"{e['rebuild_over_full']:.2f}",
                     reuse])
    out.append(table(["engine", "full build (engine)", "rebuild, build: changed (engine)", "rebuild/full",
                      "note"], rows,
                     "\nFull build vs rebuild after a build:-only change (one build each; wall of `stardock build`,\n"
                     "in parentheses the engine's part: podman build + podman save, or apptainer build)"))
    rows = [[engine, mib(e["artifact_bytes"]), Path(e["artifact"]).name] for engine, e in r["engines"].items()]
    if "sif_over_oci_archive" in r:
        rows.append(["SIF / OCI archive", f"{r['sif_over_oci_archive']:.2f}", ""])
    out.append(table(["engine", "artifact size", "file"], rows, "\nArtifact size for the same spec"))
    out.append("\n" + describe(r["context"]))
    return "\n".join(out)


if __name__ == "__main__":
    run_main(main)
