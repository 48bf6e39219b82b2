"""Helpers shared by the bench scripts: timing, medians, tables, the stardock CLI, Slurm jobs.

Standard library only. The scripts run as an unprivileged user with the interpreter stardock is
installed for (the testbed's venv), so the package under test is importable for the little
they need from it (the site's resolved paths, removing the cache entries they made).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}
BENCH_DIR = Path(__file__).resolve().parent


class BenchError(RuntimeError):
    pass


# --- running and timing -----------------------------------------------------------------------
def run(argv: Sequence[str], cwd: Optional[Path] = None, check: bool = True, timeout: float = 1800,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(map(str, argv))} failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def timed(argv: Sequence[str], cwd: Optional[Path] = None, check: bool = True,
          timeout: float = 1800) -> tuple:
    """(seconds of wall time, the completed process)."""
    t0 = time.perf_counter()
    proc = run(argv, cwd=cwd, check=check, timeout=timeout)
    return time.perf_counter() - t0, proc


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title] if title else []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def say(msg: str) -> None:
    """Progress, on stderr (stdout is the table or the JSON object)."""
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --- the setting the numbers were taken in ---------------------------------------------------------
def context() -> Dict:
    def version(argv: List[str]) -> Optional[str]:
        try:
            out = run(argv, check=False, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None
    queue = [q.split() for q in run(["squeue", "-h", "-o", "%i %T %r"], check=False).stdout.splitlines()]
    return {
        "host": platform.node(), "cpus": os.cpu_count(), "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(), "user": os.environ.get("USER"),
        "stardock": version(["stardock", "--version"]), "podman": version(["podman", "--version"]),
        "apptainer": version(["apptainer", "--version"]), "slurm": version(["sbatch", "--version"]),
        "jobs_at_start": {"running": sum(1 for q in queue if q[1:2] != ["PENDING"]),
                          "held": sum(1 for q in queue if q[1:2] == ["PENDING"] and "Held" in q[-1]),
                          "pending": sum(1 for q in queue if q[1:2] == ["PENDING"] and "Held" not in q[-1])},
    }


def describe(c: Dict) -> str:
    j = c["jobs_at_start"]
    return (f"{c['host']}: {c['cpus']} CPUs, load {c['loadavg_at_start'][0]:.2f} at start, "
            f"{c.get('loadavg_at_end', [float('nan')])[0]:.2f} at the end; other jobs at start: "
            f"{j['running']} running, {j['pending']} pending, {j['held']} held; {c['slurm']}; {c['podman']}; "
            f"{c['apptainer']}")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    p.add_argument("--keep", action="store_true", help="keep the work directory and the images made here")
    return p


def measure_in_workdir(args, prefix: str, measure: Callable, render: Callable[[Dict], str]) -> int:
    """The shape every script shares: the machine's context, a work directory the nodes see
    (removed afterwards unless --keep), the measurement, the load at the end, the output."""
    ctx = context()
    wd = workdir(prefix)
    try:
        result = measure(args, wd)
    finally:
        if not args.keep:
            run(["rm", "-rf", str(wd)], check=False)
    ctx["loadavg_at_end"] = list(os.getloadavg())
    result["context"] = ctx
    emit(result, args.json, render)
    return 0


def run_main(main: Callable[[], int]) -> None:
    """A bench script's entry point: exit with main's status, or with one line for a BenchError."""
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        sys.exit(1)


def emit(result: Dict, as_json: bool, render: Callable[[Dict], str]) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))


SHARED = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed")) / "shared"


def workdir(prefix: str, parent: Optional[Path] = None) -> Path:
    """A work directory the compute nodes see too (their /tmp is their own)."""
    parent = parent or (SHARED if SHARED.is_dir() else None)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=str(parent) if parent else None))
    path.chmod(0o755)
    return path


# --- stardock ---------------------------------------------------------------------------------
def site_settings() -> Dict:
    out = run(["stardock", "site", "show", "--json"])
    return {k: v["value"] for k, v in json.loads(out.stdout)["settings"].items()}


def expand(template: str) -> Path:
    import getpass

    from stardock_hpc.site import expand_path  # the site's own {user}/{home} expansion
    return Path(expand_path(template, getpass.getuser()))


def write_spec(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = directory / "stardock.yaml"
    spec.write_text(text)
    return spec


def build_json(spec: Path, engine: str) -> Dict:
    out = run(["stardock", "build", str(spec), "--engine", engine, "--json"], cwd=spec.parent)
    return json.loads(out.stdout)


def remove_entry(artifact: str) -> None:
    """Remove a cache entry this run made (and, for Podman, its tag in the local store)."""
    from stardock_hpc.cache import Cache
    entry_dir = Path(artifact).parent
    cache = Cache(entry_dir.parent.parent)
    entry = cache.entry_at(entry_dir)
    if entry is None:
        return
    tag = entry.meta.get("image_tag")
    cache.remove(entry)
    if tag:
        run(["podman", "rmi", "--force", tag], check=False)


# --- Slurm --------------------------------------------------------------------------------------
def job_state(job: str) -> Optional[str]:
    out = run(["scontrol", "show", "job", "-o", job], check=False)
    m = re.search(r"\bJobState=(\S+)", out.stdout)
    if m:
        return m.group(1)
    out = run(["sacct", "-X", "-n", "-P", "-j", job, "--format=State"], check=False)
    line = out.stdout.strip().splitlines()
    return line[0].split()[0] if line else None


def wait_job(job: str, poll: float = 0.1, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(job)
        if state in TERMINAL:
            return state
        time.sleep(poll)
    run(["scancel", job], check=False)
    raise BenchError(f"job {job} did not finish in {timeout:.0f} s (cancelled)")


def job_id(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.strip()]
    m = re.match(r"^([0-9]+)", lines[-1]) if lines else None
    if not m:
        raise BenchError(f"no job id in {stdout!r}")
    return m.group(1)


def forget_jobs(jobs: Iterable[str], settings: Dict) -> None:
    """Cancel jobs and remove what stardock recorded about them (records, outputs, in-use marks)."""
    jobs = [j for j in jobs if j]
    if not jobs:
        return
    run(["scancel", *jobs], check=False)
    records, outputs = expand(settings["records"]), expand(settings["outputs"])
    inuse = Path(settings["cache"]) / "inuse"
    for job in jobs:
        shutil.rmtree(records / job, ignore_errors=True)
        shutil.rmtree(outputs / job, ignore_errors=True)
        for mark in inuse.glob(f"*.j{job}.u{os.getuid()}"):  # inuse/<entry>.j<job>.u<uid> (cache.py)
            try:
                mark.unlink()
            except OSError:
                pass
