"""Dockerfile words for `stardock import`: the quoting, escapes and $VARIABLE expansion that
Docker applies to ENV, LABEL, ARG, COPY, WORKDIR and FROM arguments (and, close enough, the
assignments of an Apptainer %environment)."""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Tuple

from stardock_hpc.importer.shell import ASSIGNMENT, VARIABLE, ShellSyntax


class Unresolved(ValueError):
    """A $VARIABLE the importer cannot give a literal value."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


Lookup = Callable[[str], str]  # returns the value of a variable or raises Unresolved


def docker_words(text: str, lookup: Lookup, split: bool = True, escape: str = "\\") -> List[str]:
    """Dockerfile word processing (ENV, LABEL, COPY, ...): quotes and escapes removed,
    $VAR / ${VAR} / ${VAR:-x} / ${VAR:+x} expanded; with split=False the unquoted spaces are
    kept (the legacy `ENV KEY value with spaces` form)."""
    words: List[str] = []
    cur: List[str] = []
    started = False
    i, quote = 0, None
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                cur.append(c)
            i += 1
            continue
        if c == escape and i + 1 < len(text):
            nxt = text[i + 1]
            if quote == '"' and nxt not in ('"', escape, "$"):
                cur.append(c)
            else:
                cur.append(nxt)
            i, started = i + 2, True
            continue
        if c == "$" and i + 1 < len(text):
            value, i = _expand(text, i, lookup)
            cur.append(value)
            started = True
            continue
        if c in "'\"" and (quote is None or quote == c):
            quote = None if quote else c
            started = True
        elif c in " \t\r\n" and quote is None and split:
            if started or cur:
                words.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(c)
        i += 1
    if quote:
        raise ShellSyntax(f"unclosed {quote}")
    if started or cur:
        words.append("".join(cur))
    return words


def _expand(text: str, i: int, lookup: Lookup) -> Tuple[str, int]:
    m = re.match(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\})", text[i:])
    if not m:
        return "$", i + 1
    name = m.group(1) or m.group(2)
    op, word = m.group(3), m.group(4)
    try:
        value = lookup(name)
    except Unresolved:
        if op != "-":
            raise
        value = ""
    if op == "-" and not value:
        value = word
    elif op == "+":
        value = word if value else ""
    return value, i + m.end()


def shell_env_line(line: str, variables: Dict[str, str], lookup: Lookup) -> Optional[List[Tuple[str, str]]]:
    """`export A=1 B="x y"` / `A=1` as (name, value) pairs; None if the line is anything else."""
    try:
        words = docker_words(line, lookup)
    except ShellSyntax:
        return None
    if words and words[0] == "export":
        words = words[1:]
    pairs: List[Tuple[str, str]] = []
    for word in words:
        m = ASSIGNMENT.fullmatch(word)
        if m:
            pairs.append((m.group(1), m.group(2)))
        elif VARIABLE.fullmatch(word) and word in variables:
            continue  # `export NAME` of a name set before: nothing new
        else:
            return None
    return pairs or None
