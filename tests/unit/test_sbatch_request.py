"""Parsing `stardock sbatch` like sbatch: options end at the script, directives end at the first
command, stardock's options never collide with sbatch's."""
from __future__ import annotations

from pathlib import Path

import pytest

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.request import OWN, apply_directives, parse_command_line
from stardock_hpc.slurm.options import LONG, take_option
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
    with pytest.raises(UsageError, match="unknown sbatch option --frobnicate"):
        parse_command_line(["--frobnicate", "x"], tmp_path)


def test_stardock_options_collide_with_no_sbatch_option_nor_abbreviation():
    for own in OWN:
        assert not [name for name in LONG if name.startswith(own)], own


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
    with pytest.raises(UsageError, match=rf"{s}:3: unknown sbatch option --bogus"):
        read_script(s)
    s2 = script(tmp_path, "#!/bin/bash\n#STARDOCK --site /etc/x.yaml\n", "two.sh")
    with pytest.raises(UsageError, match=rf"{s2}:2: --site is not allowed in #STARDOCK lines"):
        apply_directives(parse_command_line([str(s2)], tmp_path))


def test_a_script_must_start_with_a_shebang(tmp_path):
    s = script(tmp_path, "echo no shebang\n")
    with pytest.raises(UsageError, match=r":1: this does not look like a batch script"):
        parse_command_line([str(s)], tmp_path)


def test_required_values_and_flags_are_checked():
    with pytest.raises(UsageError, match="--mem needs a value"):
        take_option(["--mem"], 0, "x")
    with pytest.raises(UsageError, match="--hold takes no value"):
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
