"""`stardock sbatch` is sbatch, as far as Slurm can tell.

The same batch scripts are submitted held, once with plain `sbatch` and once with
`stardock sbatch --image KEY`, from the same directory with the same environment, and Slurm's
record of the two jobs (`scontrol show job -o`) must be the same field for field, apart from
what cannot be the same: the job id, times taken at submission and the job script's path.
A `sbatch` shim on PATH records the arguments each real sbatch got, so options Slurm does not
show (--signal, --open-mode, --propagate, ...) are checked to arrive unchanged too (--export's
value arrives in $SBATCH_EXPORT instead, off the command line everybody reads), and
`scontrol write batch_script` shows the #SBATCH header stardock handed over.

Options the testbed refuses, so they cannot be compared here (plain sbatch rejects them):
--licenses (no licenses configured), --constraint/--prefer/--batch (no node features),
--gres/--gpus*/--cpus-per-gpu/--mem-per-gpu/--ntasks-per-gpu (no GRES), --reservation (none),
--core-spec/--thread-spec (AllowSpecResourcesUsage=No), --reboot (admins only), --uid/--gid
(root only), --bbf (no burst buffer plugin), --acctg-freq=task=N with N above the configured
JobAcctGatherFrequency=task=1 ("Invalid accounting frequency requested"). --priority is taken
but shows nothing on a held job (Priority=0); --test-only submits nothing.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
from clitools import built_image, cancelled_at_exit, stardock, user_env

from stardock_hpc.slurm.options import parse_options

from slurmtools import replace_job_ids, sh, user

pytestmark = [pytest.mark.slurm, pytest.mark.podman]

FIXTURES = Path(__file__).parent / "fidelity"
SPEC = 'name: fidelity\nbuild: ["echo fidelity > /stamp"]\n'

# Values taken from the clock at submission: the two jobs are submitted seconds apart, so these
# may differ by that much (--begin=now+1hour and --deadline=now+3hours included), no more.
TIME_FIELDS = {"SubmitTime", "EligibleTime", "StartTime", "EndTime", "LastSchedEval", "Deadline",
               "SuspendTime", "PreemptEligibleTime", "ResizeTime"}
TIME_SLACK = 30
# Written by the scheduler's own passes, not by the submission: of two identical held jobs with
# --begin, one was seen with AccrueTime=<begin time> and the other still Unknown.
SCHEDULER_STATE = {"AccrueTime"}
# Fields that embed the job's own id (%j, %A in output patterns): compared with the id replaced.
ID_FIELDS = ("JobId", "ArrayJobId", "StdOut", "StdErr", "StdIn")
# `scontrol show job -o` separates Key=Value pairs by spaces, and values may hold spaces too
# (paths, `CPU_max_freq=High `): a field starts only where a word is followed by '='.
FIELD_START = re.compile(r" (?=[A-Za-z_/:]+=)")


@dataclass
class Case:
    name: str
    script: Optional[str]                        # a file in fidelity/, or None with --wrap
    cmdline: List[str] = field(default_factory=list)
    args: List[str] = field(default_factory=list)
    split_task: Optional[str] = None             # an array task to split off into its own record


# Between them, #SBATCH lines (36) and command lines (41) use 68 distinct sbatch options;
# test_the_cases_cover_at_least_25_options_on_both_paths counts them.
CASES = [
    Case("resources", "resources.sh",
         ["--comment=fidelity_resources", "--nice=10", "--no-requeue", "--mail-type=END,FAIL",
          "--mail-user=stardock@example.org"]),
    Case("array", "array.sh",
         ["-J", "fid-array", "--acctg-freq=task=1", "--cpu-freq=high", "--gres-flags=enforce-binding",
          "--spread-job", "--use-min-nodes", "--overcommit", "--extra-node-info=1:2:1"],
         split_task="1"),
    Case("schedule", "schedule.sh",
         ["--dependency=afterok:{held}", "--chdir", "{workdir}/dir with space", "--export=ALL,FIDELITY=1",
          "-p", "debug", "-t", "30", "-o", "sched-%j-%x.out", "--nodelist={node}", "--get-user-env",
          "--input=/dev/null", "--wait-all-nodes=1", "--cluster-constraint=fidelity"],
         ["alpha", "two words", "$HOME"]),
    Case("plain", "plain.sh",
         ["--export=NONE", "--wckey=fidelity", "-n", "1", "-c", "2", "--mem=64M", "--hint=nomultithread",
          "--mem-bind=local", "--profile=task", "-e", "plain-%u-%j.err", "--exclude={node}",
          "--mcs-label=fidelity", "--network=fidelity", "--export-file=/dev/null", "--ntasks-per-socket=1"]),
    Case("wrap", None, ["--wrap", "echo wrapped; hostname", "--time=1", "--ntasks=1", "--requeue"]),
]


def parse_records(text: str) -> List[Dict[str, str]]:
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        record = {}
        for token in FIELD_START.split(line.rstrip()):
            key, _, value = token.partition("=")
            record[key] = value
        records.append(record)
    return sorted(records, key=lambda r: r.get("ArrayTaskId", ""))


def scontrol_records(job: str) -> List[Dict[str, str]]:
    proc = sh(["scontrol", "show", "job", "-o", job])
    assert proc.returncode == 0, proc.stderr
    return parse_records(proc.stdout)


def normalise(record: Dict[str, str], *scripts: str) -> Dict[str, str]:
    """The record with its own ids replaced, and the job script's path in Command (sbatch shows
    it absolute, or as given when --chdir is used) replaced by <SCRIPT>."""
    out = replace_job_ids(record, ID_FIELDS)
    for script in scripts:
        command = out.get("Command", "")
        if command == script or command.startswith(script + " "):
            out["Command"] = "<SCRIPT>" + command[len(script):]
            break
    return out


def _clock(value: str) -> Optional[datetime]:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def differences(plain: Dict[str, str], ours: Dict[str, str], ignore: Sequence[str] = ()) -> List[str]:
    diffs = []
    for key in sorted(set(plain) | set(ours)):
        a, b = plain.get(key), ours.get(key)
        if a == b or key in ignore or key in SCHEDULER_STATE:
            continue
        if key in TIME_FIELDS and a and b:
            ta, tb = _clock(a), _clock(b)
            if ta and tb and abs((ta - tb).total_seconds()) <= TIME_SLACK:
                continue
        diffs.append(f"  {key}: sbatch={a!r} stardock={b!r}")
    return diffs


def header(script_text: str) -> List[str]:
    """The comment block after the shebang, up to the first command (where sbatch stops reading)."""
    lines = []
    for line in script_text.splitlines()[1:]:
        if line.strip() and not line.strip().startswith("#"):
            break
        lines.append(line)
    return lines


@dataclass
class Submitted:
    job: str
    stdout: str
    stderr: str
    argv: List[str]          # what the real sbatch was given (recorded by the shim)
    export: Optional[str]    # $SBATCH_EXPORT as it saw it (None: unset)


class Twin:
    """Submits with plain sbatch and with stardock sbatch, from one directory, with one environment."""

    def __init__(self, workdir: Path, key: str, jobs: List[str]):
        self.workdir = workdir
        self.key = key
        self.jobs = jobs
        self.log = workdir / "argv"
        self.log.mkdir()
        shim_dir = workdir / "bin"
        shim_dir.mkdir()
        real = shutil.which("sbatch")
        assert real, "sbatch is not on PATH"
        shim = shim_dir / "sbatch"
        # One file per call: the arguments, NUL-terminated, and $SBATCH_EXPORT if set; then the
        # real sbatch, unchanged.
        log = shlex.quote(str(self.log))
        shim.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > {log}/$$.argv\n"
                        f"if [ \"${{SBATCH_EXPORT+set}}\" ]; then\n"
                        f"  printf '%s' \"$SBATCH_EXPORT\" > {log}/$$.export\nfi\n"
                        f"exec {shlex.quote(real)} \"$@\"\n")
        shim.chmod(0o755)
        base = user_env(None)
        self.env = {**base, "PATH": f"{shim_dir}:{base['PATH']}"}

    def _argv(self) -> Tuple[List[str], Optional[str]]:
        calls = list(self.log.glob("*.argv"))
        assert len(calls) == 1, f"expected one sbatch call, saw {len(calls)}"
        argv = calls[0].read_text().split("\0")[:-1]
        calls[0].unlink()
        export_file = calls[0].with_suffix(".export")
        export = export_file.read_text() if export_file.exists() else None
        export_file.unlink(missing_ok=True)
        return argv, export

    def _done(self, proc: subprocess.CompletedProcess, who: str, quiet: bool) -> Submitted:
        argv, export = self._argv() if any(self.log.iterdir()) else ([], None)
        match = re.search(r"([0-9]+)", proc.stdout)
        if match:
            self.jobs.append(match.group(1))
        assert proc.returncode == 0, f"{who} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        assert match or quiet, f"{who} printed no job id: {proc.stdout!r}"
        return Submitted(match.group(1) if match else "", proc.stdout, proc.stderr, argv, export)

    def plain(self, *args: str, env: Optional[Dict[str, str]] = None, quiet: bool = False) -> Submitted:
        proc = subprocess.run(["sbatch", *args], cwd=self.workdir, env={**self.env, **(env or {})},
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        return self._done(proc, "sbatch", quiet)

    def stardock(self, *args: str, env: Optional[Dict[str, str]] = None, quiet: bool = False) -> Submitted:
        proc = stardock("sbatch", "--image", self.key, *args, env={**self.env, **(env or {})},
                        cwd=self.workdir, timeout=120)
        return self._done(proc, "stardock sbatch", quiet)


@pytest.fixture(scope="module")
def image_key():
    with built_image(SPEC, "stardock-fidelity-") as key:
        yield key


@pytest.fixture(scope="module")
def jobs():
    with cancelled_at_exit() as ids:
        yield ids


@pytest.fixture(scope="module")
def twin(tmp_path_factory, image_key, jobs):
    workdir = tmp_path_factory.mktemp("fidelity")
    for script in FIXTURES.glob("*.sh"):
        shutil.copy(script, workdir / script.name)
    (workdir / "dir with space").mkdir()
    return Twin(workdir, image_key, jobs)


@pytest.fixture(scope="module")
def held(twin):
    """A job that never runs, for the others to depend on (cancelled with the rest)."""
    return twin.plain("--hold", "--parsable", "--job-name=fidelity-anchor", "--wrap", "true").job


@pytest.fixture(scope="module")
def node():
    proc = sh(["sinfo", "-h", "-N", "-o", "%N"])
    assert proc.returncode == 0 and proc.stdout.split(), proc.stderr
    return proc.stdout.split()[0]


def _expand(case: Case, **values: str) -> List[str]:
    return [token.format(**values) for token in case.cmdline]


def _without_export(argv: List[str]) -> Tuple[List[str], Optional[str]]:
    """argv without its --export options (before the script), and the last one's value."""
    out: List[str] = []
    value = None
    tokens = iter(argv)
    for token in tokens:
        if token.startswith("--export="):
            value = token.split("=", 1)[1]
        elif token == "--export":
            value = next(tokens)
        else:
            out.append(token)
    return out, value


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_stardock_sbatch_gives_slurm_the_same_job_as_sbatch(case, twin, held, node):
    cmdline = _expand(case, held=held, workdir=str(twin.workdir), node=node)
    script = [case.script] if case.script else []
    plain = twin.plain("--hold", "--parsable", *cmdline, *script, *case.args)
    ours = twin.stardock("--hold", "--parsable", *cmdline, *script, *case.args)

    # The real sbatch got the user's options and arguments unchanged (stardock adds only its own
    # --parsable in front, to read the job id), --export's value in $SBATCH_EXPORT: what Slurm
    # does not show is covered here.
    assert plain.argv == ["--hold", "--parsable", *cmdline, *script, *case.args] and plain.export is None
    assert ours.argv[0] == "--parsable"
    options, export = _without_export(cmdline)
    assert ours.export == export
    if case.script:
        job_script = ours.argv[-1 - len(case.args)]
        assert ours.argv[1:] == ["--hold", "--parsable", *options, job_script, *case.args]
    else:
        wrap_at = options.index("--wrap")
        without_wrap = options[:wrap_at] + options[wrap_at + 2:]
        job_script = ours.argv[-1]
        assert ours.argv[1:] == ["--hold", "--parsable", *without_wrap, job_script]

    # ... and the #SBATCH header reached sbatch verbatim, in the job script Slurm stored.
    stored = sh(["scontrol", "write", "batch_script", ours.job, "-"])
    assert stored.returncode == 0, stored.stderr
    if case.script:
        user_header = header((twin.workdir / case.script).read_text())
        assert stored.stdout.splitlines()[1:1 + len(user_header)] == user_header

    # Slurm's record of the two jobs: field for field the same.
    if case.split_task:
        for job in (plain.job, ours.job):
            out = sh(["scontrol", "update", f"JobId={job}_{case.split_task}", "Comment=split_off"])
            assert out.returncode == 0, out.stderr
    plain_records, our_records = scontrol_records(plain.job), scontrol_records(ours.job)
    assert len(plain_records) == len(our_records), (plain_records, our_records)
    if case.split_task:
        assert len(plain_records) == 2, "the array task was not split off into its own record"
    # sbatch --wrap runs no script file (Command=(null)); stardock wraps the command in one.
    ignore = ["Command"] if case.script is None else []
    plain_script = [str(twin.workdir / case.script), case.script] if case.script else []
    report = []
    for a, b in zip(plain_records, our_records):
        diffs = differences(normalise(a, *plain_script), normalise(b, job_script), ignore)
        if diffs:
            report.append(f"job {a['JobId']} (sbatch) vs {b['JobId']} (stardock sbatch):\n" + "\n".join(diffs))
    assert not report, f"{case.name}: scontrol show job differs\n" + "\n".join(report)


def test_the_cases_cover_at_least_25_options_on_both_paths():
    in_scripts, on_cmdline = set(), set()
    for case in CASES:
        opts = parse_options([t.format(held="1", workdir="/tmp", node="n") for t in case.cmdline], case.name)
        on_cmdline |= {o.name for o in opts} | {"hold", "parsable"}
        if case.script:
            for line in header((FIXTURES / case.script).read_text()):
                if line.startswith("#SBATCH "):
                    in_scripts |= {o.name for o in parse_options(shlex.split(line[len("#SBATCH "):]), case.script)}
    assert len(in_scripts | on_cmdline) >= 25, sorted(in_scripts | on_cmdline)
    assert len(in_scripts) >= 15 and len(on_cmdline) >= 15, (sorted(in_scripts), sorted(on_cmdline))
    required = {"job-name", "partition", "time", "time-min", "mem", "mem-per-cpu", "cpus-per-task", "ntasks",
                "nodes", "ntasks-per-node", "output", "error", "array", "account", "qos", "comment", "begin",
                "dependency", "kill-on-invalid-dep", "mail-type", "mail-user", "nice", "open-mode", "requeue",
                "no-requeue", "signal", "tmp", "exclusive", "oversubscribe", "chdir", "export", "distribution",
                "deadline", "delay-boot", "acctg-freq", "propagate", "no-kill", "hold", "parsable"}
    assert required <= in_scripts | on_cmdline, sorted(required - in_scripts - on_cmdline)


def test_command_line_wins_over_environment_over_directives(twin):
    # precedence.sh says --job-name=from-script, --time=10, --mem twice, --partition=batch after its
    # first command; $SBATCH_TIMELIMIT beats the directive, the command line beats both.
    env = {"SBATCH_TIMELIMIT": "20"}
    plain = twin.plain("--hold", "--parsable", "--job-name=from-cmdline", "precedence.sh", env=env)
    ours = twin.stardock("--hold", "--parsable", "--job-name=from-cmdline", "precedence.sh", env=env)
    job_script = ours.argv[-1]
    [a], [b] = scontrol_records(plain.job), scontrol_records(ours.job)
    expected = {"JobName": "from-cmdline", "TimeLimit": "00:20:00", "Comment": "from_script ",
                "MinMemoryNode": "150M", "Nice": "5", "Partition": "debug"}
    for record in (a, b):
        assert {k: record.get(k) for k in expected} == expected
    diffs = differences(normalise(a, str(twin.workdir / "precedence.sh")), normalise(b, job_script))
    assert not diffs, "scontrol show job differs:\n" + "\n".join(diffs)


@pytest.mark.parametrize("extra, pattern", [
    ([], r"[0-9]+\n"),
    (["--clusters=stardock"], r"[0-9]+;stardock\n"),
], ids=["plain", "cluster"])
def test_parsable_prints_what_sbatch_prints(twin, extra, pattern):
    plain = twin.plain("--hold", "--parsable", *extra, "plain.sh")
    ours = twin.stardock("--hold", "--parsable", *extra, "plain.sh")
    assert re.fullmatch(pattern, plain.stdout), plain.stdout
    assert re.fullmatch(pattern, ours.stdout), ours.stdout
    assert ours.stdout.replace(ours.job, "N") == plain.stdout.replace(plain.job, "N")
    assert (plain.stderr, ours.stderr) == ("", "")


@pytest.mark.parametrize("extra, pattern", [
    ([], r"Submitted batch job [0-9]+\n"),
    (["--clusters=stardock"], r"Submitted batch job [0-9]+ on cluster stardock\n"),
], ids=["plain", "cluster"])
def test_without_parsable_prints_submitted_batch_job(twin, extra, pattern):
    plain = twin.plain("--hold", *extra, "plain.sh")
    ours = twin.stardock("--hold", *extra, "plain.sh")
    assert re.fullmatch(pattern, plain.stdout), plain.stdout
    assert re.fullmatch(pattern, ours.stdout), ours.stdout
    assert ours.stdout.replace(ours.job, "N") == plain.stdout.replace(plain.job, "N")


def test_quiet_prints_what_sbatch_prints(twin):
    # --quiet silences sbatch, --parsable included: the jobs are found by their (unique) name.
    name = f"fidelity-quiet-{uuid.uuid4().hex[:8]}"
    plain = twin.plain("--hold", "--parsable", "--quiet", f"--job-name={name}", "plain.sh", quiet=True)
    ours = twin.stardock("--hold", "--parsable", "--quiet", f"--job-name={name}", "plain.sh", quiet=True)
    found = sh(["squeue", "-h", "-u", user(), "-n", name, "-o", "%i"])
    ids = sorted(found.stdout.split(), key=int)
    twin.jobs.extend(ids)
    assert (plain.stdout, plain.stderr, ours.stdout, ours.stderr) == ("", "", "", "")
    assert len(ids) == 2, f"expected the two jobs named {name}, squeue shows {ids}"
    [a], [b] = scontrol_records(ids[0]), scontrol_records(ids[1])
    diffs = differences(normalise(a, str(twin.workdir / "plain.sh")), normalise(b, ours.argv[-1]))
    assert not diffs, "scontrol show job differs:\n" + "\n".join(diffs)


def test_every_job_submitted_here_is_known_for_cleanup(twin):
    """Every job id seen was recorded for the final scancel (a guard against leaking held jobs)."""
    mine = set(twin.jobs)
    proc = sh(["squeue", "-h", "-u", user(), "-o", "%F %j %Z"])
    assert proc.returncode == 0, proc.stderr
    ours = [line.split()[0] for line in proc.stdout.splitlines() if str(twin.workdir) in line]
    assert set(ours) <= mine, f"jobs submitted from {twin.workdir} that the test does not know: {ours}"
