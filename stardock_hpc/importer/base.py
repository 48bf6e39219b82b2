"""What the Dockerfile and the definition importers share: the spec they fill, the site's bases,
the shell rules, the variables the recipe has set so far, and the files it copies. Each
importer fills in how it reads its format and what it says about a variable it never set."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from stardock_hpc.importer import bases as base_rules
from stardock_hpc.importer.rules import REASON_SECRET, SECRET_NAME, ShellRules
from stardock_hpc.importer.spec_builder import PATH_MARK, SpecBuilder
from stardock_hpc.importer.words import Unresolved
from stardock_hpc.site import BaseImage
from stardock_hpc.spec import RESERVED_ENV


@dataclass(frozen=True)
class SiteBases:
    """The bases an import may use: the site's, its default, and the one --base chose."""

    offered: Mapping[str, BaseImage]
    default: Optional[str] = None
    chosen: Optional[str] = None


class RecipeImporter:
    # why a variable has no value at build time, as the message about it says
    RUN_TIME_ONLY = "known only at run time"

    def __init__(self, path: Path, builder: SpecBuilder, bases: SiteBases) -> None:
        self.directory = path.parent.resolve()  # file sources are found here (Docker's build context)
        self.out = builder
        self.bases = bases
        self.vars: Dict[str, str] = {}
        self.rules = ShellRules(builder.in_image)

    def note_unset(self, name: str) -> None:
        """Say that $name, which the recipe never sets, expands to nothing."""
        raise NotImplementedError

    def set_base(self, image: str, shown: str, commands: Dict[int, str]) -> None:
        """The recipe's image as one of the site's bases (bases.py decides; a refusal is a
        UsageError); what stands in for the image's own software comes first in build:."""
        choice = base_rules.choose(image, shown, self.bases.offered, self.bases.default, self.bases.chosen,
                                   commands)
        self.out.base = choice.base
        if choice.change:
            self.out.changes.append(f"line {self.out.line}: {choice.change}" if self.out.line else choice.change)
        env = self.out.add_stand_in(choice.stand_in)
        self.vars.update(env)
        if choice.stand_in.foreign_python:
            self.rules.foreign_python = f"{base_rules.CONDA_PREFIX}/bin/pip, conda's"

    def lookup(self, name: str) -> str:
        """The value of $name as the recipe's next line sees it; Unresolved for the variables
        that have a value only when the job runs, or that name a secret."""
        if name == "PATH":
            return self.vars.get("PATH", PATH_MARK)
        if name in self.vars:
            return self.vars[name]
        if SECRET_NAME.search(name) or RESERVED_ENV.fullmatch(name):
            raise Unresolved(name)
        self.note_unset(name)
        return ""

    def drop_unresolved(self, shown: str, exc: Unresolved, line: Optional[int] = None) -> None:
        self.out.drop(shown, REASON_SECRET if SECRET_NAME.search(exc.name) else
                      f"uses ${exc.name}, which has no literal value here ({self.RUN_TIME_ONLY}; values "
                      "in the spec are taken literally)", line)

    def sources(self, pattern: str) -> List[Path]:
        """The files a copy names (relative to the recipe's directory, globs expanded); empty if
        there are none."""
        matches = sorted(self.directory.glob(pattern)) if any(c in pattern for c in "*?[") \
            else [self.directory / pattern]
        return matches if matches and matches[0].exists() else []
