"""Apptainer / Singularity definition files for `stardock import`: the header (Bootstrap, From,
...) and the %sections, read with their indentation and blank lines intact, mapped onto the spec
in the order Apptainer runs them (%setup, %files, %post). Only the last stage of a multi-stage
definition becomes the environment; %files sources are taken relative to the definition's
directory, and copied as Apptainer copies them (cp: into a directory that exists, by name)."""
from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.importer.base import RecipeImporter
from stardock_hpc.importer.rules import SECRET_NAME, refusal
from stardock_hpc.importer.shell import ShellSyntax, dedent_script, one_line, script_commands, split_flat, unquote
from stardock_hpc.importer.state import ShellState
from stardock_hpc.importer.words import Unresolved, shell_env_line

_SECTION = re.compile(r"\s*%([A-Za-z]+)\b[ \t]*(.*)")
_HEADER = re.compile(r"([A-Za-z]+)\s*:\s*(.*)")
_APP_SECTIONS = ("appinstall", "apprun", "appenv", "appfiles", "applabels", "apphelp", "apptest",
                 "appsetup", "appstart")
_NOT_CARRIED = {
    "help": "stardock has no help section; keep the text in a README next to the spec",
    "test": "stardock checks images with the catalog apps' smoke commands; run your test in a job",
    "setup": "runs on the build host as root; stardock never runs steps outside the image (only its "
             "mkdir, touch and cp into the image are carried)",
    "startscript": "instance services are not run in batch jobs",
    "arguments": "build-time {{ templating }} is not supported",
    "pre": "runs on the build host; stardock never runs steps outside the image",
    **{name: "SCI-F apps are not supported: an environment has one default command (one spec per "
       "app, or build steps)" for name in _APP_SECTIONS},
}
_ENV_FILE = re.compile(r"\$\{?(?:SINGULARITY|APPTAINER)_ENVIRONMENT\}?")
_RUNTIME_ARGS = re.compile(r'\s+(?:"\$@"|\$@|"\$\*"|\$\*)$')
_USES_ARGS = re.compile(r'\$(?:@|\*|[1-9]|\{[@*1-9])')
_ROOTFS = re.compile(r"^\$\{?(?:SINGULARITY|APPTAINER)_ROOTFS\}?(?=/|$)")
_ORDER = {"setup": 0, "files": 1, "post": 2}   # the order Apptainer runs them in, wherever written
# directories a Debian-family base has: %files copies into them by name, as cp does
_BASE_DIRS = {"/", "/bin", "/etc", "/home", "/lib", "/media", "/mnt", "/opt", "/root", "/run", "/sbin", "/srv",
              "/tmp", "/usr", "/usr/bin", "/usr/include", "/usr/lib", "/usr/local", "/usr/local/bin",
              "/usr/local/etc", "/usr/local/include", "/usr/local/lib", "/usr/local/sbin", "/usr/local/share",
              "/usr/sbin", "/usr/share", "/var", "/var/lib", "/var/log", "/var/tmp"}
_BOOTSTRAP_IMAGES = {"yum": "centos", "dnf": "fedora", "zypper": "opensuse", "arch": "archlinux",
                     "busybox": "busybox", "scratch": "scratch"}


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
        self.image_dirs: Set[str] = set(_BASE_DIRS)
        for stage, after in zip(stages, stages[1:]):
            what = " ".join(f"{k.capitalize()}: {v}" for k, (v, _n) in stage.header.items() if k != "stage")
            self.out.drop(f"{what} (lines {stage.line}-{after.line - 1})",
                          "multi-stage definition: only the final stage is imported", stage.line)
        stage = stages[-1]
        self._header(stage)
        for section in sorted(stage.sections, key=lambda s: _ORDER.get(s.name, len(_ORDER))):
            self.out.line = section.line
            handler = getattr(self, f"_{section.name}", None)
            if (section.name in _NOT_CARRIED and section.name != "setup") or handler is None:
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
        commands = {s.line: "\n".join(s.lines) for s in stage.sections if s.name in ("post", "setup")}
        shown = f"Bootstrap: {bootstrap}" + (f", From: {source}" if source else "")
        if kind == "debootstrap" and "osversion" in header:
            version, _ = header.pop("osversion")
            mirror, _ = header.pop("mirrorurl", ("", line))
            distro = "ubuntu" if "ubuntu" in mirror else "debian"
            self.set_base(f"{distro}:{version}", f"Bootstrap: debootstrap, OSVersion: {version}", commands)
            include, _ = header.pop("include", ("", line))
            if include.strip():
                self.out.add_apt(include.replace(",", " ").split(), False)
        elif kind in _BOOTSTRAP_IMAGES:
            version, _ = header.pop("osversion", ("", line))
            header.pop("mirrorurl", None)
            header.pop("include", None)
            image = _BOOTSTRAP_IMAGES[kind] + (f":{version}" if re.fullmatch(r"[\w.-]+", version) else "")
            self.set_base(image, shown + (f", OSVersion: {version}" if version else ""), commands)
        elif source:
            image = re.sub(r"^(?:library://|docker://|shub://|oras://)?(?:library/default/|library/)?", "", source)
            self.set_base(image, shown, commands)
        else:
            raise UsageError(f"line {line}: {shown}: no From: image to build on")
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
        state = ShellState()   # %post is one shell script, as stardock's build is: a cd carries over
        for text, written, index in script_commands(lines):
            self.out.line = first + index
            if _ENV_FILE.search(text):
                self._env_file(text)
                continue
            lifted = self.rules.command(text, written, state, split=False)
            self.out.add_lifted(lifted, "%post")
            state = lifted.state

    def _setup(self, section: Section) -> None:
        """%setup runs on the build host; what it does to the image with mkdir, touch and cp of
        the recipe's files is carried (a directory it makes changes where %files copies)."""
        lines, first = section.body()
        for text, _written, index in script_commands(lines):
            self.out.line = first + index
            if text.strip().startswith("#") or not text.strip():
                continue
            if not self._setup_command(text):
                self.out.drop(f"%setup: {one_line(text)}", _NOT_CARRIED["setup"])

    def _setup_command(self, text: str) -> bool:
        segments = split_flat(text)
        if not segments or len(segments) != 1 or len(segments[0].commands) != 1:
            return False
        words = [unquote(w, allow_dollar=True) for w in segments[0].commands[0]]
        if None in words or not words:
            return False
        tool, args = str(words[0]), [str(w) for w in words[1:]]
        options = [a for a in args if a.startswith("-")]
        paths = [a for a in args if not a.startswith("-")]
        inside = [_ROOTFS.sub("", p) or "/" for p in paths if _ROOTFS.match(p)]
        if tool in ("mkdir", "touch") and paths and len(inside) == len(paths) and set(options) <= {"-p", "-v"}:
            if tool == "mkdir":
                self.image_dirs.update(posixpath.normpath(p) for p in inside)
            self.out.add_shell([f"{tool} -p {' '.join(map(shlex.quote, inside))}" if tool == "mkdir"
                                else f"touch {' '.join(map(shlex.quote, inside))}"])
            return True
        if tool == "cp" and len(paths) >= 2 and len(inside) == 1 and _ROOTFS.match(paths[-1]):
            sources: List[Path] = []
            for src in paths[:-1]:
                if src.startswith("/") or _ROOTFS.match(src) or "$" in src:
                    return False
                found = [m for m in self.sources(src) if not m.name.startswith(".") or not any(c in src for c in "*?[")]
                if not found:
                    self.out.drop(f"%setup: {one_line(text)}", f"{src} is not found next to the recipe")
                    return True
                sources += found
            self._place(sources, inside[0], len(paths) > 2 or any(c in "".join(paths[:-1]) for c in "*?["),
                        f"%setup: {one_line(text)}")
            return True
        return False

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
            self._place(matches, dest, len(matches) > 1 or any(c in src for c in "*?["), one_line(line))

    def _place(self, sources: List[Path], dest: str, many: bool, shown: str) -> None:
        """Copy as cp does: into `dest` by name when it is a directory of the image (one the base
        has, one %setup made, or any when several sources go there); else as `dest`. The
        entries of the whole recipe directory go there as one copy of the directory."""
        dest = posixpath.normpath(dest) + ("/" if dest.endswith("/") and dest != "/" else "")
        if dest.startswith(("/etc/apt/", "/usr/share/keyrings/")):
            self.rules.repo_added = True   # an apt source or key: the installs after it are from there
        into = many or dest.endswith("/") or posixpath.normpath(dest) in self.image_dirs
        everything = sorted(p for p in self.directory.iterdir())
        if into and many and sources == everything:
            self.out.add_file(self.directory, posixpath.normpath(dest), shown)
            return
        for source in sources:
            target = posixpath.join(posixpath.normpath(dest), source.name) if into else dest
            if self.out.add_file(source, target, shown) and source.is_dir():
                self.image_dirs.add(posixpath.normpath(target))

    def _runscript(self, section: Section) -> None:
        lines, _first = section.body()
        script = "\n".join(lines)
        if not any(line.strip() and not line.strip().startswith("#") for line in lines):
            return   # comments only: Apptainer runs nothing either
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
                    self.out.note(f"%runscript passes its arguments to {argv[0]}; the spec's command does not: "
                                  "arguments given at run time replace the command")
                return
        self.out.command = script
        if _USES_ARGS.search(script):
            self.out.note("%runscript uses its arguments ($@, $*, $1...); in the spec's command they are "
                          "empty: arguments given at run time replace the command")

    def _labels(self, section: Section) -> None:
        for line in self._entries(section):
            key, _, value = line.strip().partition(" ")
            shown = f"%labels {key} …" if SECRET_NAME.search(key) else f"%labels {one_line(line)}"
            self.out.add_label(key, value.strip(), shown)
