"""Apptainer / Singularity definition files for `stardock import`: the header (Bootstrap, From,
...) and the %sections, read with their indentation and blank lines intact, mapped onto the spec.
Only the last stage of a multi-stage definition becomes the environment; %files sources are taken
relative to the definition's directory."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.importer.base import RecipeImporter
from stardock_hpc.importer.rules import SECRET_NAME, refusal
from stardock_hpc.importer.shell import ShellSyntax, dedent_script, one_line, script_commands, split_flat, unquote
from stardock_hpc.importer.words import Unresolved, shell_env_line

_SECTION = re.compile(r"\s*%([A-Za-z]+)\b[ \t]*(.*)")
_HEADER = re.compile(r"([A-Za-z]+)\s*:\s*(.*)")
_APP_SECTIONS = ("appinstall", "apprun", "appenv", "appfiles", "applabels", "apphelp", "apptest",
                 "appsetup", "appstart")
_NOT_CARRIED = {
    "help": "stardock has no help section; keep the text in a README next to the spec",
    "test": "stardock checks images with the catalog apps' smoke commands; run your test in a job",
    "setup": "runs on the build host as root; stardock never runs steps outside the image",
    "startscript": "instance services are not run in batch jobs",
    "arguments": "build-time {{ templating }} is not supported",
    "pre": "runs on the build host; stardock never runs steps outside the image",
    **{name: "SCI-F apps are not supported: an environment has one default command (one spec per "
       "app, or build steps)" for name in _APP_SECTIONS},
}
_ENV_FILE = re.compile(r"\$\{?(?:SINGULARITY|APPTAINER)_ENVIRONMENT\}?")
_RUNTIME_ARGS = re.compile(r'\s+(?:"\$@"|\$@|"\$\*"|\$\*)$')


@dataclass
class Section:
    name: str
    args: str
    line: int
    lines: List[str] = field(default_factory=list)

    def body(self) -> Tuple[List[str], int]:
        """The lines without common indentation or blank lines around; and the first one's number."""
        lines = dedent_script(self.lines)
        first = self.line + 1
        while lines and not lines[0].strip():
            lines.pop(0)
            first += 1
        while lines and not lines[-1].strip():
            lines.pop()
        return lines, first


@dataclass
class Stage:
    line: int
    header: Dict[str, Tuple[str, int]] = field(default_factory=dict)
    sections: List[Section] = field(default_factory=list)


def lex(text: str) -> List[Stage]:
    stages: List[Stage] = []
    section = None
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.fullmatch(line.strip())
        if re.match(r"bootstrap\s*:", line, re.I):
            stages.append(Stage(number))
            section = None
        match = _SECTION.fullmatch(line)
        if match:
            if not stages:
                raise UsageError(f"line {number}: a section before the 'Bootstrap:' header")
            section = Section(match.group(1).lower(), match.group(2).strip(), number)
            stages[-1].sections.append(section)
        elif section is not None:
            section.lines.append(line)
        elif header and stages:
            stages[-1].header[header.group(1).lower()] = (header.group(2).split("#")[0].strip(), number)
        elif line.strip() and not line.strip().startswith("#"):
            raise UsageError(f"line {number}: expected a header line such as 'Bootstrap: docker', "
                             f"found {one_line(line, 60)!r}")
    if not stages:
        raise UsageError("no 'Bootstrap:' header: not an Apptainer/Singularity definition")
    return stages


class DefImporter(RecipeImporter):
    def run(self, stages: List[Stage]) -> None:
        for stage, after in zip(stages, stages[1:]):
            what = " ".join(f"{k.capitalize()}: {v}" for k, (v, _n) in stage.header.items() if k != "stage")
            self.out.drop(f"{what} (lines {stage.line}-{after.line - 1})",
                          "multi-stage definition: only the final stage is imported", stage.line)
        stage = stages[-1]
        self._header(stage)
        for section in stage.sections:
            self.out.line = section.line
            handler = getattr(self, f"_{section.name}", None)
            if section.name in _NOT_CARRIED or handler is None:
                lines, _first = section.body()
                shown = f"%{section.name} {section.args}".strip() + \
                    f" ({len(lines)} line{'s' if len(lines) != 1 else ''})"
                self.out.drop(shown, _NOT_CARRIED.get(section.name, f"unknown section %{section.name}"))
            else:
                handler(section)
        self.out.line = None

    def _header(self, stage: Stage) -> None:
        header = dict(stage.header)
        bootstrap, line = header.pop("bootstrap", ("", stage.line))
        source, _ = header.pop("from", ("", line))
        self.out.line = line
        kind = bootstrap.lower()
        if kind in ("docker", "docker-daemon") and source:
            self.out.set_base(source, f"From: {source}", self.bases)
        elif kind == "debootstrap" and "osversion" in header:
            version, _ = header.pop("osversion")
            mirror, _ = header.pop("mirrorurl", ("", line))
            distro = "ubuntu" if "ubuntu" in mirror else "debian"
            self.out.set_base(f"{distro}:{version}", f"Bootstrap: debootstrap, OSVersion: {version}", self.bases)
            include, _ = header.pop("include", ("", line))
            self.out.apt += include.replace(",", " ").split()
        else:
            self.out.drop(f"Bootstrap: {bootstrap} From: {source}".strip(), "stardock builds on the "
                          "site's bases (stardock site show); the site's default base is used")
        header.pop("stage", None)
        for key, (value, number) in header.items():
            self.out.drop(f"{key}: {value}", "a header stardock does not use", number)

    def note_unset(self, name: str) -> None:
        self.out.note(f"${name} is not set by the recipe: expanded to nothing (stardock starts "
                      "containers with a clean environment)")

    def _env_line(self, line: str, shown: str) -> bool:
        try:
            pairs = shell_env_line(line, self.vars, self.lookup)
        except Unresolved as exc:
            self.drop_unresolved(shown, exc)
            return True
        for key, value in pairs or []:
            self.out.add_env(key, value, f"{shown} ({key})" if len(pairs or []) > 1 else shown)
            if not SECRET_NAME.search(key):
                self.vars[key] = value
        return pairs is not None

    def _entries(self, section: Section) -> Iterator[str]:
        """The section's lines that are not blank or comments, with out.line following them."""
        lines, first = section.body()
        for offset, line in enumerate(lines):
            self.out.line = first + offset
            if line.strip() and not line.strip().startswith("#"):
                yield line

    def _environment(self, section: Section) -> None:
        for line in self._entries(section):
            shown = f"%environment: {one_line(line)}"
            if not self._env_line(line.strip(), shown):
                self.out.drop(shown, "%environment: only plain VAR=value assignments carry over")

    def _post(self, section: Section) -> None:
        if section.args:
            self.out.note(f"%post {section.args}: stardock's build steps run in bash -e")
        lines, first = section.body()
        for text, written, index in script_commands(lines):
            self.out.line = first + index
            if _ENV_FILE.search(text):
                self._env_file(text)
                continue
            # %post is one shell script already, as stardock's build is: a cd carries over in both
            self.out.add_lifted(self.rules.command(text, written, "/", split=False), "%post", None)

    def _env_file(self, text: str) -> None:
        """`echo 'export K=V' >> $APPTAINER_ENVIRONMENT`: Apptainer's way to set run-time
        variables from %post; the plain cases become env."""
        segments = split_flat(text) or []
        words = segments[0].commands[0] if len(segments) == 1 and len(segments[0].commands) == 1 else ()
        value = unquote(words[1]) if len(words) == 4 and words[0] == "echo" and words[2] == ">>" else None
        try:
            if value is not None and self._env_line(value, one_line(text)):
                return
        except ShellSyntax:
            pass
        self.out.drop(one_line(text), "writes Apptainer's run-time environment file; set the "
                      "variables under env:")

    def _files(self, section: Section) -> None:
        if section.args:
            self.out.drop(f"%files {section.args}", "copies from another stage, which is not imported")
            return
        for line in self._entries(section):
            words = [unquote(w) for w in line.split()]
            if None in words or len(words) > 2:
                self.out.drop(one_line(line), "expected 'SOURCE [DESTINATION]'")
                continue
            src = str(words[0])
            dest = str(words[-1]) if len(words) == 2 else "/" + src.lstrip("./")
            if src.startswith("/"):
                self.out.drop(one_line(line), "an absolute path on the build host: copy it next to "
                              "the recipe and name it relative to it")
                continue
            matches = self.sources(src)
            if not matches:
                self.out.drop(one_line(line), "not found next to the recipe")
                continue
            for source in matches:
                target = dest if len(matches) == 1 else dest.rstrip("/") + "/"
                self.out.add_file(source, target, one_line(line))

    def _runscript(self, section: Section) -> None:
        lines, _first = section.body()
        script = "\n".join(lines)
        if not script.strip():
            return
        if refusal(script):
            self.out.drop(f"%runscript ({len(lines)} lines)", str(refusal(script)))
            return
        single = _RUNTIME_ARGS.sub("", lines[0].strip()) if len(lines) == 1 else None
        segments = split_flat(single) if single else None
        if segments and len(segments) == 1 and len(segments[0].commands) == 1:
            argv = [unquote(w) for w in segments[0].commands[0]]
            if argv[:1] == ["exec"]:
                argv = argv[1:]
            if argv and None not in argv:
                self.out.command = [str(a) for a in argv]
                if single != lines[0].strip():
                    self.out.note('%runscript\'s "$@" dropped: a list command takes the job\'s '
                                  "arguments after it")
                return
        self.out.command = script

    def _labels(self, section: Section) -> None:
        for line in self._entries(section):
            key, _, value = line.strip().partition(" ")
            shown = f"%labels {key} …" if SECRET_NAME.search(key) else f"%labels {one_line(line)}"
            self.out.add_label(key, value.strip(), shown)
