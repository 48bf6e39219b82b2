"""Times a few commands many times, interleaved, and prints the samples as one JSON object.

Used by bench/jobs.py both inside a bare Slurm job (so the commands run in the job's cgroup, as
a job's own would) and outside any job. The config file is JSON:
    {"reps": 7, "commands": {"label": ["argv", ...], ...}}
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> None:
    config = json.loads(open(sys.argv[1]).read())
    commands = config["commands"]
    samples = {label: [] for label in commands}
    failures = {}
    for rep in range(config["reps"] + 1):  # round 0 warms caches (page cache, image store) and is dropped
        for label, argv in commands.items():
            t0 = time.perf_counter()
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
            seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                failures[label] = f"exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}"
            elif rep:
                samples[label].append(seconds)
    print(json.dumps({"in_job": os.environ.get("SLURM_JOB_ID"), "samples": samples, "failures": failures}))


if __name__ == "__main__":
    main()
