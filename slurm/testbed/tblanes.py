"""The test command in lanes: independent parts of the suite at once, each in a process of its own.

    phase 1   root     the testbed's self-tests, then tests/asroot (they stop and freeze Slurm's
                       daemons and crash a node: nothing else may use Slurm meanwhile)
              local    the Slurm-free tests (unit, golden, lint, the engine-only integration
                       modules), niced; the unit tests that play another user (marker root) run
                       in the root lane
              images   the suite's kept images built into the shared cache (tests/suiteimages.py),
                       niced: from then on the integration tests find them there
    phase 2   lane N   the integration modules, shared out by their last measured durations, each
                       lane as a test user of its own with a second user of its own (LANES)

Every lane writes its output to a log of its own, printed whole when the lane ends (never
interleaved), and a report of its tests (tests/conftest.py); the run ends with each lane's time and
the 25 slowest tests and keeps the durations under the testbed's log directory.
"""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tbcommon import LANES, LOG, SCIENTISTS, STATE, TEST_USER, TestbedError, run, say, testbed_vars, user_env

RUNS = LOG / "tests"
DURATIONS = LOG / "test-durations.json"   # the last run's, merged over its lanes
WEIGHTS = Path(__file__).resolve().parent / "lane-weights.json"   # measured, committed
DEFAULT_WEIGHT = 60.0                      # seconds, for a module no run has measured yet
# Integration modules that need no Slurm: they run in phase 1, beside the root lane
SLURM_FREE = ("test_build_both_engines.py", "test_packaging.py")


@dataclass
class Lane:
    name: str
    user: str                      # "root" or a scientist
    commands: List[List[str]]      # run one after another; the lane fails if any does
    cwd: Path
    env: Dict[str, str] = field(default_factory=dict)
    nice: bool = False
    log: Path = Path()
    reports: List[Path] = field(default_factory=list)
    rc: Optional[int] = None
    seconds: float = 0.0

    def argv(self, command: List[str], extra: Dict[str, str]) -> Tuple[List[str], Optional[Dict[str, str]]]:
        """The command as this lane's user (argv, and the environment to run it with)."""
        prefix = ["nice", "-n", "10"] if self.nice else []
        if self.user == "root":
            return [*prefix, *command], {**os.environ, **testbed_vars(), **self.env, **extra}
        env = {**user_env(self.user), **self.env, **extra}
        return ["runuser", "-u", self.user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                *prefix, *command], None

    def run(self) -> None:
        t0 = time.monotonic()
        rc = 0
        with open(self.log, "ab") as out:
            for i, command in enumerate(self.commands):
                report = self.log.with_name(f"{self.name}-{i}.json")
                report.touch()
                if self.user != "root":
                    pw = pwd.getpwnam(self.user)
                    os.chown(report, pw.pw_uid, pw.pw_gid)
                self.reports.append(report)
                argv, env = self.argv(command, {"STARDOCK_TEST_REPORT": str(report)})
                out.write(f"\n$ {' '.join(command)}   (as {self.user})\n".encode())
                out.flush()
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      cwd=self.cwd, env=env)
                rc = rc or proc.returncode
        self.rc, self.seconds = rc, time.monotonic() - t0


def pytest(python: str) -> List[str]:
    return [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--durations=0", "--durations-min=5"]


def weights() -> Dict[str, float]:
    """Each integration module's measured time (by file name): in this machine's last green run,
    else as measured when lane-weights.json was last written (a fresh machine)."""
    for source in (DURATIONS, WEIGHTS):
        try:
            tests = json.loads(source.read_text())["tests"]
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    else:
        return {}
    out: Dict[str, float] = {}
    for nodeid, entry in tests.items():
        module = nodeid.split("::")[0].rsplit("/", 1)[-1]
        out[module] = out.get(module, 0.0) + float(entry.get("duration", 0.0))
    return out


def share_out(modules: Sequence[Path], lanes: int, measured: Dict[str, float]) -> List[List[Path]]:
    """Longest first, each to the lane with the least work so far (deterministic for given weights)."""
    loads = [0.0] * lanes
    out: List[List[Path]] = [[] for _ in range(lanes)]
    for module in sorted(modules, key=lambda m: (-measured.get(m.name, DEFAULT_WEIGHT), m.name)):
        i = loads.index(min(loads))
        out[i].append(module)
        loads[i] += measured.get(module.name, DEFAULT_WEIGHT)
    return out


def run_phase(lanes: List[Lane]) -> None:
    """The lanes at once; each one's log printed whole when it ends."""
    printed = threading.Lock()

    def one(lane: Lane) -> None:
        lane.run()
        with printed:
            sys.stdout.write(f"\n{'=' * 30} lane {lane.name} (as {lane.user}): "
                             f"{'passed' if lane.rc == 0 else f'FAILED (exit {lane.rc})'} in {lane.seconds:.0f} s "
                             f"{'=' * 30}\n")
            sys.stdout.write(lane.log.read_text(errors="replace"))
            sys.stdout.flush()

    threads = [threading.Thread(target=one, args=(lane,), name=lane.name) for lane in lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def fresh() -> None:
    """Empty the test users' cache entries, login Podman stores and node storage: the next run builds
    every image of the suite from nothing (as on a fresh machine, the packages and base kept)."""
    from tbnodes import NODE_DISKS

    from tbsite import CACHE

    for user in SCIENTISTS:
        uid = pwd.getpwnam(user).pw_uid
        say(f"--fresh: removing {user}'s cache entries, Podman store and node storage")
        for entry in (CACHE / "entries").glob(f"*-u{uid}*"):
            run(["rm", "-rf", "--", entry])
        run(["podman", "system", "reset", "--force"], user=user, check=False, capture=True)
        for storage in NODE_DISKS.glob(f"*/var-tmp/stardock-{uid}"):
            run(["rm", "-rf", "--", storage])


def settle() -> None:
    """Cancel the test users' jobs an earlier run left (one killed before its tests' cleanups): a
    job pending or running from it holds the nodes this run's tests are given, for up to the
    partition's DefaultTime."""
    users = ",".join(SCIENTISTS)
    left = run(["squeue", "-h", "-u", users, "-o", "%i"], env=testbed_vars(), capture=True).stdout.split()
    if not left:
        return
    say(f"cancelling {len(left)} job(s) of the test users left by an earlier run: {' '.join(left)}")
    run(["scancel", "-u", users], env=testbed_vars())
    deadline = time.monotonic() + 120
    while run(["squeue", "-h", "-u", users, "-o", "%i"], env=testbed_vars(), capture=True).stdout.split():
        if time.monotonic() > deadline:
            raise TestbedError("the earlier run's jobs did not end within 120 s of scancel")
        time.sleep(0.5)


def run_suite(repo: Path, src: Path, python: str, *, fresh_first: bool = False) -> int:
    # The runs share the test users (their cache entries, homes, jobs): one at a time.
    with open(STATE / ".test.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another `testbed test` is running on this testbed; its tests and this run's would share "
                "the test users: waiting for it to end")
            fcntl.flock(lock, fcntl.LOCK_EX)
        settle()
        return _run_suite(repo, src, python, fresh_first=fresh_first)


def _run_suite(repo: Path, src: Path, python: str, *, fresh_first: bool) -> int:
    if fresh_first:
        fresh()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = RUNS / stamp
    logs.mkdir(parents=True)
    os.chmod(RUNS, 0o755)
    os.chmod(logs, 0o755)
    required = {"STARDOCK_REQUIRE_TESTBED": "1"}
    tests = src / "tests"
    modules = sorted((tests / "integration").glob("test_*.py"))
    local_modules = [m for m in modules if m.name in SLURM_FREE]
    slurm_modules = [m for m in modules if m.name not in SLURM_FREE]

    def basetemp(user: str, name: str) -> List[str]:
        # short: sockets made under it must fit AF_UNIX's 108 bytes
        return ["--basetemp", str(STATE / "shared" / f"t-{name}")]

    def lane_env(user: str, other: str) -> Dict[str, str]:
        return {**required, "STARDOCK_TEST_USER": user, "STARDOCK_OTHER_USER": other}

    t0 = time.monotonic()
    phase1 = [
        Lane("root", "root", [[*pytest(python), str(repo / "tests" / "testbed")],
                              [*pytest(python), str(tests / "asroot")],
                              [*pytest(python), str(tests / "unit"), "-m", "root"]],
             cwd=src, env=required),
        # as the second lane's users: the root lane's jobs and the images are the first lane user's
        Lane("local", LANES[1][0], [[*pytest(python), *basetemp(LANES[1][0], "local"), "-m", "not root",
                                     str(tests / "unit"), str(tests / "golden"), *map(str, local_modules)]],
             cwd=src, env=lane_env(*LANES[1]), nice=True),
        Lane("images", TEST_USER, [[python, str(tests / "suiteimages.py"), "build"]], cwd=src,
             env=lane_env(*LANES[0]), nice=True),
    ]
    shares = share_out(slurm_modules, len(LANES), weights())
    phase2 = [Lane(f"lane{i + 1}", user, [[*pytest(python), *basetemp(user, f"lane{i + 1}"), *map(str, share)]],
                   cwd=src, env=lane_env(user, other))
              for i, ((user, other), share) in enumerate(zip(LANES, shares))]
    for lane in phase1 + phase2:
        lane.log = logs / f"{lane.name}.log"
    say(f"phase 1: {', '.join(lane.name for lane in phase1)}; logs in {logs}")
    run_phase(phase1)
    t1 = time.monotonic()
    say("phase 2: " + "; ".join(f"{lane.name} as {lane.user}: {', '.join(m.name for m in share)}"
                                 for lane, share in zip(phase2, shares)))
    run_phase(phase2)
    t2 = time.monotonic()
    for lane in phase1 + phase2:
        for command in lane.commands:
            if "--basetemp" in command:
                run(["rm", "-rf", "--", command[command.index("--basetemp") + 1]], check=False)
    return summary(phase1, phase2, (t1 - t0, t2 - t1), logs)


def summary(phase1: List[Lane], phase2: List[Lane], phases: Tuple[float, float], logs: Path) -> int:
    merged: Dict[str, Dict] = {}
    lines = []
    for lane in phase1 + phase2:
        counts: Dict[str, int] = {}
        for report in lane.reports:
            try:
                tests = json.loads(report.read_text() or "{}").get("tests", {})
            except ValueError:
                tests = {}
            for nodeid, entry in tests.items():
                merged[nodeid] = dict(entry, lane=lane.name)
                counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
        shown = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no test report"
        lines.append(f"  {lane.name:7} {lane.user:9} {lane.seconds:7.0f} s   "
                     f"{'ok' if lane.rc == 0 else f'FAILED (exit {lane.rc})':18} {shown}")
    slowest = sorted(merged.items(), key=lambda kv: -kv[1]["duration"])[:25]
    out = ["", "=" * 100, "lanes:", *lines,
           f"  phase 1 {phases[0]:.0f} s, phase 2 {phases[1]:.0f} s, in all {sum(phases):.0f} s "
           f"({sum(phases) / 60:.1f} min)", "25 slowest tests:"]
    out += [f"  {e['duration']:7.1f} s  {e['lane']:6} {nodeid}" for nodeid, e in slowest]
    totals: Dict[str, int] = {}
    for e in merged.values():
        totals[e["outcome"]] = totals.get(e["outcome"], 0) + 1
    out.append("tests: " + ", ".join(f"{n} {k}" for k, n in sorted(totals.items())))
    data = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "phases": list(phases),
            "lanes": {lane.name: {"user": lane.user, "seconds": lane.seconds, "rc": lane.rc}
                      for lane in phase1 + phase2},
            "tests": merged}
    text = json.dumps(data, indent=1, sort_keys=True)
    (logs / "durations.json").write_text(text)
    ok = all(lane.rc == 0 for lane in phase1 + phase2)
    if ok:  # what the next run shares its lanes out by
        DURATIONS.write_text(text)
    out.append(f"durations: {logs / 'durations.json'}")
    print("\n".join(out), flush=True)
    return 0 if ok else 1
