"""Build steps: each step's exit status decides (issue 11), state carries between steps, and
items that are not whole commands on their own are joined as bash would read them."""
from __future__ import annotations

import subprocess

import pytest

from stardock_hpc.render.shellsteps import build_script, complete, group_steps

# Scripts written as build: items one line each: whole commands, constructs over several lines,
# quotes, here-documents, comments, arithmetic, case patterns with ')', functions.
SCRIPTS = [
    "apt-get update\napt-get install -y wget",
    "for f in a b c; do\n  echo \"$f\"\ndone\necho after",
    "if [ -d /opt ]; then\n  echo yes\nelif true; then\n  echo maybe\nelse\n  echo no\nfi",
    "case \"$x\" in\n  a|b) echo ab ;;\n  *) echo other ;;\nesac",
    "cat > /tmp/conf <<'EOF'\nif this is not code\nfi\nEOF\necho written",
    "cat <<-END\n\tindented body\n\tEND\necho ok",
    "x=$((1 + 2))\necho $((x * (3 + 4)))",
    "echo 'a # not a comment' # but this is: if done fi\necho \"it's ( here\"",
    "f() {\n  echo in f\n}\nf",
    "(\n  cd /tmp && echo sub\n)",
    "while read -r line; do\n  echo \"$line\"\ndone < /etc/hostname",
    "echo $(echo \"nested $(echo deep)\") `date`",
    "make && \\\n  make install",
    "{ echo a; echo b; } > /tmp/ab",
    "echo done fi esac\necho }",
    "python3 - <<EOF\nprint('x')\nEOF",
    "echo $'tab\\there' && echo \"quote \\\" inside\"",
    "[[ -n \"$HOME\" ]] && echo home\n(( 1 < 2 )) && echo less",
]


def bash_accepts(text: str) -> bool:
    return subprocess.run(["bash", "-n", "-c", text], capture_output=True).returncode == 0


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_step_ends_only_where_bash_reads_a_whole_command(script):
    lines = script.split("\n")
    assert complete(script), "the whole script is whole"
    for k in range(1, len(lines) + 1):
        prefix = "\n".join(lines[:k])
        if complete(prefix):
            assert bash_accepts(prefix), f"judged whole but bash disagrees: {prefix!r}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_items_joined_into_steps_keep_the_script(script):
    steps = group_steps(script.split("\n"))
    assert "\n".join(steps) == script
    assert all(bash_accepts(s) for s in steps)


def run(items, tmp_path):
    path = tmp_path / "build.sh"
    path.write_text(build_script(items))
    return subprocess.run(["bash", "-e", str(path)], capture_output=True, text=True, cwd=tmp_path)


def test_a_failure_inside_an_and_list_fails_the_build(tmp_path):
    out = run(["echo first", "false && echo never", "echo after"], tmp_path)
    assert out.returncode != 0 and "after" not in out.stdout and "never" not in out.stdout
    assert "stardock: build step failed (exit 1): false && echo never" in out.stderr


def test_state_carries_and_constructs_over_items_still_run(tmp_path):
    (tmp_path / "sub").mkdir()
    out = run([f"cd {tmp_path}/sub", "x=5", "for i in 1 2; do", "  echo \"$i $x $(basename $PWD)\"", "done",
               "cat <<EOF", "heredoc $x", "EOF"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "1 5 sub\n2 5 sub\nheredoc 5\n"


def test_a_failing_command_in_a_multi_line_step_is_named(tmp_path):
    out = run(["if true; then\n  ls /nonexistent-dir\nfi", "echo after"], tmp_path)
    assert out.returncode != 0 and "after" not in out.stdout
    assert "stardock: build step failed (exit 2): if true; then ..." in out.stderr


def test_every_run_starts_at_the_root_as_a_containerfile_run_does(tmp_path):
    out = run(["pwd"], tmp_path)
    assert out.returncode == 0 and out.stdout == "/\n"


def test_hostile_step_text_stays_literal(tmp_path):
    out = run(["printf '%s\\n' \"it's\" '$(id)' '`x`' 'a\"b'"], tmp_path)
    assert out.returncode == 0 and out.stdout == "it's\n$(id)\n`x`\na\"b\n"
