"""The spec's shell steps as a build script in which each step's exit status decides.

Steps run in one bash shell with -e, so `cd` and variables carry over; but bash -e does not stop
for a failure inside an `&&`/`||` list (`make && make install` failing in make goes on). So each
step runs through `eval`: eval is a simple command, and -e stops the build when it returns
non-zero, whatever failed inside it, as each RUN of a Dockerfile fails on its own status.

A step is an item of `build:`. Items that do not form a whole command on their own (a loop
written over several items, as "lines of the build script" allowed) are joined with the items
after them until they do: complete() reads just enough of bash's grammar for that, and when in
doubt says "not complete", which only joins more (an unfinished last step is left to bash, which
reports the syntax error).
"""
from __future__ import annotations

import re
import shlex
from typing import List, Sequence

HEADER = (
    "# stardock-hpc: the spec's build steps, in one bash shell (cd and variables carry over);\n"
    "# each step runs through eval, so its own exit status stops the build, as a RUN's does\n"
    "trap 'echo \"stardock: build step failed (exit $?): $stardock_step\" >&2' ERR\n"
    "cd /  # where a Containerfile's RUN starts; so do the runs of both engines\n"
)
OPENERS = {"if": "fi", "case": "esac", "do": "done", "{": "}"}
CLOSERS = {"fi", "esac", "done", "}"}
HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z0-9_.-]+)\2")
WORD_END = set(" \t\n;&|()<>")


def complete(text: str) -> bool:
    """Whether text is one or more whole shell commands: no open quote, here-document,
    compound command, parenthesis, line continuation or trailing operator."""
    stack: List[str] = []
    heredocs: List[tuple] = []
    i, n = 0, len(text)
    at_command = True            # the next word is in command position (keywords count there)
    last_op = ""
    while i < n:
        c = text[i]
        if c == "\n":
            if heredocs:         # here-document bodies follow this line
                i = _skip_heredocs(text, i + 1, heredocs)
                heredocs = []
                if i < 0:
                    return False
            else:
                i += 1
            at_command, last_op = True, ""
            continue
        if c in " \t":
            i += 1
            continue
        if c == "\\":
            if i + 1 >= n:
                return False     # a line continuation at the end
            i += 2
            at_command, last_op = False, ""
            continue
        if c == "#" and (i == 0 or text[i - 1] in " \t\n;&|()"):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "'\"`" or text.startswith("$(", i) or text.startswith("$'", i):
            j = _skip_quoted(text, i)
            if j < 0:
                return False
            i = j
            at_command, last_op = False, ""
            continue
        if text.startswith(("&&", "||", ";;"), i):
            last_op = text[i:i + 2]
            i += 2
            at_command = True
            continue
        if c in ";&|":
            last_op = c
            i += 1
            at_command = True
            continue
        if c == "(":
            stack.append(")")
            i += 1
            at_command, last_op = True, ""
            continue
        if c == ")":
            if stack and stack[-1] == ")":
                stack.pop()
            elif not (stack and stack[-1] == "esac"):  # a case pattern's ) is no closing one
                return False
            i += 1
            at_command, last_op = True, ""
            continue
        if text.startswith("<<", i) and not text.startswith("<<<", i):
            m = HEREDOC.match(text, i)
            if not m:
                return False
            heredocs.append((m.group(3), m.group(1) == "-"))
            i = m.end()
            continue
        j = i
        while j < n and text[j] not in WORD_END and text[j] not in "'\"`$\\":
            j += 1
        if j == i:               # a $ not starting $( or $' : part of a word
            j = i + 1
        word = text[i:j]
        if at_command:
            if word in OPENERS:
                stack.append(OPENERS[word])
            elif word in CLOSERS:
                if not stack or stack[-1] != word:
                    return False
                stack.pop()
        # for/while/until/select open their body with do, which the stack follows
        at_command = word in ("then", "else", "elif", "do", "!", "{", "time", "if", "while", "until")
        last_op = ""
        i = j
    return not stack and not heredocs and last_op in ("", ";", "&", ";;")


def _skip_quoted(text: str, i: int) -> int:
    """The index after the quoted part starting at i, or -1 when it does not end."""
    if text.startswith("$(", i):
        depth, j = 1, i + 2      # every ( inside counts: $( ), $(( )), subshells
        while j < len(text):
            if text[j] in "'\"`":
                j = _skip_quoted(text, j)
                if j < 0:
                    return -1
                continue
            if text[j] == "\\":
                j += 2
                continue
            if text[j] == "(":
                depth += 1
            elif text[j] == ")":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return -1
    if text.startswith("$'", i):
        j = i + 2
        while j < len(text):
            if text[j] == "\\":
                j += 2
            elif text[j] == "'":
                return j + 1
            else:
                j += 1
        return -1
    quote = text[i]
    j = i + 1
    while j < len(text):
        if text[j] == quote:
            return j + 1
        if text[j] == "\\" and quote != "'":
            j += 2
            continue
        if quote == '"' and text.startswith("$(", j):
            j = _skip_quoted(text, j)
            if j < 0:
                return -1
            continue
        j += 1
    return -1


def _skip_heredocs(text: str, i: int, heredocs: List[tuple]) -> int:
    """The index after the bodies of the pending here-documents, or -1 when one does not end."""
    for delim, strip_tabs in heredocs:
        while True:
            if i >= len(text):
                return -1
            j = text.find("\n", i)
            line = text[i:] if j < 0 else text[i:j]
            i = len(text) if j < 0 else j + 1
            if (line.lstrip("\t") if strip_tabs else line) == delim:
                break
    return i


def group_steps(items: Sequence[str]) -> List[str]:
    """The build items joined into steps: each a whole command (see complete())."""
    steps: List[str] = []
    pending: List[str] = []
    for item in items:
        pending.append(item)
        text = "\n".join(pending)
        if complete(text):
            steps.append(text)
            pending = []
    if pending:
        steps.append("\n".join(pending))
    return steps


def summary(step: str, limit: int = 100) -> str:
    """One line naming a step in messages."""
    first = step.strip().split("\n")[0]
    more = "\n" in step.strip()
    text = first if len(first) <= limit else first[:limit] + "..."
    return text + (" ..." if more and not text.endswith("...") else "")


def build_script(items: Sequence[str]) -> str:
    """The script that runs the items: one eval per step."""
    lines = [HEADER.rstrip("\n")]
    for step in group_steps(items):
        lines.append(f"stardock_step={shlex.quote(summary(step))}")
        lines.append(f"eval {shlex.quote(step)}")
    return "\n".join(lines) + "\n"
