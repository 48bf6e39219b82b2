"""Code in the victim's own container asks the host, through the srun/scontrol stand-ins, to run
programs or open files (issue 23, item 2). The batch script is the hostile code: an image someone
else built, a library from PyPI. It knows the node's paths (the victim's home, a program it staged
there) and tries every way in one job per engine; then the same job shows that ordinary steps
still work. Each attack would leave a marker in the victim's home if the host ran the program or
opened the path; the job's log must name each refusal."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from clitools import ENGINES, remove, shared_dir, stardock, stardock_json, write_spec

from slurmtools import wait_job

pytestmark = [pytest.mark.slurm]
HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)  # the victim's home, which the container does not see
SPEC = "name: attacks-test\n"  # the spec test_attacks_jobs.py builds: one image in the cache for both files

# each attack: its name (its marker's), the lines of the hostile script, and what the log must show
ATTACKS = {
    "prolog": ("srun --prolog={evil}/prolog -n1 true; echo prolog=$?", "--prolog"),
    "prolog-abbrev": ("srun -lN1 --prol {evil}/prolog-abbrev true; echo prolog-abbrev=$?", "--prolog"),
    "task-epilog": ("srun -n1 --task-e={evil}/task-epilog true; echo task-epilog=$?", "--task-epilog"),
    "het-prolog": ("srun -n1 true : --prolog={evil}/het-prolog -n1 true; echo het-prolog=$?", "--prolog"),
    "output-home": ("srun -n1 --output={marker}output-home echo written; echo output-home=$?", "--output"),
    "error-host": ("srun -n1 -e {work}/marker-{uid}-error-host true; echo error-host=$?", "--error"),
    "export-preload": ("srun -n1 --export=LD_PRELOAD={evil}/evil.so true; echo export-preload=$?", None),
    "export-pythonpath": ("srun -n1 --export=ALL,PYTHONPATH={evil} true; echo export-pythonpath=$?", None),
    "env-task-prolog": ("SLURM_TASK_PROLOG={evil}/env-task-prolog srun -n1 true; echo env-task-prolog=$?",
                        "$SLURM_TASK_PROLOG"),
    "env-conf": ("SLURM_CONF={evil}/slurm.conf srun -n1 true; echo env-conf=$?", "$SLURM_CONF"),
    "write-script": ("scontrol write batch_script $SLURM_JOB_ID {marker}write-script; echo write-script=$?",
                     "'write'"),
    "stdin": ("echo 'write batch_script '$SLURM_JOB_ID' {marker}stdin' | scontrol; echo stdin=$?",
              "standard input"),
    "token": ("scontrol token lifespan=60; echo token=$?", "token (JWT)"),
}
LEGIT = """srun -n2 -l hostname; echo label=$?
srun -n2 --output=/data/output/out-%t.txt sh -c 'echo "task $SLURM_PROCID"'; echo output=$?
srun -n1 --export=ALL,FOO=bar sh -c 'echo "FOO=$FOO"'
srun -n1 --chdir=/data/output sh -c 'echo "pwd=$(pwd)"'
"""
EVIL_SO = r"""#include <stdio.h>
__attribute__((constructor)) static void ran(void) {
    FILE *fh = fopen(MARKER, "w");
    if (fh) { fputs("ran on the host\n", fh); fclose(fh); }
}
"""


@pytest.fixture(scope="module")
def work():
    path = shared_dir("stardock-attack-steps-")
    write_spec(path, SPEC)
    yield path
    remove(path)


def stage(work: Path, uid: str) -> Path:
    """What the attacker staged on the node's file system (a path the container does not see, but
    knows): programs that leave a marker in the victim's home when the host runs them."""
    evil = work / f"evil-{uid}"
    evil.mkdir()
    for name in ATTACKS:
        program = evil / name
        program.write_text(f"#!/bin/sh\necho ran > {HOME}/stardock-attack-{uid}-{name}\n")
        program.chmod(0o755)
    (evil / "sitecustomize.py").write_text(
        f"open({str(HOME / f'stardock-attack-{uid}-export-pythonpath')!r}, 'w').write('ran')\n")
    if shutil.which("gcc"):
        (evil / "evil.c").write_text(EVIL_SO)
        marker = HOME / f"stardock-attack-{uid}-export-preload"
        subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(evil / "evil.so"),
                        str(evil / "evil.c")], check=True)
    # a configuration of the attacker's: the cluster's own, with a program srun runs before each step
    conf = Path(os.environ["SLURM_CONF"]).read_text()
    (evil / "slurm.conf").write_text(conf + f"\nSrunProlog={evil}/env-conf\n")
    return evil


@pytest.mark.parametrize("engine", ENGINES)
def test_code_in_the_container_gets_steps_and_nothing_else(work, engine):
    uid = uuid.uuid4().hex[:8]
    evil = stage(work, uid)
    marker = f"{HOME}/stardock-attack-{uid}-"
    values = {"evil": evil, "marker": marker, "work": work, "uid": uid}
    body = "\n".join(line.format(**values) for line, _ in ATTACKS.values()) + "\n" + LEGIT
    script = work / f"steps-{engine}-{uid}.sh"
    script.write_text("#!/bin/bash\n" + body)
    markers = [Path(f"{marker}{name}") for name in ATTACKS] + [work / f"marker-{uid}-error-host"]
    try:
        proc = stardock("sbatch", "--parsable", "--env", "stardock.yaml", "--engine", engine, "-N1", "-n2", "-t", "5",
                        f"--output=steps-{uid}-%j.out", f"--error=steps-{uid}-%j.err", str(script), cwd=work)
        assert proc.returncode == 0, proc.stderr
        job = proc.stdout.strip().split(";")[0]
        rows = wait_job(job, timeout=600)
        out = (work / f"steps-{uid}-{job}.out").read_text()
        err = (work / f"steps-{uid}-{job}.err").read_text()
        log = out + err
        assert rows[job]["State"] == "COMPLETED", log
        # the host ran nothing the container named and opened none of its paths
        assert [str(m) for m in markers if m.exists()] == [], log
        assert "SLURM_JWT=" not in out and "eyJ" not in out, "a token reached the container"
        lines = out.splitlines()
        for name, (_line, named) in ATTACKS.items():
            if named is not None:  # refused, with one message naming what and why
                assert f"{name}=2" in lines, f"{name}: {log}"
                assert any(named in line and "is refused" in line for line in err.splitlines()), f"{name}: {err}"
        # --export is the tasks' environment in the container: the step ran, the host's never saw it
        assert "export-preload=0" in lines and "export-pythonpath=0" in lines, log
        # ordinary steps still work
        assert "label=0" in lines and sorted(line.split(":")[0] for line in lines if line[:3] in ("0: ", "1: ")) \
            == ["0", "1"], log
        assert "output=0" in lines and "FOO=bar" in lines and "pwd=/data/output" in lines, log
        [row] = stardock_json("status", job)
        output = Path(row["output"])
        assert sorted((output / f"out-{t}.txt").read_text() for t in (0, 1)) == ["task 0\n", "task 1\n"]
    finally:
        for m in markers:
            if m.exists():
                m.unlink()
