"""Reading shell text for `stardock import`: a small scanner that finds the top-level commands of
a script (quotes, $(...), compound commands and here-documents respected) and splits a flat
command list at `&&` / `;`.

It is not a shell: it only has to tell where commands begin and end, so that package installs
can be lifted out and everything else kept exactly as written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Set, Tuple


class ShellSyntax(ValueError):
    """The text is not a complete shell command (an unclosed quote, say)."""


@dataclass(frozen=True)
class Tok:
    kind: str   # "word" or "op"
    text: str
    start: int
    end: int


_OPS = ("&&", "||", ";;", ";", "|", "&", "(", ")")
_OPENERS = {"if", "case", "for", "while", "until", "select", "{"}
_CLOSERS = {"fi", "esac", "done", "}"}
_RESTART = {"then", "do", "else", "elif", "!", "time", "if", "while", "until", "{"}
# a line that is none of these, with no ||, &, ( ) or here-document, is a flat command list
_COMPOUND = _OPENERS | _CLOSERS | {"then", "do", "else", "elif", "function", "!"}
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ASSIGNMENT = re.compile(rf"({VARIABLE.pattern})=(.*)", re.S)   # NAME=value, as a word


def _skip_quoted(text: str, i: int) -> int:
    """i is at a quote, backtick, "$(" or "${"; return the index after its end."""
    c = text[i]
    if c == "'":
        j = text.find("'", i + 1)
        if j < 0:
            raise ShellSyntax("unclosed single quote")
        return j + 1
    if c in '"`':
        i += 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
            elif text[i] == c:
                return i + 1
            elif c == '"' and (text[i] == "`" or text.startswith(("$(", "${"), i)):
                i = _skip_quoted(text, i)
            else:
                i += 1
        raise ShellSyntax(f"unclosed {c}")
    close = ")" if text[i + 1] == "(" else "}"
    depth, i = 0, i + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "'\"`" or (ch == "$" and text[i + 1:i + 2] in ("(", "{")):
            i = _skip_quoted(text, i)
            continue
        if ch in "({":
            depth += 1
        elif ch == close or (ch in ")}" and depth > 1):
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ShellSyntax(f"unclosed $({close}")


def _word_end(text: str, i: int) -> int:
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
        elif c in "'\"`" or (c == "$" and text[i + 1:i + 2] in ("(", "{")):
            i = _skip_quoted(text, i)
        elif text.startswith("<<<", i):
            i += 3
        elif text.startswith("<<", i):
            break  # a here-document starts (cat<<EOF)
        elif c in "<>":
            i += 2 if text[i + 1:i + 2] in ("&", ">", "|") else 1
        elif c in " \t\r\n;&|()":
            break
        else:
            i += 1
    return min(i, len(text))


def scan(text: str) -> List[Tok]:
    """Tokens of a shell script; newlines are op tokens whose end covers any here-document
    bodies that follow them."""
    toks: List[Tok] = []
    heredocs: List[Tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("\\\n", i):
            i += 2
        elif c in " \t\r":
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c == "\n":
            start, i = i, i + 1
            for delim, strip in heredocs:
                while True:
                    if i >= n:
                        raise ShellSyntax(f"here-document {delim!r} is not closed")
                    j = text.find("\n", i)
                    line = text[i:n if j < 0 else j]
                    i = n if j < 0 else j + 1
                    if (line.lstrip("\t") if strip else line) == delim:
                        break
            heredocs = []
            toks.append(Tok("op", "\n", start, i))
        elif text.startswith("<<", i) and not text.startswith("<<<", i):
            start = i
            i += 2
            strip = text.startswith("-", i)
            i += strip
            while i < n and text[i] in " \t":
                i += 1
            end = _word_end(text, i)
            word = unquote(text[i:end], allow_dollar=True)
            if not word:
                raise ShellSyntax("here-document without a delimiter")
            heredocs.append((word, strip))
            toks.append(Tok("op", "<<", start, end))
            i = end
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op:
                toks.append(Tok("op", op, i, i + len(op)))
                i += len(op)
            else:
                end = _word_end(text, i)
                toks.append(Tok("word", text[i:end], i, end))
                i = end
    if heredocs:
        raise ShellSyntax("here-document body missing")
    return toks


def _walk(toks: List[Tok]):
    """Yield (token, at_command_position, nesting_depth_after)."""
    depth, parens, cmdpos = 0, 0, True
    for tok in toks:
        here = cmdpos
        if tok.kind == "op":
            if tok.text == "(":
                parens += 1
            elif tok.text == ")":
                # a ")" with no "(" open is a case pattern's end
                parens = max(parens - 1, 0)
            cmdpos = tok.text != "<<" or cmdpos
        else:
            if here and tok.text in _OPENERS:
                depth += 1
            elif here and tok.text in _CLOSERS:
                depth = max(depth - 1, 0)
            cmdpos = here and (tok.text in _RESTART or tok.text in _CLOSERS or bool(ASSIGNMENT.match(tok.text)))
        yield tok, here, depth + parens


def top_level_spans(text: str) -> List[Tuple[int, int]]:
    """Character spans of the complete top-level commands of a script (one per line, unless a
    command continues: a backslash, an open if/for/case/{...}, a here-document)."""
    spans: List[Tuple[int, int]] = []
    start: Optional[int] = None
    for tok, _cmdpos, depth in _walk(scan(text)):
        if tok.kind == "op" and tok.text == "\n":
            if depth == 0 and start is not None:
                # the token also covers the here-document bodies that follow the line
                end = tok.start if tok.end == tok.start + 1 else tok.end - (text[tok.end - 1] == "\n")
                spans.append((start, end))
                start = None
            continue
        if start is None:
            start = tok.start
    if start is not None:
        spans.append((start, len(text)))
    return spans


@dataclass(frozen=True)
class Segment:
    """One command of a flat list: its text as written and its pipeline's words (raw)."""

    text: str
    commands: Tuple[Tuple[str, ...], ...]


def split_flat(text: str) -> Optional[List[Segment]]:
    """Split `a && b; c | d` into its commands; None unless the text is a flat list (no
    ||, &, subshells, compound commands, here-documents or newlines)."""
    try:
        walked = list(_walk(scan(text)))
    except ShellSyntax:
        return None
    segments: List[Segment] = []
    pipeline: List[List[str]] = [[]]
    first: Optional[int] = None
    last = 0

    def close() -> None:
        if first is not None:
            segments.append(Segment(text[first:last], tuple(tuple(c) for c in pipeline)))

    for tok, cmdpos, _depth in walked:
        if tok.kind == "op":
            if tok.text not in ("&&", ";", "|"):
                return None
            if tok.text == "|":
                pipeline.append([])
                continue
            close()
            pipeline, first = [[]], None
            continue
        if cmdpos and tok.text in _COMPOUND:
            return None
        first = tok.start if first is None else first
        last = tok.end
        pipeline[-1].append(tok.text)
    close()
    return segments


def command_words(text: str) -> List[List[str]]:
    """The words at the start of every command in the text (for summaries and checks)."""
    try:
        toks = scan(text)
    except ShellSyntax:
        return []
    out: List[List[str]] = []
    for tok, cmdpos, _depth in _walk(toks):
        if tok.kind == "word":
            if cmdpos and tok.text not in _RESTART:
                out.append([tok.text])
            elif out:
                out[-1].append(tok.text)
    return out


def unquote(word: str, allow_dollar: bool = False) -> Optional[str]:
    """The literal value of a shell word, or None if it depends on an expansion ($, `)."""
    out: List[str] = []
    i, quote = 0, None
    while i < len(word):
        c = word[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                out.append(c)
        elif c == "\\":
            nxt = word[i + 1:i + 2]
            if quote == '"' and nxt not in ('"', "\\", "$", "`", "\n"):
                out.append(c)
            elif nxt != "\n":
                out.append(nxt)
            i += 2
            continue
        elif c in "$`" and not allow_dollar:
            return None
        elif c == '"':
            quote = None if quote else '"'
        elif c == "'" and quote is None:
            quote = "'"
        else:
            out.append(c)
        i += 1
    return "".join(out)


def summarize(text: str) -> str:
    """The command names of a text with their arguments elided (`echo … | chpasswd`): how a
    line that holds a secret is shown without showing the secret."""
    try:
        walked = list(_walk(scan(text)))
    except ShellSyntax:
        return "…"
    out: List[str] = []
    for tok, cmdpos, _depth in walked:
        if tok.kind == "op":
            out.append("; " if tok.text in ("\n", "<<") else f" {tok.text} ")
        elif cmdpos:
            name = unquote(tok.text)
            shown = name if name and not ASSIGNMENT.match(name) else "…"
            out.append(("" if not out or out[-1].endswith(" ") else " ") + shown)
        elif not out or not out[-1].endswith("…"):
            out.append(" …")
    return re.sub(r"\s+", " ", "".join(out)).strip(" ;") or "…"


def one_line(text: str, limit: int = 120) -> str:
    """A recipe line as shown in messages and comments: one line, at most `limit` characters."""
    flat = re.sub(r"\s+", " ", text.replace("\\\n", " ")).strip()
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def script_commands(lines: List[str]) -> List[Tuple[str, List[str], int]]:
    """The top-level commands of a script given as lines: (text with continuations joined,
    the lines as written, index of its first line). A script the scanner cannot follow is
    one command per line."""
    text = "\n".join(lines)
    try:
        spans = top_level_spans(text)
    except ShellSyntax:
        return [(line, [line], i) for i, line in enumerate(lines) if line.strip()]
    out = []
    for start, end in spans:
        first = text.count("\n", 0, start)
        last = text.count("\n", 0, end)
        written = lines[first:last + 1]
        out.append((re.sub(r"\\\n[ \t]*", " ", text[start:end]), written, first))
    return out


def dedent_script(lines: List[str]) -> List[str]:
    """Remove the indentation common to a script's lines, except inside here-documents, whose
    text (and terminator) must stay exactly as written."""
    text = "\n".join(lines)
    try:
        toks = scan(text)
    except ShellSyntax:
        return list(lines)
    verbatim: Set[int] = set()
    for tok in toks:
        if tok.text == "\n" and tok.end > tok.start + 1:
            first = text.count("\n", 0, tok.start) + 1
            verbatim.update(range(first, text.count("\n", 0, tok.end - 1) + 1))
    indents = [line[:len(line) - len(line.lstrip(" \t"))] for i, line in enumerate(lines)
               if line.strip() and not line.lstrip().startswith("#") and i not in verbatim]
    prefix = indents[0] if indents else ""
    for indent in indents[1:]:
        while not indent.startswith(prefix):
            prefix = prefix[:-1]
    return [line if i in verbatim else line[len(prefix):] if line.startswith(prefix) else line.lstrip()
            for i, line in enumerate(lines)]
