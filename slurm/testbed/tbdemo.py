"""The main job of the quick start, run as the unprivileged test user on the testbed:
spec -> image (through the shared cache) -> Slurm job on a read-only site volume -> output.

A scientist's photometry of M51: Source Extractor, from the site's catalog, finds the stars in
the archive's (synthetic) r-band image; the job writes a catalogue to its output directory.
"""
from __future__ import annotations

import pwd
import shutil
from pathlib import Path

from tbcommon import TEST_USER, run, say, write_if_changed

SPEC = """\
# The environment: Source Extractor from the site's catalog, plus our parameter list.
name: m51-photometry
base: debian:bookworm
apps: [sextractor]
files:
  - {src: sex.param, dest: /opt/m51/sex.param}
build:
  - cd /opt/m51
  - source-extractor -d > default.sex      # Source Extractor's default configuration, to edit
env:
  OMP_NUM_THREADS: "1"
"""
PARAMS = "NUMBER\nX_IMAGE\nY_IMAGE\nFLUX_AUTO\nMAG_AUTO\n"
SCRIPT = """\
#!/bin/bash
#SBATCH --job-name=m51-photometry
#SBATCH --mem=1G
#SBATCH --time=10
#SBATCH --output=m51-%j.out
#STARDOCK --env stardock.yaml
#STARDOCK --mount archive/m51
# Runs inside the container: the archive is read-only at /data/archive/m51, results go to
# $STARDOCK_OUTPUT (/data/output), a directory of this job's own.
set -euo pipefail
cd "$STARDOCK_OUTPUT"
source-extractor /data/archive/m51/m51-r.fits -c /opt/m51/default.sex -CATALOG_NAME m51.cat \\
    -CATALOG_TYPE ASCII_HEAD -PARAMETERS_NAME /opt/m51/sex.param -FILTER N -DETECT_THRESH 5 \\
    -VERBOSE_TYPE QUIET
version=$(source-extractor --version | awk '{print $4}')
echo "Source Extractor $version in $STARDOCK_ENVIRONMENT, Slurm job $SLURM_JOB_ID"
echo "sources found in m51-r.fits: $(grep -vc '^#' m51.cat)"
echo "brightest five (x, y, magnitude):"
grep -v '^#' m51.cat | sort -g -k5 | head -5 | awk '{printf "  %7.1f %7.1f %7.2f\\n", $2, $3, $5}'
"""


def run_demo() -> int:
    pw = pwd.getpwnam(TEST_USER)
    work = Path(pw.pw_dir) / "m51-demo"
    work.mkdir(exist_ok=True)
    for name, text, mode in (("stardock.yaml", SPEC, 0o644), ("sex.param", PARAMS, 0o644),
                             ("photometry.sh", SCRIPT, 0o755)):
        write_if_changed(work / name, text, mode=mode, owner=TEST_USER)
    shutil.chown(work, user=TEST_USER)
    say(f"running the main job as {TEST_USER}: cd {work} && stardock sbatch --wait photometry.sh")
    proc = run(["stardock", "sbatch", "--parsable", "--wait", "photometry.sh"], user=TEST_USER, cwd=work,
               capture=True, check=False)
    job = proc.stdout.strip().split(";")[0]
    if proc.returncode != 0 or not job.isdigit():
        say(f"the job failed (exit {proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
        return proc.returncode or 1
    print((work / f"m51-{job}.out").read_text(), end="")
    status = run(["stardock", "status", job], user=TEST_USER, cwd=work, capture=True, check=False)
    print(status.stdout, end="")
    packed = run(["stardock", "outputs", job, "-o", work], user=TEST_USER, cwd=work, capture=True, check=False)
    print(f"outputs: {packed.stdout.strip()}")
    return 0 if "COMPLETED" in status.stdout else 1
