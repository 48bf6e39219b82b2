"""Read a YAML file into plain Python values and remember the line of every key.

Validation errors name the file, the key path and the line (`stardock.yaml:7: packages.apt[1]:
...`), so the loader keeps a map from key path to line number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import yaml

from stardock_hpc.errors import UsageError
from stardock_hpc.fsutil import read_text

KeyPath = Tuple[Union[str, int], ...]
MAX_BYTES = 1 << 20  # a spec or site config is small; refuse to parse anything huge


@dataclass
class Document:
    """The parsed data of one YAML file and where each part of it was written."""

    path: str
    data: Any
    lines: Dict[KeyPath, int] = field(default_factory=dict)

    def line(self, path: KeyPath) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


class _Builder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: Dict[KeyPath, int] = {}
        self._loader = yaml.SafeLoader("")  # only its scalar constructors are used

    def build(self, node: yaml.Node, where: KeyPath) -> Any:
        self.lines.setdefault(where, node.start_mark.line + 1)
        plain: Dict[type, str] = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}
        if type(node) in plain and node.tag != plain[type(node)]:
            raise UsageError(f"{self.path}:{node.start_mark.line + 1}: not valid YAML here: the tag "
                             f"{node.tag!r} is not supported")
        if isinstance(node, yaml.MappingNode):
            out: Dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise UsageError(f"{self.path}:{key_node.start_mark.line + 1}: YAML merge keys "
                                     "('<<') are not supported; write the keys out")
                key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if key is None or isinstance(key, float):
                    raise UsageError(f"{self.path}:{key_node.start_mark.line + 1}: "
                                     f"{format_path(where)}: keys must be plain names")
                if key in out:
                    raise UsageError(f"{self.path}:{key_node.start_mark.line + 1}: "
                                     f"{format_path(where + (key,))}: the key is given twice")
                self.lines[where + (key,)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, where + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, where + (i,)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node)

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UsageError(f"{self.path}:{node.start_mark.line + 1}: not valid YAML: {problem}") from None


def parse(text: str, path: str) -> Document:
    """Parse one YAML document; syntax errors become a UsageError naming file and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else path
        raise UsageError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    if node is None:
        return Document(path, None, {(): 1})
    builder = _Builder(path)
    data = builder.build(node, ())
    return Document(path, data, builder.lines)


def load(path: Path, what: str) -> Document:
    """Read and parse a YAML file; `what` names it in errors ("environment spec")."""
    return parse(read_text(path, what, MAX_BYTES), str(path))
