"""No test waits for something to happen by sleeping a fixed time (issue 24): a test polls for
the state it waits for (a sleep inside a polling loop), or waits for an event (a line, a file, a
job's state). Checked on the tests' own code and on the shell they write into job scripts:

- Python: every call of time.sleep is inside a `while` or `for` loop;
- shell in string literals: every `sleep N` below 30 s is inside a `do ... done` loop (longer sleeps
  are jobs that run until they are stopped, not waits), or on a line that says why it is "not a wait"
  (a build step that must take a while, say).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, List

TESTS = Path(__file__).resolve().parents[1]
SHELL_SLEEP = re.compile(r"\bsleep\s+(\d+(?:\.\d+)?)(?=[\s;&|)'\"]|$)")
RUNS_UNTIL_STOPPED = 30.0


def modules() -> Iterator[Path]:
    for path in sorted(TESTS.rglob("*.py")):
        if "corpus" not in path.parts and "fixtures" not in path.parts and path != Path(__file__).resolve():
            yield path


def _is_sleep(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Attribute) and f.attr == "sleep" and isinstance(f.value, ast.Name)
            and f.value.id == "time") or (isinstance(f, ast.Name) and f.id == "sleep")


def python_sleeps_outside_loops(tree: ast.AST) -> List[int]:
    found: List[int] = []

    def visit(node: ast.AST, in_loop: bool) -> None:
        if isinstance(node, ast.Call) and _is_sleep(node) and not in_loop:
            found.append(node.lineno)
        loop = isinstance(node, (ast.While, ast.For, ast.AsyncFor))
        for child in ast.iter_child_nodes(node):
            # a function defined inside a loop is not in the loop
            visit(child, (in_loop or loop) and not isinstance(child, (ast.FunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def shell_sleeps_outside_loops(text: str) -> List[str]:
    found = []
    for m in SHELL_SLEEP.finditer(text):
        if float(m.group(1)) >= RUNS_UNTIL_STOPPED:
            continue
        before = text[:m.start()]
        if len(re.findall(r"\bdo\b", before)) > len(re.findall(r"\bdone\b", before)):
            continue
        found.append(m.group(0))
    return found


def test_the_checks_find_what_they_look_for():
    tree = ast.parse("import time\ntime.sleep(2)\nwhile x:\n    time.sleep(0.1)\n")
    assert python_sleeps_outside_loops(tree) == [2]
    assert shell_sleeps_outside_loops("echo a; sleep 2; echo b") == ["sleep 2"]
    assert shell_sleeps_outside_loops("until [ -e f ]; do sleep 0.1; done; sleep 600") == []


def test_no_test_sleeps_a_fixed_time_to_wait():
    problems = []
    for path in modules():
        text = path.read_text()
        tree = ast.parse(text, str(path))
        lines = text.splitlines()
        rel = path.relative_to(TESTS.parent)
        problems += [f"{rel}:{line}: time.sleep outside a polling loop" for line in python_sleeps_outside_loops(tree)]
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    "not a wait" not in lines[node.lineno - 1]:
                problems += [f"{rel}:{node.lineno}: {s!r} in a script, outside a loop"
                             for s in shell_sleeps_outside_loops(node.value)]
    assert problems == [], "\n".join(problems)
