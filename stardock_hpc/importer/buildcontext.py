"""A Dockerfile's build context as `stardock import` reads it: the recipe's directory, less what
its .dockerignore excludes (Docker's rules: `*`, `?`, `[...]`, `**`, `!` exceptions, the last
matching line decides, an excluded directory excludes what is in it).

A spec's files: item copies a directory whole, so a COPY of a directory some of whose files are
excluded becomes copies of what is left: the directory's entries one by one, going down only
where something is excluded."""
from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import List, Optional, Pattern, Tuple

MAX_ENTRIES = 2000   # entries looked at under one copied directory


def _regex(pattern: str) -> Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 1
                if pattern.startswith("/", i + 1):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body).replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


class Ignore:
    """The patterns of a .dockerignore file; empty when there is none."""

    def __init__(self, lines: List[str], source: Optional[Path] = None) -> None:
        self.source = source
        self.rules: List[Tuple[bool, Pattern[str], str]] = []   # (exception, regex, as written)
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = posixpath.normpath(line[1:].strip() if exception else line)
            pattern = pattern.lstrip("/") or "."
            if pattern != ".":
                self.rules.append((exception, _regex(pattern), line))

    @classmethod
    def for_recipe(cls, recipe: Path) -> Ignore:
        """<recipe>.dockerignore next to the recipe (BuildKit's per-Dockerfile file), else the
        context's .dockerignore."""
        for path in (recipe.with_name(recipe.name + ".dockerignore"), recipe.parent / ".dockerignore"):
            if path.is_file():
                return cls(path.read_text(errors="replace").splitlines(), path)
        return cls([])

    def __bool__(self) -> bool:
        return bool(self.rules)

    def excluded(self, rel: str) -> bool:
        """Is the context path `rel` (posix, relative) left out of the context?"""
        parts = rel.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        out = False
        for exception, regex, _line in self.rules:
            if any(regex.fullmatch(p) for p in prefixes):
                out = not exception
        return out

    def may_include_below(self, rel: str) -> bool:
        """Could an exception (`!` line) bring back something under the excluded directory rel?"""
        return any(exception for exception, _r, line in self.rules
                   if line.lstrip("!").strip().lstrip("/").startswith(rel.split("/")[0]) or "*" in line)


def plan_copy(root: Path, source: Path, ignore: Ignore) -> Tuple[List[Tuple[Path, str]], List[str]]:
    """What a COPY of `source` (under the context `root`) takes: (path, sub-destination) pairs,
    the sub-destination relative to where the source lands ("" for the source itself); and the
    context paths .dockerignore leaves out of it."""
    rel = _rel(root, source)
    if not ignore:
        return [(source, "")], []
    if rel and ignore.excluded(rel) and not (source.is_dir() and ignore.may_include_below(rel)):
        return [], [rel]
    if not source.is_dir() or not _excludes_under(root, source, ignore):
        return [(source, "")], []
    taken: List[Tuple[Path, str]] = []
    left: List[str] = []
    for child in sorted(source.iterdir()):
        sub, out = plan_copy(root, child, ignore)
        taken += [(path, posixpath.join(child.name, dest) if dest else child.name) for path, dest in sub]
        left += out
    return taken, left


def _rel(root: Path, path: Path) -> str:
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return "" if rel == "." else rel


def _excludes_under(root: Path, directory: Path, ignore: Ignore) -> bool:
    seen = 0
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            seen += 1
            if seen > MAX_ENTRIES or ignore.excluded(_rel(root, Path(dirpath) / name)):
                return True
    return False
