"""The main job of the quick start, run as the unprivileged test user on the testbed."""
from __future__ import annotations

import pwd
from pathlib import Path

from tbcommon import TEST_USER, run, say

HELLO = (
    'podman run --rm --pull=never --network=none localhost/debian:bookworm '
    'sh -c \'. /etc/os-release; echo "hello from $PRETTY_NAME in a rootless container, '
    'Slurm job $0"\' "$SLURM_JOB_ID"'
)


def run_demo() -> int:
    home = Path(pwd.getpwnam(TEST_USER).pw_dir)
    out_dir = home / "stardock-demo"
    run(["mkdir", "-p", out_dir], user=TEST_USER)
    say(f"submitting the hello job as {TEST_USER}")
    proc = run(["sbatch", "--wait", "--parsable", "--job-name=hello", "--mem=512M", "--time=5",
                f"--output={out_dir}/hello-%j.out", f"--wrap={HELLO}"],
               user=TEST_USER, capture=True, check=False)
    job = proc.stdout.strip().split(";")[0]
    output = out_dir / f"hello-{job}.out"
    print(output.read_text() if output.exists() else "(no output file)", end="")
    if proc.returncode != 0:
        say(f"hello job {job} failed (sbatch exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.returncode
