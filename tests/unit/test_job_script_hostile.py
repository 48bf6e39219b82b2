"""Issue 9: the job script's host part (before the wrapper's exec) runs outside the container, so it
may hold only the user's comment lines and stardock's own text. The attacks first, as an attacker
would write them, then properties over thousands of hostile scripts and cache-entry names.

The oracle is bash itself: the job script is sourced with a DEBUG trap under extdebug that records
$BASH_COMMAND and fails, so every command is recorded and skipped, none run; exactly one may be
recorded, the wrapper's exec. (The Python path does not exist either: an exec that slipped through
would run nothing.)
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stardock_hpc
from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.jobs.request import parse_command_line
from stardock_hpc.jobs.script import render_job_script
from stardock_hpc.slurm.script import Script, check_text, parse_script, read_script

PYTHON = "/nonexistent/stardock/bin/python"
WRAPPERS = Path("/nonexistent/stardock/wrappers")
EXEC = f"exec {PYTHON} {WRAPPERS}/stardock-node \"$@\" <<'STARDOCK_JOB_SPEC'"
MARKER = "STARDOCK_JOB_SPEC"
NO_HEADER = "# (the batch script has no #SBATCH lines)"
# Characters Python's str.strip() or str.splitlines() treats as blanks or line ends, and bash does not.
LOOKALIKES = ["\xa0", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028", "\u2029", "\u2003",
              "\u3000", "\ufeff"]
# The test's own idea of a line bash skips (written independently of stardock's).
PLAIN = re.compile(r"[ \t]*(#[^\r\0]*)?")
# Arms on the `.` that reads the job script, then records and skips every command in it.
PROBE = ('exec 3>"$2"; set -T; shopt -s extdebug; '
         "trap 'if [[ -z $_probe_armed ]]; then _probe_armed=1; "
         'else printf "%s\\0" "$BASH_COMMAND" >&3; false; fi\' DEBUG; . "$1"')


def spec_for(script: Script, name: str = "m51-photometry", key: str = "f" * 64, engine: str = "podman") -> Launch:
    return Launch(engine=engine, entry="/srv/stardock/cache/entries/k-u1000",
                   artifact="/srv/stardock/cache/entries/k-u1000/image.oci.tar", key=key, name=name,
                   tag="localhost/stardock/m51-photometry:ffffffffffffffff", mounts=[],
                   outputs="/scratch/u/stardock-outputs", records="/home/u/.local/share/stardock/jobs",
                   mount_root="/data", network=False, script=script.text,
                   script_name=script.path.name if script.path else "wrap")


def render(script: Script, **meta: str) -> str:
    return render_job_script(script, spec_for(script, **meta), python=PYTHON, wrappers=WRAPPERS)


def host_commands(job: str, work: Path, lang: str = "C.UTF-8") -> List[str]:
    """Every command bash would run on the host for this job script (none is run)."""
    path, record = work / "job.sbatch", work / "commands"
    path.write_bytes(job.encode("utf-8"))
    proc = subprocess.run(["bash", "-c", PROBE, "probe", str(path), str(record)], cwd=work, timeout=20,
                          stdin=subprocess.DEVNULL, capture_output=True, env={"PATH": "/usr/bin:/bin", "LANG": lang})
    assert proc.returncode == 0, proc.stderr
    return record.read_bytes().decode("utf-8").split("\0")[:-1]


def user_lines(text: str) -> List[str]:
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def assert_only_the_exec_runs(job: str, work: Path, lang: str = "C.UTF-8") -> None:
    json_line = job.split("\n")[-3]
    assert host_commands(job, work, lang) == [f"{EXEC}\n{json_line}\n{MARKER}\n"]


def script_file(tmp_path: Path, text: str, name: str = "job.sh") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# ---- the attacks --------------------------------------------------------------------------------

@pytest.mark.parametrize("lookalike", LOOKALIKES, ids=[f"U+{ord(c):04X}" for c in LOOKALIKES])
def test_a_comment_behind_a_lookalike_blank_runs_in_the_container_not_on_the_host(lookalike, tmp_path):
    pwned = tmp_path / "pwned"
    path = script_file(tmp_path, f"#!/bin/bash\n#SBATCH --job-name=ok\n{lookalike}#;touch {pwned}\necho done\n")
    req = parse_command_line(["--image", "k", str(path)], tmp_path)
    assert req.script is not None and req.script.header == ["#SBATCH --job-name=ok"]
    assert [[o.tokens for o in opts] for _n, opts in req.script.sbatch_lines] == [[("--job-name=ok",)]]
    job = render(req.script)
    assert job.split("\n")[1] == "#SBATCH --job-name=ok" and job.split("\n")[2].startswith("# --- stardock-hpc ")
    for lang in ("C.UTF-8", "C"):
        assert_only_the_exec_runs(job, tmp_path, lang)
    assert not pwned.exists()
    assert json.loads(job.split("\n")[-3])["script"] == path.read_text()  # the line still runs, in the container


@pytest.mark.parametrize("control", ["\x0b", "\x0c", "\r"], ids=["VT", "FF", "CR"])
def test_directives_sbatch_would_read_past_a_line_bash_runs_are_refused(control, tmp_path):
    # sbatch skips any C isspace() byte before '#', so it reads line 4 as a directive; bash runs
    # line 3, so it cannot stay on the host, and the directive after it would be read two ways.
    path = script_file(tmp_path, f"#!/bin/bash\n#SBATCH --job-name=ok\n{control}# note\n#SBATCH --mem=1G\necho\n")
    with pytest.raises(UsageError, match=rf"^{re.escape(str(path))}:3: this line .*#SBATCH line 4"):
        read_script(path)
    # without a directive after it, the line simply ends the header and runs in the container
    path = script_file(tmp_path, f"#!/bin/bash\n#SBATCH --job-name=ok\n{control}# note\necho\n", "ok.sh")
    assert read_script(path).header == ["#SBATCH --job-name=ok"]


def test_a_carriage_return_in_a_directive_is_refused_and_in_a_comment_stays_in_the_container(tmp_path):
    path = script_file(tmp_path, "#!/bin/bash\n#SBATCH --job-name=a\rtouch /tmp/x\n")
    with pytest.raises(UsageError, match=rf"^{re.escape(str(path))}:2: this line contains a carriage return"):
        read_script(path)
    path = script_file(tmp_path, "#!/bin/bash\n#SBATCH -c 1\n# note\rtouch /tmp/x\necho\n", "ok.sh")
    script = read_script(path)
    assert script.header == ["#SBATCH -c 1"]
    assert_only_the_exec_runs(render(script), tmp_path)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x1c", "\x0b"])
def test_a_line_separator_python_knows_and_bash_does_not_keeps_the_line_whole(separator, tmp_path):
    pwned = tmp_path / "pwned"
    path = script_file(tmp_path, f"#!/bin/bash\n#SBATCH --job-name=a{separator}b\n# x{separator}touch {pwned}\n"
                                 f"#SBATCH -c 2\nhostname\n")
    script = read_script(path)
    assert script.header == [f"#SBATCH --job-name=a{separator}b", f"# x{separator}touch {pwned}", "#SBATCH -c 2"]
    assert [n for n, _opts in script.sbatch_lines] == [2, 4]
    job = render(script)
    assert job.split("\n")[1:4] == script.header
    assert_only_the_exec_runs(job, tmp_path)
    assert not pwned.exists()


def test_a_cache_entry_name_key_or_engine_with_a_newline_cannot_reach_the_host(tmp_path):
    pwned = tmp_path / "pwned"
    path = script_file(tmp_path, "#!/bin/bash\n#SBATCH -c 1\necho hi\n")
    script = read_script(path)
    for meta in ({"name": f"m51\ntouch {pwned} #"}, {"key": f"ffff\ntouch {pwned} #" + "f" * 64},
                 {"engine": f"podman\ntouch {pwned} #"}, {"name": f"x\n{MARKER}\ntouch {pwned}"},
                 {"name": f"x\rtouch {pwned}\u2028$(touch {pwned})"}):
        job = render(script, **meta)
        assert_only_the_exec_runs(job, tmp_path)
        assert not pwned.exists()
        assert job.split("\n").count(MARKER) == 1 and job.endswith(f"\n{MARKER}\n")
    shown = render(script, name="m51 photometry\n$(id)")
    assert "# the container environment m51%20photometry%0A%24%28id%29 (image ffffffffffff, podman)" in shown


def test_ordinary_metadata_is_shown_as_before(tmp_path):
    script = read_script(script_file(tmp_path, "#!/bin/bash\n#SBATCH -c 1\necho hi\n"))
    assert "# the container environment m51-photometry (image ffffffffffff, podman), rootless" in render(script)
    long = render(script, name="n" * 300)
    assert f"environment {'n' * 100}... (image" in long


def test_crlf_and_nul_scripts_are_refused_as_sbatch_refuses_them(tmp_path):
    crlf = script_file(tmp_path, "#!/bin/bash\n#SBATCH -c 1\r\necho hi\r\n", "crlf.sh")
    with pytest.raises(UsageError, match=rf"^{re.escape(str(crlf))}:2: the batch script contains DOS line breaks "
                                         r"\(\\r\\n\) instead of expected UNIX line breaks \(\\n\)") as exc:
        parse_command_line(["--image", "k", str(crlf)], tmp_path)
    assert exc.value.hint and "dos2unix" in exc.value.hint
    nul = script_file(tmp_path, "#!/bin/bash\necho a\n\necho \0b\r\n", "nul.sh")  # NUL is named first, as sbatch does
    with pytest.raises(UsageError, match=rf"^{re.escape(str(nul))}:4: the batch script contains a NULL character"):
        parse_command_line(["--image", "k", str(nul)], tmp_path)
    # a lone CR is no DOS line break: sbatch takes the script, and so does stardock
    assert read_script(script_file(tmp_path, "#!/bin/bash\necho a\rb\n", "cr.sh")).header == []


def test_crlf_and_nul_scripts_are_refused_by_the_command_with_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(stardock_hpc.__file__).parents[1])}  # this tree's code
    for name, text, fragment in (("crlf.sh", "#!/bin/bash\r\necho hi\r\n", "crlf.sh:1: the batch script contains DOS"),
                                 ("nul.sh", "#!/bin/bash\necho \0\n", "nul.sh:2: the batch script contains a NULL")):
        path = script_file(tmp_path, text, name)
        proc = subprocess.run([sys.executable, "-m", "stardock_hpc", "sbatch", "--dry-run", "--image", "k", str(path)],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("stardock: error: ") and fragment in proc.stderr


def test_wrap_text_is_checked_as_sbatch_checks_it(tmp_path):
    # sbatch runs none of its script checks on --wrap (its text never holds a NUL: it comes from argv)
    req = parse_command_line(["--wrap", "echo a\r\necho b", "--image", "k"], tmp_path)
    assert req.script is not None and req.script.text.endswith("echo a\r\necho b\n")
    with pytest.raises(UsageError, match="--wrap command contains a NULL character"):
        parse_command_line(["--wrap", "echo \0", "--image", "k"], tmp_path)


@pytest.mark.parametrize("line", ["\xa0#;touch /tmp/x", "touch /tmp/x", "# ok\rtouch", "# ok\0", "# a\ntouch /tmp/x",
                                  "\x0b# x"])
def test_render_refuses_a_header_line_that_is_not_a_plain_comment(line, tmp_path):
    script = Script(tmp_path / "job.sh", "#!/bin/bash\n", ["#SBATCH -c 1", line])
    with pytest.raises(UsageError, match=r"job\.sh:3: .* is not a plain comment to bash"):
        render(script)


# ---- properties ---------------------------------------------------------------------------------

ATOMS = [*LOOKALIKES, " ", "\t", "#", "\r", "\\", "'", '"', "$(", ")", "`", ";", "&", "|", "<<", "EOF", "{", "}",
         "touch pwned", "#SBATCH ", "#SBATCH", "#SLURM ", "#STARDOCK ", "--mem=1G", "-c 2", MARKER, "exec ", "\0", "x"]
WHOLE_LINES = ["#SBATCH --job-name=x", "#SBATCH -c 2 # two", "  #SBATCH --mem=1G", "#STARDOCK --mount archive",
               "", "   ", "\t# c", "echo hi", MARKER, "EOF", "touch pwned", "cat <<EOF", "'", "\\", "#!/bin/sh",
               "\x0b#SBATCH -c 1", "\xa0#;touch pwned"]
lines = st.one_of(st.sampled_from(WHOLE_LINES), st.lists(st.sampled_from(ATOMS), max_size=6).map("".join),
                  st.text(max_size=16))
scripts = st.builds(lambda body, end: "#!/bin/bash\n" + "\n".join(body) + end,
                    st.lists(lines, max_size=8), st.sampled_from(["\n", ""]))
names = st.one_of(st.sampled_from(["m51-photometry", "x\ntouch pwned #", MARKER, f"\n{MARKER}\n", "$(touch pwned)",
                                   "a'b\"c", "\u2028touch pwned", "\r\ntouch pwned #"]), st.text(max_size=30))
keys = st.one_of(st.just("f" * 64), st.text(max_size=70))
engines = st.one_of(st.sampled_from(["podman", "apptainer"]), st.text(max_size=20))


def parsed(text: str, wrap: bool) -> Script:
    """The script as `stardock sbatch` reads it, or UsageError (whose message must name the line)."""
    if wrap:
        req = parse_command_line(["--wrap", text, "--image", "k"], Path("/nonexistent"))
        assert req.script is not None
        return req.script
    check_text(text, "s.sh")
    return parse_script(text, Path("s.sh"))


def assert_structure(job: str, text: str, script: Script, name: str) -> None:
    lines = job.split("\n")
    assert lines[0] == "#!/bin/bash" and lines[-1] == "" and lines[-2] == MARKER
    execs = [i for i, line in enumerate(lines) if line.startswith("exec")]
    assert len(execs) == 1 and lines[execs[0]] == EXEC and execs[0] == len(lines) - 4
    host = lines[1:execs[0]]
    assert all(PLAIN.fullmatch(line) for line in host), host
    # the user's header, verbatim, as bash splits lines; then stardock's own text, printable ASCII only
    header = script.header
    assert host[:len(header) or 1] == (header or [NO_HEADER])
    assert all(line.startswith("# ") and all(" " <= c <= "~" for c in line) for line in host[len(header) or 1:])
    if script.path is not None:
        # ... and the header is all of bash's comment block: it ends at the first line bash would run
        rest = user_lines(text)[1 + len(header):]
        assert not rest or not PLAIN.fullmatch(rest[0])
        assert all(number <= 1 + len(header) for number, _opts in script.sbatch_lines)
    spec = Launch.from_json(lines[-3])
    assert (spec.script, spec.name) == (script.text, name)
    assert lines[-3].isascii() and lines[-3].startswith("{")


@settings(max_examples=3000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(text=scripts, wrap=st.booleans(), name=names, key=keys, engine=engines)
def test_property_the_host_part_is_comments_and_stardocks_own_text(text, wrap, name, key, engine):
    try:
        script = parsed(text, wrap)
    except UsageError as exc:
        assert re.match(r"(s\.sh:\d+: |stardock sbatch: the --wrap command contains a NULL)", exc.message), exc.message
        return
    assert_structure(render(script, name=name, key=key, engine=engine), text, script, name)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bash-probe")


@settings(max_examples=800, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(text=scripts, name=names, key=keys, engine=engines)
def test_property_bash_runs_nothing_on_the_host_but_the_wrapper(work, text, name, key, engine):
    try:
        script = parsed(text, wrap=False)
    except UsageError:
        return
    assert_only_the_exec_runs(render(script, name=name, key=key, engine=engine), work)
    assert not (work / "pwned").exists()
