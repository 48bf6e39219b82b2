"""Parsing `stardock sbatch` like sbatch: options end at the script, directives end at the first
command, stardock's options never collide with sbatch's."""
from __future__ import annotations

from pathlib import Path

import pytest

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.request import apply_directives, parse_command_line
from stardock_hpc.slurm.options import take_option
from stardock_hpc.slurm.script import read_script


def script(tmp_path: Path, text: str, name: str = "job.sh") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_options_end_at_the_script_and_its_arguments_are_its_own(tmp_path):
    s = script(tmp_path, "#!/bin/bash\necho hi\n")
    req = parse_command_line(["-p", "debug", "--mem=1G", "--env", "env.yaml", "-J", "x y", str(s),
                              "--mem", "-p", "a b"], tmp_path)
    assert [o.tokens for o in req.sbatch] == [("-p", "debug"), ("--mem=1G",), ("-J", "x y")]
    assert req.spec_path == tmp_path / "env.yaml"
    assert req.args == ["--mem", "-p", "a b"]


def test_abbreviated_sbatch_options_are_understood_and_kept_as_written(tmp_path):
    s = script(tmp_path, "#!/bin/sh\ntrue\n")
    req = parse_command_line(["--parsa", "--cpus-per-t=2", "--job", "n", str(s)], tmp_path)
    assert [(o.name, o.tokens) for o in req.sbatch] == [
        ("parsable", ("--parsa",)), ("cpus-per-task", ("--cpus-per-t=2",)), ("job-name", ("--job", "n"))]


def test_ambiguous_and_unknown_options_are_refused(tmp_path):
    with pytest.raises(UsageError, match="ambiguous"):
        parse_command_line(["--n", "2", "x"], tmp_path)
    with pytest.raises(UsageError, match="unrecognized option '--frobnicate'"):
        parse_command_line(["--frobnicate", "x"], tmp_path)


def test_wrap_becomes_a_sh_script(tmp_path):
    req = parse_command_line(["--wrap", "echo $HOME; exit 3", "--image", "abc"], tmp_path)
    assert req.script is not None and req.script.path is None
    assert req.script.text.startswith("#!/bin/sh\n") and req.script.text.endswith("echo $HOME; exit 3\n")
    with pytest.raises(UsageError, match="cannot be given together"):
        parse_command_line(["--wrap", "true", "job.sh"], tmp_path)


def test_directives_are_read_until_the_first_command(tmp_path):
    s = script(tmp_path, "#!/bin/bash\n#SBATCH --job-name='my job' # comment\n# plain comment\n\n"
                         "#STARDOCK --env ../env.yaml --mount archive/m51\n#SBATCH -c 2\necho go\n"
                         "#SBATCH --mem=9G\n")
    parsed = read_script(s)
    assert [(n, [o.tokens for o in opts]) for n, opts in parsed.sbatch_lines] == [
        (2, [("--job-name=my job",)]), (6, [("-c", "2")])]
    req = apply_directives(parse_command_line(["--mount", "scratch", str(s)], tmp_path))
    assert req.spec_path == tmp_path / "../env.yaml"
    assert req.mounts == ["archive/m51", "scratch"]


def test_bad_directives_name_the_line(tmp_path):
    s = script(tmp_path, "#!/bin/bash\n#SBATCH --mem=1G\n#SBATCH --bogus\n")
    with pytest.raises(UsageError, match=rf"{s}:3: unrecognized option '--bogus'"):
        read_script(s)
    s2 = script(tmp_path, "#!/bin/bash\n#STARDOCK --site /etc/x.yaml\n", "two.sh")
    with pytest.raises(UsageError, match=rf"{s2}:2: --site is not allowed in #STARDOCK lines"):
        apply_directives(parse_command_line([str(s2)], tmp_path))


def test_a_script_must_start_with_a_shebang(tmp_path):
    s = script(tmp_path, "echo no shebang\n")
    with pytest.raises(UsageError, match=r":1: this does not look like a batch script"):
        parse_command_line([str(s)], tmp_path)


def test_required_values_and_flags_are_checked():
    with pytest.raises(UsageError, match="option '--mem' requires an argument"):
        take_option(["--mem"], 0, "x")
    with pytest.raises(UsageError, match="option '--hold' doesn't allow an argument"):
        take_option(["--hold=yes"], 0, "x")
    opt, nxt = take_option(["--exclusive", "job.sh"], 0, "x")
    assert (opt.name, opt.value, nxt) == ("exclusive", None, 1)
    opt, nxt = take_option(["-c4"], 0, "x")
    assert (opt.name, opt.value, opt.tokens) == ("cpus-per-task", "4", ("-c4",))


def test_shell_arguments_split_into_stardock_srun_and_command(tmp_path):
    from stardock_hpc.jobs.shell import parse_shell_args
    req, srun, command = parse_shell_args(["-p", "debug", "--env", "x.yaml", "--mount=archive", "--site", "/s.yaml",
                                           "--debug", "-t", "5", "--", "python3", "--env", "y"], tmp_path)
    assert (req.spec_path, req.mounts, req.site, req.debug) == (tmp_path / "x.yaml", ["archive"], "/s.yaml", True)
    assert srun == ["-p", "debug", "-t", "5"] and command == ["python3", "--env", "y"]
    assert parse_shell_args(["--image", "abc"], tmp_path)[2] == ["/bin/bash"]


# --export: what it names reaches the script in the container (issue 11)

def _req(tmp_path, cmdline, directives=""):
    s = script(tmp_path, f"#!/bin/bash\n{directives}echo hi\n", "exp.sh")
    return parse_command_line([*cmdline, str(s)], tmp_path)


def test_the_export_sbatch_uses_follows_its_precedence(tmp_path):
    from stardock_hpc.jobs.request import export_names
    lines = "#SBATCH --export=ALL,FROM_SCRIPT=1\n#SBATCH --export=ALL,LAST_LINE=1\n"
    env = {"SBATCH_EXPORT": "ALL,FROM_ENV=1"}
    # the command line (its last --export) wins over $SBATCH_EXPORT, which wins over the #SBATCH lines
    assert _req(tmp_path, ["--export=A", "--export", "B"], lines).export_value(env) == "B"
    assert _req(tmp_path, [], lines).export_value(env) == "ALL,FROM_ENV=1"
    assert _req(tmp_path, [], lines).export_value({}) == "ALL,LAST_LINE=1"
    assert _req(tmp_path, []).export_value({}) is None
    assert export_names(_req(tmp_path, ["--export=NONE"], lines).export_value(env)) == []


@pytest.mark.parametrize("value, names", [
    (None, []), ("ALL", []), ("all", []), ("NONE", []), ("none", []), ("", []),
    ("ALL,FOO=bar", ["FOO"]), ("FOO", ["FOO"]), ("FOO,BAR=1,BAZ", ["FOO", "BAR", "BAZ"]),
    ("ALL,FOO=a b,BAR=$HOME", ["FOO", "BAR"]), ("ALL,FOO=x=y", ["FOO"]),
    ("ALL,'FOO=a,b',BAR", ["FOO", "BAR"]), ('ALL,FOO="a,b",BAR=1', ["FOO", "BAR"]),
    ("all,FOO=1,FOO=2", ["FOO"]), ("FOO,,BAR", ["FOO", "BAR"]), ("BASH_FUNC_f%%=() { :; }", ["BASH_FUNC_f%%"]),
])
def test_export_names_are_read_as_sbatch_reads_the_list(value, names):
    from stardock_hpc.jobs.request import export_names
    assert export_names(value) == names


def _launch(**kw):
    from stardock_hpc.jobs.launch import Launch
    return Launch(engine="podman", entry="/e", artifact="/e/a", key="k" * 64, name="n", tag="t", mounts=[],
                  outputs="/o", records="/r", mount_root="/data", network=False, script="#!/bin/sh\n",
                  script_name="s", **kw)


def test_what_export_names_reaches_the_container_literally_and_nothing_else_of_the_login():
    from stardock_hpc.jobs.node import container_env
    hostile = "two words 'q' \"dq\" $HOME `id` $(id)\nsecond line\\"
    environ = {"SLURM_JOB_ID": "7", "FOO": hostile, "BAR": "", "LOGIN_ONLY": "secret", "PASSED": "p",
               "HOME": "/home/u", "STARDOCK_OUTPUT": "/evil", "LANG": "C.UTF-8"}
    env = container_env(_launch(export_env=["FOO", "BAR", "MISSING", "HOME", "STARDOCK_OUTPUT"],
                                pass_env=["PASSED"]), environ, "u", "/data/output")
    assert env["FOO"] == hostile and env["BAR"] == "" and env["PASSED"] == "p" and env["SLURM_JOB_ID"] == "7"
    assert "LOGIN_ONLY" not in env and "MISSING" not in env
    assert env["HOME"] == "/tmp" and env["STARDOCK_OUTPUT"] == "/data/output"   # stardock's own win
    assert container_env(_launch(), environ, "u", "/data/output").keys() == {
        "SLURM_JOB_ID", "LANG", "HOME", "USER", "LOGNAME", "STARDOCK_OUTPUT", "STARDOCK_IMAGE",
        "STARDOCK_ENVIRONMENT", "STARDOCK_MOUNT_ROOT"}


def test_a_launch_without_export_env_still_reads():
    import json

    from stardock_hpc.jobs.launch import Launch
    data = json.loads(_launch(export_env=["FOO"]).to_json())
    assert Launch.from_json(json.dumps(data)).export_env == ["FOO"]
    del data["export_env"]  # a job queued before the field existed
    assert Launch.from_json(json.dumps(data)).export_env == []


def test_exported_values_reach_the_container_literally_and_no_engine_command_line():
    """By descriptor to the container's first process (jobs/binds.py), which sets them without a
    shell's expansion; the engines' command lines take no variable at all."""
    import inspect
    import subprocess

    from stardock_hpc.engines.base import Engine
    from stardock_hpc.jobs.binds import Handover, checked_command
    value = "a b 'c' \"d\" $HOME `id`\nnext"
    assert "env" not in inspect.signature(Engine.run_argv).parameters
    handover = Handover([])
    try:
        argv = checked_command([], handover.add_environment({"FOO": value}), ["printenv", "FOO"])
        out = subprocess.run(argv, capture_output=True, text=True, pass_fds=handover.pass_fds,
                             preexec_fn=handover.in_child)
    finally:
        handover.close()
    assert out.stdout == value + "\n" and value not in argv


def test_locked_is_a_stardock_flag_on_the_command_line_and_in_stardock_lines(tmp_path):
    s = script(tmp_path, "#!/bin/sh\n#STARDOCK --env env.yaml --locked\ntrue\n")
    assert apply_directives(parse_command_line([str(s)], tmp_path)).locked is True
    plain = script(tmp_path, "#!/bin/sh\ntrue\n", "plain.sh")
    req = parse_command_line(["--locked", "--env", "env.yaml", str(plain)], tmp_path)
    assert req.locked is True and req.sbatch == []
    assert parse_command_line(["--env", "env.yaml", str(plain)], tmp_path).locked is False
    with pytest.raises(UsageError, match="--locked takes no value"):
        parse_command_line(["--locked=yes", str(plain)], tmp_path)
