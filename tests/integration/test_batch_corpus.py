"""Real batch scripts: `stardock sbatch` accepts what sbatch accepts and makes the same job of it,
and refuses what sbatch refuses, for the same cause (issue 11).

tests/corpus/batch/ holds public batch scripts from HPC centres' documentation and research
repositories (SOURCES.md says where each comes from and what was edited for the testbed). Each is
submitted held, once with plain `sbatch` and once with `stardock sbatch --image KEY`, from one
directory with one environment (test_sbatch_fidelity's Twin); Slurm's records of the two jobs must
be the same field for field, or both submissions must fail naming the same cause. Then every
spelling of an option sbatch 22.05 takes (aliases, abbreviations, bundled short options) goes the
same way. Nothing here runs: every job is held and cancelled at the end.

Last, real jobs, with both engines: what --export names (on the command line, in $SBATCH_EXPORT or
in an #SBATCH line, with sbatch's precedence) reaches the script in the container with the value
plain sbatch gives it, literally; what it does not name stays out.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from clitools import built_image, cancelled_at_exit, remove, shared_dir, stardock, user_env, write_spec
from test_sbatch_fidelity import Twin, differences, header, normalise, scontrol_records

from slurmtools import sh, wait_job

pytestmark = [pytest.mark.slurm, pytest.mark.podman]

CORPUS = Path(__file__).parent.parent / "corpus" / "batch"
SCRIPTS = sorted(p.name for p in CORPUS.glob("*.sh"))
SPEC = 'name: corpus\nbuild: ["echo corpus > /stamp"]\n'
# sbatch's own prefixes in front of the message that names the cause (getopt writes argv[0]: /usr/bin/sbatch)
PREFIX = re.compile(r"^(?:\S*sbatch: (?:error: |fatal: )?|allocation failure: |Batch job submission failed: )")
# Refusals stardock makes itself, before sbatch runs (it reads the script and the options first),
# in its own words: what sbatch prints for the cause, and what stardock prints for it.
OWN_WORDS = [("DOS line breaks", "DOS line breaks"), ("NULL character", "NULL character"),
             ("is ambiguous; possibilities", "is ambiguous; possibilities")]


def cause(stderr: str) -> str:
    """The message sbatch ends with (its last error line, without its prefixes)."""
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not line.startswith('Try "sbatch --help"')]
    assert lines, "sbatch refused without a message"
    last = lines[-1]
    while PREFIX.match(last):
        last = PREFIX.sub("", last, count=1)
    return last.rstrip(".").strip()


def same_cause(plain_stderr: str, ours_stderr: str) -> bool:
    if cause(plain_stderr) in ours_stderr:
        return True  # sbatch refused stardock's job as it refused the script (or stardock used its words)
    return any(theirs in plain_stderr and mine in ours_stderr for theirs, mine in OWN_WORDS)


class CorpusTwin(Twin):
    """Twin, also for submissions that are refused: the process, and what the real sbatch got."""

    def _calls(self) -> Optional[List[str]]:
        calls = list(self.log.iterdir())
        assert len(calls) <= 1, f"expected at most one sbatch call, saw {len(calls)}"
        if not calls:
            return None
        argv = calls[0].read_text().split("\0")[:-1]
        calls[0].unlink()
        return argv

    def _keep(self, proc: subprocess.CompletedProcess) -> None:
        match = re.match(r"([0-9]+)", proc.stdout.strip())
        if proc.returncode == 0 and match:
            self.jobs.append(match.group(1))

    def try_plain(self, *args: str, env: Optional[Dict[str, str]] = None
                  ) -> Tuple[subprocess.CompletedProcess, Optional[List[str]]]:
        proc = subprocess.run(["sbatch", *args], cwd=self.workdir, env={**self.env, **(env or {})},
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        self._keep(proc)
        return proc, self._calls()

    def try_stardock(self, *args: str, env: Optional[Dict[str, str]] = None
                     ) -> Tuple[subprocess.CompletedProcess, Optional[List[str]]]:
        proc = stardock("sbatch", "--image", self.key, *args, env={**self.env, **(env or {})},
                        cwd=self.workdir, timeout=120)
        self._keep(proc)
        return proc, self._calls()


@pytest.fixture(scope="module")
def image_key():
    with built_image(SPEC, "stardock-corpus-") as key:
        yield key


@pytest.fixture(scope="module")
def twin(tmp_path_factory, image_key):
    workdir = tmp_path_factory.mktemp("corpus")
    for script in CORPUS.glob("*.sh"):
        shutil.copy(script, workdir / script.name)
    (workdir / "spell.sh").write_text("#!/bin/sh\ntrue\n")
    with cancelled_at_exit() as jobs:
        yield CorpusTwin(workdir, image_key, jobs)


def compare(twin: CorpusTwin, args: List[str], script: str) -> None:
    """Submit args + script both ways; the same job, or the same refusal."""
    plain, _ = twin.try_plain("--hold", "--parsable", *args, script)
    ours, argv = twin.try_stardock("--hold", "--parsable", *args, script)
    if plain.returncode != 0:
        assert ours.returncode != 0, (f"sbatch refused it ({cause(plain.stderr)!r}), stardock sbatch "
                                      f"accepted it:\n{ours.stdout}")
        assert "Traceback" not in ours.stderr, ours.stderr
        assert same_cause(plain.stderr, ours.stderr), (
            f"refused for another cause:\n  sbatch: {plain.stderr.strip()}\n  stardock: {ours.stderr.strip()}")
        print(f"[corpus] {' '.join(args)} {script}: both refused: {cause(plain.stderr)}")
        return
    assert ours.returncode == 0, f"sbatch accepted it, stardock sbatch refused it:\n{ours.stderr}"
    assert argv is not None
    job_script = argv[-1]
    plain_job, our_job = plain.stdout.split(";")[0].strip(), ours.stdout.split(";")[0].strip()
    assert plain.stdout.replace(plain_job, "N") == ours.stdout.replace(our_job, "N")
    stored = sh(["scontrol", "write", "batch_script", our_job, "-"])
    assert stored.returncode == 0, stored.stderr
    user_header = header((twin.workdir / script).read_text())
    assert stored.stdout.splitlines()[1:1 + len(user_header)] == user_header
    plain_records, our_records = scontrol_records(plain_job), scontrol_records(our_job)
    assert len(plain_records) == len(our_records) == 1, (plain_records, our_records)
    diffs = differences(normalise(plain_records[0], str(twin.workdir / script), script),
                        normalise(our_records[0], job_script))
    assert not diffs, f"{script}: scontrol show job differs\n" + "\n".join(diffs)
    print(f"[corpus] {' '.join(args)} {script}: both accepted, identical ({len(plain_records[0])} fields)")


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_corpus_script_is_the_same_job_or_the_same_refusal(twin, script):
    compare(twin, [], script)


def test_the_corpus_is_large_and_every_script_has_its_source():
    assert len(SCRIPTS) >= 30
    sources = (CORPUS / "SOURCES.md").read_text()
    assert all(f"| {name} |" in sources for name in SCRIPTS), "every script has its source"


@pytest.mark.parametrize("args", [
    ["--tasks-per-node=1"], ["--tasks-per-node", "1", "-n", "1"], ["--ta=1"], ["--ntasks-per-n=1"],
    ["--cluster=stardock"], ["--cluster", "stardock"], ["-M", "stardock"], ["--clust=stardock"],
    ["--conte=unconfined_u:unconfined_r:unconfined_t"], ["--ntasks-per-t=1"],
    ["-Hn1"], ["-Hn", "1"], ["-vv"], ["-kn1"], ["--nice"], ["--exclusive"], ["--exclusive=user"],
    ["--get-user-env"], ["--propagate"], ["--contig"], ["--job-nam=odd: name (x)"], ["--frobnicate"],
], ids=lambda args: " ".join(args))
def test_every_spelling_is_the_same_job_or_the_same_refusal(twin, args):
    compare(twin, args, "spell.sh")


# --export reaches the script in the container -------------------------------------------------

NAMES = ["FROM_CMDLINE", "FROM_ENV_EXPORT", "FROM_SCRIPT", "HOSTILE", "NOT_NAMED"]
HOSTILE = "two words 'single' \"double\" $HOME `id` $(id) \\ back\nsecond line"
PRINT = "#!/bin/bash\n{directive}for v in " + " ".join(NAMES) + \
    "; do if [ -n \"${{!v+set}}\" ]; then printf '%s=%s\\0' \"$v\" \"${{!v}}\"; fi; done\n"


@pytest.fixture(scope="module")
def jobdir():
    path = shared_dir("stardock-export-")
    write_spec(path, "name: export-test\n")
    yield path
    remove(path)


def _printed(path: Path) -> Dict[str, str]:
    return dict(item.split("=", 1) for item in path.read_text().split("\0") if "=" in item)


@pytest.mark.parametrize("engine", [pytest.param("podman", id="podman"),
                                    pytest.param("apptainer", id="apptainer", marks=pytest.mark.apptainer)])
@pytest.mark.parametrize("case, cmdline, env, directive, expected", [
    # the command line names two (one from the environment, with a hostile value) and wins over the #SBATCH line
    ("cmdline", ["--export=ALL,FROM_CMDLINE=a b $x,HOSTILE"], {}, "ALL,FROM_SCRIPT=script",
     {"FROM_CMDLINE": "a b $x", "HOSTILE": HOSTILE}),
    # $SBATCH_EXPORT wins over the #SBATCH line
    ("env", [], {"SBATCH_EXPORT": "ALL,FROM_ENV_EXPORT=from env"}, "ALL,FROM_SCRIPT=script",
     {"FROM_ENV_EXPORT": "from env"}),
    # an #SBATCH line alone counts
    ("script", [], {}, "ALL,FROM_SCRIPT=from-script", {"FROM_SCRIPT": "from-script"}),
    # a list without ALL names variables of the environment
    ("list", ["--export=HOSTILE,FROM_CMDLINE=x"], {}, None, {"HOSTILE": HOSTILE, "FROM_CMDLINE": "x"}),
    # nothing named: nothing but Slurm's and stardock's variables
    ("all", [], {}, None, {}),
])
def test_what_export_names_reaches_the_script_in_the_container(jobdir, engine, case, cmdline, env, directive,
                                                                expected):
    script = jobdir / f"export-{case}.sh"
    script.write_text(PRINT.format(directive=f"#SBATCH --export={directive}\n" if directive else ""))
    script.chmod(0o755)
    environ = {**user_env(None), "HOSTILE": HOSTILE, "NOT_NAMED": "login secret", **env}
    with cancelled_at_exit() as jobs:
        plain = subprocess.run(["sbatch", "--parsable", *cmdline, f"--output=plain-{case}-{engine}-%j.out",
                                script.name], cwd=jobdir, env=environ, capture_output=True, text=True, timeout=60)
        assert plain.returncode == 0, plain.stderr
        jobs.append(plain.stdout.strip())
        ours = stardock("sbatch", "--parsable", "--env", "stardock.yaml", "--engine", engine, *cmdline,
                        f"--output=ours-{case}-{engine}-%j.out", script.name, env={**env, "HOSTILE": HOSTILE,
                                                                                    "NOT_NAMED": "login secret"},
                        cwd=jobdir, timeout=1800)
        assert ours.returncode == 0, ours.stderr
        jobs.append(ours.stdout.strip())
        for job in jobs:
            assert wait_job(job)[job]["State"] == "COMPLETED", (job, sh(["sacct", "-j", job]).stdout)
    seen_plain = _printed(jobdir / f"plain-{case}-{engine}-{jobs[0]}.out")
    seen_ours = _printed(jobdir / f"ours-{case}-{engine}-{jobs[1]}.out")
    # plain sbatch: what --export sets, and (with ALL) the whole login environment besides
    assert {k: seen_plain[k] for k in expected} == expected
    # in the container: what --export names, with plain sbatch's values, and nothing else of the login
    assert seen_ours == expected, seen_ours
    assert "NOT_NAMED" not in seen_ours and ("NOT_NAMED" in seen_plain) == (case != "list")


def test_pass_env_and_export_combine(jobdir):
    """--pass-env names a variable of the job's environment without naming it to Slurm; --export
    names one to Slurm; both reach the container."""
    script = jobdir / "combine.sh"
    script.write_text(PRINT.format(directive=""))
    environ = {"HOSTILE": HOSTILE, "NOT_NAMED": "passed on purpose"}
    ours = stardock("sbatch", "--parsable", "--env", "stardock.yaml", "--pass-env", "NOT_NAMED",
                    "--export=ALL,FROM_CMDLINE=1", "--output=combine-%j.out", script.name, env=environ,
                    cwd=jobdir, timeout=1800)
    assert ours.returncode == 0, ours.stderr
    job = ours.stdout.strip()
    assert wait_job(job)[job]["State"] == "COMPLETED"
    assert _printed(jobdir / f"combine-{job}.out") == {"FROM_CMDLINE": "1", "NOT_NAMED": "passed on purpose"}


def test_nothing_is_left_queued(twin):
    """Every held job of the corpus is known for the final scancel (a guard against leaking jobs)."""
    user = os.environ.get("USER", "")
    proc = sh(["squeue", "-h", "-u", user, "-o", "%F %Z"])
    ours = [line.split()[0] for line in proc.stdout.splitlines() if str(twin.workdir) in line]
    assert set(ours) <= set(twin.jobs), ours
