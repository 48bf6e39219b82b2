"""sbatch options -> job descriptions for the backends that do not run sbatch (slurmrestd, pyslurm):
the one table, its converters, sbatch's precedence, what is refused, and the version table."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stardock_hpc.errors import UsageError
from stardock_hpc.schedulers import job_options as jo
from stardock_hpc.schedulers import rest_versions as rv
from stardock_hpc.schedulers.base import Submission
from stardock_hpc.schedulers.pyslurm_backend import submit_attributes
from stardock_hpc.schedulers.rest import db_exit_code, exit_code, job_description, max_rss
from stardock_hpc.slurm.options import LONG, parse_options
from stardock_hpc.slurm.values import duration

CTX = jo.Ctx("/home/u/work")
SCRIPT = """#!/bin/bash
#SBATCH --job-name=from-script
#SBATCH --partition=batch
#SBATCH --time=00:10:00
#SBATCH --mem=150M
#SBATCH -c 2
#SBATCH --output=out-%x-%A_%a.txt
#SBATCH --array=0-3%2
# --- stardock-hpc (the rendered job script keeps the header, then calls the wrapper) ---
exec /usr/bin/python3 /opt/stardock-node "$@" <<'STARDOCK_JOB_SPEC'
{}
STARDOCK_JOB_SPEC
"""


def submission(cmdline=(), script=SCRIPT, environ=None, args=(), name="job.sh") -> Submission:
    return Submission(script, parse_options(list(cmdline), "cmdline"), list(args), Path("/home/u/work"),
                      dict(environ or {"HOME": "/home/u", "PATH": "/usr/bin"}), name)


def test_every_sbatch_option_has_a_rule_or_is_the_submitting_commands_own():
    assert sorted(set(LONG) - set(jo.RULES) - jo.CLIENT_SIDE) == []
    assert not set(jo.RULES) & jo.CLIENT_SIDE
    for name, rule in jo.RULES.items():
        assert rule.rest or rule.rest_why, name       # refused with a reason, never dropped
        assert rule.pyslurm or rule.py_why, name
    for var, name in jo.ENV_OPTIONS.items():
        assert name in LONG, var


def test_every_rule_converts_a_value_for_each_backend_that_carries_it():
    """A rule's converters are callables (mypy found --gpus-per-node's REST converter was a string)."""
    for name, rule in jo.RULES.items():
        assert callable(rule.conv) and (rule.py_conv is None or callable(rule.py_conv)), name
    assert jo.describe(parse_options(["--gpus-per-node=2"], "t"), CTX, "rest") == {"gpus_per_node": "2"}


@pytest.mark.parametrize("value, expected", [
    ("10", 10), ("0", 0), ("10:30", 11), ("10:00", 10), ("1:00:00", 60), ("1:00:01", 61), ("2-0", 2880),
    ("1-2", 1560), ("1-2:03", 1563), ("1-2:03:04", 1564), ("UNLIMITED", "UNLIMITED"), ("infinite", "UNLIMITED"),
    ("-1", "UNLIMITED"),
])
def test_times_become_whole_minutes_rounded_up_as_slurm_does(value, expected):
    assert jo.minutes(value, CTX) == expected


@pytest.mark.parametrize("value, expected", [
    ("150M", 150), ("150", 150), ("2G", 2048), ("2g", 2048), ("1T", 1 << 20), ("1K", 1), ("1025K", 2), ("0", 0),
])
def test_sizes_become_megabytes_as_slurm_does(value, expected):
    assert jo.megabytes(value, CTX) == expected


@pytest.mark.parametrize("conv, value", [(jo.minutes, "ten"), (jo.minutes, "1:2:3:4"), (jo.megabytes, "1.5G"),
                                         (jo.megabytes, "12MB"), (jo.integer, "two"), (jo.nice, "x")])
def test_bad_values_are_usage_errors(conv, value):
    with pytest.raises(UsageError):
        conv(value, CTX)


def test_directives_then_environment_then_command_line_last_wins():
    options, pbs = jo.gather(SCRIPT, parse_options(["-J", "from-cmdline", "--mem=2G"], "cmdline"),
                             {"SBATCH_TIMELIMIT": "20", "SBATCH_PARTITION": "debug", "HOME": "/h"})
    fields = jo.describe(options, CTX, "rest")
    assert pbs == []
    assert fields == {"name": "from-cmdline", "partition": "debug", "time_limit": 20, "memory_per_node": 2048,
                      "cpus_per_task": 2, "standard_output": "out-%x-%A_%a.txt", "array": "0-3%2"}


def test_the_later_of_options_that_exclude_each_other_wins():
    opts = parse_options(["--no-requeue", "--requeue"], "x")
    assert jo.describe(opts, CTX, "rest") == {"requeue": True}
    opts = parse_options(["--requeue", "--no-requeue"], "x")
    assert jo.describe(opts, CTX, "rest") == {"no_requeue": True}
    assert jo.describe(opts, CTX, "pyslurm") == {"is_requeueable": False}


MEM_SCRIPT = "#!/bin/bash\n#SBATCH --mem=100M\ntrue\n"


def test_memory_options_exclude_each_other_as_sbatch_says():
    """As measured with sbatch 22.05 (slurm_opt.c's _validate_memory_options): two memory options in
    the script and on the command line together are refused, two in the environment too; one from
    the script or command line beats the environment's (even though the environment otherwise wins
    over the script)."""
    with pytest.raises(UsageError, match="mutually exclusive"):
        jo.gather(MEM_SCRIPT, parse_options(["--mem-per-cpu=50M"], "x"), {})
    with pytest.raises(UsageError, match="mutually exclusive"):
        jo.gather("#!/bin/sh\n", parse_options(["--mem=1M", "--mem-per-cpu=50M"], "x"), {})
    with pytest.raises(UsageError, match="SBATCH_MEM_PER_NODE, SBATCH_MEM_PER_CPU"):
        jo.gather("#!/bin/sh\n", [], {"SBATCH_MEM_PER_NODE": "100M", "SBATCH_MEM_PER_CPU": "10M"})
    options, _ = jo.gather(MEM_SCRIPT, [], {"SBATCH_MEM_PER_CPU": "10M"})
    assert jo.describe(options, CTX, "rest") == {"memory_per_node": 100}
    options, _ = jo.gather("#!/bin/sh\n", parse_options(["--mem=5M"], "x"), {"SBATCH_MEM_PER_CPU": "10M"})
    assert jo.describe(options, CTX, "pyslurm") == {"memory_per_node": 5}
    options, _ = jo.gather(MEM_SCRIPT, parse_options(["--mem=200M"], "x"), {})  # the same option again: later wins
    assert jo.describe(options, CTX, "rest") == {"memory_per_node": 200}


@pytest.mark.parametrize("argv, expected", [
    (["--time=5"], {"time_limit": 5}),
    (["--time=1:30"], {"time_limit": 2}),
    (["--time=UNLIMITED"], {"time_limit": "UNLIMITED"}),
    (["--delay-boot=5"], {"delay_boot_time": "00:05:00"}),
    (["--delay-boot=1-0"], {"delay_boot_time": "1-00:00:00"}),
    (["--cpu-freq=high"], {"cpu_frequency": {"max": "high"}}),
    (["--cpu-freq=2000000"], {"cpu_frequency": {"max": "2000000"}}),
    (["--cpu-freq=low-high:Performance"], {"cpu_frequency": {"min": "low", "max": "high", "governor": "Performance"}}),
    (["--cpu-freq=OnDemand"], {"cpu_frequency": {"governor": "OnDemand"}}),
    (["-m", "block:cyclic:cyclic"], {"distribution": "block:cyclic:cyclic"}),
    (["-m", "plane=2"], {"distribution": "plane=2"}),
    (["--hold", "--priority=10"], {"priority": 0}),
    (["--priority=10", "--hold"], {"priority": 0}),
    (["--mem=2G"], {"memory_per_node": 2048}),
])
def test_pyslurm_values_as_libslurm_reads_them(argv, expected):
    assert jo.describe(parse_options(argv, "x"), CTX, "pyslurm") == expected


@pytest.mark.parametrize("argv, why", [
    (["--mem=0"], "size of 0 as 'not set'"),
    (["--mem-per-cpu=0"], "size of 0 as 'not set'"),
    (["-m", "cyclic"], "without all three levels"),
    (["--distribution=block:cyclic"], "without all three levels"),
])
def test_what_pyslurm_cannot_carry_is_refused_with_the_reason(argv, why):
    with pytest.raises(UsageError, match=why):
        jo.describe(parse_options(argv, "x"), CTX, "pyslurm")


WIDE = ["-A", "science", "--acctg-freq=task=1", "--begin=now+1hour", "--chdir", "sub dir", "--comment=c",
        "--cpu-freq=high", "--deadline=now+3hours", "--delay-boot=5", "--dependency=afterok:1", "-m", "cyclic",
        "-e", "e-%j.err", "--exclude=n1", "--exclusive", "--get-user-env", "--gres-flags=enforce-binding", "--hold",
        "--input=/dev/null", "--kill-on-invalid-dep=yes", "--mail-type=END", "--mail-user=a@b.c",
        "--mem-bind=local", "--mincpus=2", "--nice", "--no-kill", "-w", "n2", "-N", "1-2", "-n", "4",
        "--ntasks-per-node=4", "--open-mode=append", "--profile=task", "-q", "normal", "--signal=USR1@60",
        "--spread-job", "--time-min=5", "--tmp=1G", "--use-min-nodes", "--wait-all-nodes=1", "--wckey=w"]


def test_a_wide_job_in_rest_fields():
    fields = jo.describe(parse_options(WIDE, "x"), CTX, "rest")
    assert fields == {
        "account": "science", "account_gather_frequency": "task=1", "begin_time": "now+1hour",
        "current_working_directory": "/home/u/work/sub dir", "comment": "c", "cpu_frequency": "high",
        "deadline": "now+3hours", "delay_boot": "5", "dependency": "afterok:1", "distribution": "cyclic",
        "standard_error": "e-%j.err", "exclude_nodes": "n1", "exclusive": "exclusive", "get_user_environment": None,
        "gres_flags": "enforce-binding", "hold": True, "standard_input": "/dev/null",
        "kill_on_invalid_dependency": True, "mail_type": "END", "mail_user": "a@b.c", "memory_binding": "local",
        "minimum_cpus_per_node": 2, "nice": 100, "no_kill": None, "nodelist": "n2", "nodes": "1-2", "tasks": 4,
        "tasks_per_node": 4, "open_mode": "append", "profile": "task", "qos": "normal", "signal": "USR1@60",
        "spread_job": True, "time_minimum": 5, "temporary_disk_per_node": 1024, "minimum_nodes": True,
        "wait_all_nodes": "1", "wckey": "w"}


def test_the_same_job_in_pyslurm_attributes_where_the_meanings_coincide():
    wide = [o for o in WIDE if o not in ("--mem-bind=local", "--mincpus=2", "--signal=USR1@60")]
    wide[wide.index("-m") + 1] = "cyclic:block:block"  # pyslurm takes all three levels only
    fields = jo.describe(parse_options(wide, "x"), CTX, "pyslurm")
    expected = {
        "account": "science", "working_directory": "/home/u/work/sub dir", "resource_sharing": "no", "priority": 0,
        "kill_on_node_fail": False, "nodes": "1-2", "ntasks": 4, "time_limit_min": 5,
        "temporary_disk_per_node": 1024, "delay_boot_time": "00:05:00", "cpu_frequency": {"max": "high"},
        "dependencies": "afterok:1", "nice": 100, "wait_all_nodes": True,
        "get_user_environment": True, "required_nodes": "n2", "excluded_nodes": "n1", "mail_types": "END",
        "standard_in": "/dev/null", "spreads_over_nodes": True, "use_min_nodes": True}
    assert {k: fields[k] for k in expected} == expected
    with pytest.raises(UsageError, match="--mem-bind=local: JobSubmitDescription has no such attribute"):
        jo.describe(parse_options(["--mem-bind=local"], "x"), CTX, "pyslurm")
    for never_sent in ("--signal=USR1@60", "--switches=1", "--core-spec=1", "--thread-spec=1"):
        with pytest.raises(UsageError, match="never sends it"):
            jo.describe(parse_options([never_sent], "x"), CTX, "pyslurm")


def test_options_a_backend_cannot_carry_are_refused_together_by_name():
    opts = parse_options(["--contiguous", "--clusters=a", "--network=x", "--signal=B:USR1@60", "--hint=compute_bound",
                          "--test-only", "-J", "fine"], "x")
    with pytest.raises(UsageError) as err:
        jo.describe(opts, CTX, "rest")
    text = str(err.value)
    for spelled in ("--contiguous: disabled", "--clusters=a: slurmrestd submits to its own cluster",
                    "--network=x: disabled", "--signal=B:USR1@60: slurmrestd 22.05 rejects the B: flag",
                    "--hint=compute_bound: sbatch turns --hint", "--test-only: it asks whether"):
        assert spelled in text
    assert "-J fine" not in text and "--backend sbatch" in text
    # pyslurm carries the ones slurmrestd disables
    assert jo.describe(parse_options(["--contiguous", "--clusters=a", "--overcommit"], "x"), CTX, "pyslurm") == {
        "requires_contiguous_nodes": True, "clusters": "a", "overcommit": True}


def test_client_side_options_are_honoured_by_stardock_not_sent():
    opts = parse_options(["--parsable", "--quiet", "-v", "--ignore-pbs", "--export=ALL,X=1"], "x")
    assert jo.describe(opts, CTX, "rest") == {}


def test_export_all_with_values_and_refusal_of_login_environments():
    base = {"A": "1", "B": "2"}
    assert jo.export_environment(None, base) == base
    assert jo.export_environment("ALL,B=3,C=x y", base) == {"A": "1", "B": "3", "C": "x y"}
    for value in ("NONE", "A,B", "B=1"):
        with pytest.raises(UsageError, match="only ALL"):
            jo.export_environment(value, base)


def test_the_submit_environment_carries_what_sbatch_adds():
    env = jo.submit_environment({"SLURM_UMASK": "0077", "X": "1"}, "/home/u/work")
    assert env["SLURM_SUBMIT_DIR"] == "/home/u/work" and env["SLURM_UMASK"] == "0077" and env["X"] == "1"
    assert env["SLURM_SUBMIT_HOST"] and env["SLURM_PRIO_PROCESS"].lstrip("-").isdigit()
    assert {f"SLURM_RLIMIT_{n}" for n in jo.RLIMITS} <= set(env)


def test_rest_request_body_fills_in_what_sbatch_would():
    body = job_description(submission(["--hold", "--export=ALL,EXTRA=1"], args=["a b", "$HOME"]))
    job = body["job"]
    assert job["name"] == "from-script" and job["current_working_directory"] == "/home/u/work"
    assert job["environment"]["EXTRA"] == "1" and job["environment"]["SLURM_SUBMIT_DIR"] == "/home/u/work"
    assert "argv" not in job  # it kills slurmrestd 22.05 (rest_versions.ARGV_KILLS_SERVER)
    assert body["script"].splitlines()[:9] == SCRIPT.splitlines()[:9]
    assert "set -- 'a b' '$HOME'" in body["script"]
    unnamed = job_description(submission(script="#!/bin/sh\necho hi\n", name="wrap"))["job"]
    assert unnamed["name"] == "wrap"


def test_the_arguments_line_reaches_the_script_intact(tmp_path):
    hostile = ["a'; echo foo", "two words", "$(id)", "new\nline", ""]
    script = rv.script_with_args("#!/bin/bash\n#SBATCH -J x\n\nprintf '<%s>' \"$@\"\n", hostile)
    assert script.startswith("#!/bin/bash\n#SBATCH -J x\n\nset -- ")
    path = tmp_path / "s.sh"
    path.write_text(script)
    out = subprocess.run(["bash", str(path)], capture_output=True, text=True, check=True).stdout
    assert out == "".join(f"<{a}>" for a in hostile)
    assert rv.script_with_args("#!/bin/sh\ntrue\n", []) == "#!/bin/sh\ntrue\n"


def test_pbs_lines_are_refused_unless_ignored():
    script = "#!/bin/bash\n#PBS -l walltime=1:00:00\n#SBATCH -J x\ntrue\n"
    with pytest.raises(UsageError, match="#PBS -l walltime"):
        job_description(submission(script=script))
    assert job_description(submission(["--ignore-pbs"], script=script))["job"]["name"] == "x"


def test_fields_an_older_api_version_lacks_are_refused():
    with pytest.raises(UsageError, match="cannot carry: --time-min"):
        job_description(submission(["--time-min=5"]), rv.VERSIONS["v0.0.37"].missing)
    assert job_description(submission(["--time-min=5"]), rv.VERSIONS["v0.0.38"].missing)["job"]["time_minimum"] == 5


def test_pyslurm_attributes_for_a_submission():
    attrs = submit_attributes(submission(["--hold", "-p", "debug"]))
    assert {k: attrs[k] for k in ("name", "partitions", "time_limit", "memory_per_node", "cpus_per_task",
                                  "standard_output", "array", "priority", "working_directory")} == {
        "name": "from-script", "partitions": "debug", "time_limit": 10, "memory_per_node": 150,
        "cpus_per_task": 2, "standard_output": "out-%x-%A_%a.txt", "array": "0-3%2", "priority": 0,
        "working_directory": "/home/u/work"}
    assert attrs["environment"]["SLURM_SUBMIT_DIR"] == "/home/u/work"


def test_versions_offered_and_chosen():
    paths = ["/openapi", "/slurm/v0.0.36/job/submit", "/slurm/v0.0.38/job/submit", "/slurm/v0.0.37/job/submit",
             "/slurmdb/v0.0.38/job/{job_id}"]
    assert rv.offered(paths) == ["v0.0.38", "v0.0.37", "v0.0.36"]
    version, why = rv.choose(rv.offered(paths), "auto")
    assert version.name == "v0.0.38" and "newest" in why
    assert rv.choose(["v0.0.37", "v0.0.36"], "auto")[0].name == "v0.0.37"
    assert rv.choose([], "v0.0.36")[0].name == "v0.0.36"
    with pytest.raises(ValueError, match="stardock speaks v0.0.38"):
        rv.choose(["v0.0.41", "v0.0.40", "v0.0.39"], "auto")
    with pytest.raises(ValueError, match="offers only"):
        rv.choose(["v0.0.38"], "v0.0.36")
    with pytest.raises(ValueError, match="does not speak"):
        rv.choose(["v0.0.40"], "v0.0.40")
    assert rv.VERSIONS["v0.0.38"].db_job_path("7_1") == "/slurmdb/v0.0.38/job/7_1"


def test_exit_codes_elapsed_and_maxrss_as_sacct_prints_them():
    assert exit_code(768) == "3:0" and exit_code(0) == "0:0" and exit_code(9) == "0:9" and exit_code(None) is None
    assert db_exit_code({"status": "SIGNALED", "signal": {"signal_id": 9}}, "CANCELLED") == "0:9"
    assert db_exit_code({"status": "SUCCESS", "return_code": 0}, "COMPLETED") == "0:0"
    assert db_exit_code({"status": "SUCCESS", "return_code": 0}, "FAILED") is None  # 22.05 says 0 for any exit
    assert duration(3) == "00:00:03" and duration(90061) == "1-01:01:01" and duration(None) is None
    assert max_rss({"tres": {"requested": {"max": [{"type": "cpu", "count": 9},
                                                   {"type": "mem", "count": 93884416}]}}}) == "91684K"


def test_accounting_records_join_slurmctlds_rows_under_the_same_names():
    from stardock_hpc.schedulers.base import JobState
    from stardock_hpc.schedulers.rest import RestScheduler, _db_key, _key

    assert _key({"job_id": 12, "array_job_id": 10, "array_task_id": 2}) == "10_2"
    assert _key({"job_id": 10, "array_job_id": 10, "array_task_id": None, "array_task_string": "0-2%2"}) == "10_[0-2%2]"
    assert _key({"job_id": 7, "array_job_id": 0, "array_task_id": None}) == "7"
    assert _key({"job_id": 10, "array_job_id": 10, "array_task_id": None, "array_task_string": ""}) is None
    assert _db_key({"job_id": 10, "array": {"job_id": 10, "task_id": None, "task": "0xE"}}) == "10_[1-3]"
    assert _db_key({"job_id": 13, "array": {"job_id": 10, "task_id": 1}}) == "10_1"
    assert _db_key({"job_id": 7, "array": {"job_id": 0, "task_id": None}}) == "7"
    states = {"10_[0-2%2]": JobState("10_[0-2%2]", "PENDING")}
    step = {"step": {"name": "batch"}, "state": "COMPLETED", "exit_code": {"status": "SUCCESS", "return_code": 0},
            "time": {"elapsed": 3}, "tres": {"requested": {"max": [{"type": "mem", "count": 2048000}]}}}
    RestScheduler._merge(states, {"job_id": 10, "array": {"job_id": 10, "task_id": None},
                                  "state": {"current": "PENDING"}, "steps": [step]})
    assert list(states) == ["10_[0-2%2]"] and states["10_[0-2%2]"].max_rss == "2000K"
    assert states["10_[0-2%2]"].steps[0]["JobID"] == "10_[0-2%2].batch"
