"""A Dockerfile's instructions as BuildKit reads them: continuation lines joined (comment and
empty lines inside them dropped), the escape directive, here-documents after RUN, COPY and ADD."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Tuple

from stardock_hpc.importer.shell import one_line

_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_.-]*)\2")


@dataclass
class Instruction:
    keyword: str
    args: str                    # continuation lines joined, as Docker reads it
    lines: List[str]             # as written, without the comment lines Docker skips
    line: int
    heredocs: List[Tuple[str, List[str]]] = field(default_factory=list)

    @property
    def shown(self) -> str:
        return one_line(f"{self.keyword} {self.args}")


def lex(text: str) -> List[Instruction]:
    raw = text.splitlines()
    escape = "\\"
    for line in raw:  # parser directives come first: `# escape=`` ` (Windows style)
        directive = re.fullmatch(r"\s*#\s*([A-Za-z]+)\s*=\s*(\S+)\s*", line)
        if not directive:
            break
        if directive.group(1).lower() == "escape" and directive.group(2) in ("\\", "`"):
            escape = directive.group(2)
    out: List[Instruction] = []
    i = 0
    while i < len(raw):
        if not raw[i].strip() or raw[i].lstrip().startswith("#"):
            i += 1
            continue
        start, lines, joined = i, [raw[i]], ""
        current = raw[i]
        while True:
            body = current.rstrip()
            i += 1
            if not body.endswith(escape):
                joined += body
                break
            joined += body[:-1]
            while i < len(raw) and (not raw[i].strip() or raw[i].lstrip().startswith("#")):
                i += 1  # Docker drops comment and empty lines inside a continued instruction
            if i >= len(raw):
                break
            current = raw[i]
            lines.append(current)
            # the amount of space at a joint only matters inside quotes: one space reads better
            if current[:1].isspace():
                current = ("" if joined[-1:].isspace() else " ") + current.lstrip()
        keyword, args = (re.split(r"\s+", joined.strip(), maxsplit=1) + [""])[:2]  # a tab may follow
        inst = Instruction(keyword.upper(), args.strip(), lines, start + 1)
        if inst.keyword in ("RUN", "COPY", "ADD"):
            for strip, _quote, delim in _HEREDOC.findall(args):
                body_lines = []
                while i < len(raw) and (raw[i].lstrip("\t") if strip else raw[i]) != delim:
                    body_lines.append(raw[i])
                    i += 1
                i += 1
                inst.heredocs.append((delim, body_lines))
        out.append(inst)
    return out
