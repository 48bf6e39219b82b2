"""The imported spec as stardock.yaml text."""
from __future__ import annotations

import re

import yaml

from stardock_hpc import __version__
from stardock_hpc.importer.recipe import ImportResult


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)  # indent list items under their key


def _str(dumper: yaml.SafeDumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _comment(text: str) -> str:
    """One line of printable text: what a YAML comment may hold."""
    return re.sub(r"[^\t\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+", "?", text)


def render_yaml(result: ImportResult) -> str:
    """The spec as stardock.yaml text, headed by comments that list what was not carried over
    and the notes, so that they stay with the file."""
    head = [f"# stardock.yaml imported from {result.source.name} ({result.kind}) by stardock-hpc "
            f"{__version__}.",
            "# Review it, then build it: stardock build stardock.yaml"]
    if result.changes:
        head += ["#", "# THE BASE IS NOT THE RECIPE'S:"] + [f"#   - {_comment(c)}" for c in result.changes]
    if result.not_carried:
        head += ["#", f"# Not carried over ({len(result.not_carried)}):"]
        head += [f"#   - {_comment(str(item))}" for item in result.not_carried]
    if result.notes:
        head += ["#", "# Notes:"] + [f"#   - {_comment(note)}" for note in result.notes]
    body = "".join(yaml.dump({key: value}, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                             allow_unicode=True, width=1 << 16) for key, value in result.spec.items())
    return "\n".join(head) + "\n\n" + body
