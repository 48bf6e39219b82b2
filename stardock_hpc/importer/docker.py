"""Dockerfiles and Containerfiles for `stardock import`: read the instructions the way BuildKit
does (continuations, comment lines inside them, the escape directive, here-documents) and map
each onto the spec. Only the last build stage becomes the environment; the build context is
taken to be the recipe's directory."""
from __future__ import annotations

import json
import posixpath
import re
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.importer.base import RecipeImporter
from stardock_hpc.importer.rules import REASON_SECRET, SECRET_NAME, refusal
from stardock_hpc.importer.shell import VARIABLE, ShellSyntax, dedent_script, one_line, script_commands
from stardock_hpc.importer.spec_builder import SpecBuilder
from stardock_hpc.importer.words import Unresolved, docker_words
from stardock_hpc.site import BaseImage

_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_.-]*)\2")
_NOT_CARRIED = {
    "USER": "stardock runs containers as the submitting user; the build steps after it run as root here",
    "EXPOSE": "no network services in batch jobs",
    "VOLUME": "stardock binds the site's volumes (stardock sbatch --mount NAME)",
    "WORKDIR": "jobs choose their working directory; the build steps after it still run there",
    "HEALTHCHECK": "batch jobs are not health-checked services",
    "SHELL": "stardock's build steps always run in bash -e",
    "ONBUILD": "triggers for images built on this one; stardock images are not used as bases",
    "STOPSIGNAL": "Slurm signals the job and stardock forwards the signals to the container",
}


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
        keyword, _, args = joined.strip().partition(" ")
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


class DockerImporter(RecipeImporter):
    RUN_TIME_ONLY = "HOME, USER, ... are known only at run time"

    def __init__(self, path: Path, builder: SpecBuilder, bases: Mapping[str, BaseImage]) -> None:
        super().__init__(path, builder, bases)
        self.workdir = "/"
        self.cmd: Optional[Instruction] = None
        self.entrypoint: Optional[Instruction] = None
        self.stages: List[str] = []
        self.global_args: Dict[str, str] = {}

    def note_unset(self, name: str) -> None:
        self.note_once(f"${name} is not set by the recipe: expanded to nothing, as Docker does on a "
                       "Debian base")

    def run(self, instructions: List[Instruction]) -> None:
        froms = [i for i, inst in enumerate(instructions) if inst.keyword == "FROM"]
        if not froms:
            raise UsageError("no FROM instruction: not a Dockerfile")
        first = instructions[0]
        if first.keyword not in ("FROM", "ARG"):
            raise UsageError(f"line {first.line}: a Dockerfile starts with FROM (or ARG), not "
                             f"{one_line(first.lines[0], 60)!r}")
        last = froms[-1]
        self.vars = self.global_args  # a global ARG's default may use the ones before it
        for inst in instructions[:froms[0]]:
            if inst.keyword != "ARG":
                raise UsageError(f"line {inst.line}: only ARG may come before the first FROM")
            for word in self._words(inst) or []:
                key, _, value = word.partition("=")
                self.global_args[key] = value
                if not re.search(rf"\$\{{?{re.escape(key)}\b", instructions[last].args):
                    self.out.drop(_pair_shown("ARG", key, value) if "=" in word else f"ARG {key}",
                                  "declared before FROM: only FROM lines see it", inst.line)
        for a, b in zip(froms, froms[1:]):
            stage = instructions[a]
            self.stages.append(stage.args.split()[-1] if re.search(r"\s[Aa][Ss]\s", stage.args) else "")
            self.out.drop(f"{stage.shown} (lines {stage.line}-{instructions[b].line - 1})",
                          "multi-stage build: only the final stage is imported; build what this "
                          "stage makes in build steps", stage.line)
        self._from(instructions[last])
        for inst in instructions[last + 1:]:
            self.out.line = inst.line
            handler = getattr(self, f"_{inst.keyword.lower()}", None)
            if inst.keyword in _NOT_CARRIED and inst.keyword != "WORKDIR":
                self.out.drop(inst.shown, _NOT_CARRIED[inst.keyword])
            elif handler is None:
                self.out.drop(inst.shown, f"unknown instruction {inst.keyword}")
            else:
                handler(inst)
        self.out.line = None
        self._command()

    def _words(self, inst: Instruction, split: bool = True) -> Optional[List[str]]:
        try:
            return docker_words(inst.args, self.lookup, split=split)
        except Unresolved as exc:
            self.drop_unresolved(inst.shown, exc, inst.line)
        except ShellSyntax as exc:
            self.out.drop(inst.shown, f"cannot be read: {exc}", inst.line)
        return None

    def _from(self, inst: Instruction) -> None:
        self.out.line = inst.line
        words = [w for w in inst.args.split() if not w.startswith("--platform")]
        if len(words) != len(inst.args.split()):
            self.note_once("FROM --platform dropped: the site's base is built for the cluster")
        self.vars = dict(self.global_args)
        image = (self._words(Instruction("FROM", words[0] if words else "", [], inst.line)) or [""])[0]
        self.vars = {}  # a stage sees a global ARG only where it declares it again
        if image in self.stages:
            self.out.drop(inst.shown, f"builds on stage {image!r}, which is not imported")
        elif image:
            self.out.set_base(image, inst.shown, self.bases)

    def note_once(self, text: str) -> None:
        if not any(text in n for n in self.out.notes):
            self.out.note(text)

    def _run(self, inst: Instruction) -> None:
        args, first = inst.args, inst.lines[0].lstrip()[3:].lstrip()
        while args.startswith("--"):
            flag, _, args = args.partition(" ")
            first = first.partition(" ")[2].lstrip()
            if re.search(r"type=(?:secret|ssh)", flag):
                self.out.drop(inst.shown, REASON_SECRET + " (a build secret mount)")
                return
            self.out.note(f"RUN {flag} dropped")
            args = args.lstrip()
        if inst.heredocs:
            self._run_heredoc(inst, args)
            return
        if args.startswith("["):
            try:
                args = shlex.join(json.loads(args))
                inst = Instruction(inst.keyword, args, [args], inst.line)
                first = args
            except (ValueError, TypeError):
                pass
        set_flags = re.match(r"set\s+(?:[-+][euxo]+\s*|pipefail\s*)+(?:;|&&)\s*", args)
        if set_flags and set_flags.group(0).rstrip(" ;&\t") == first.split(";")[0].split("&&")[0].strip():
            # `set -eux;` would stay on for all later steps in stardock's one build shell
            self.out.note(f"`{set_flags.group(0).rstrip(' ;&')}` dropped: stardock's build steps run with bash -e")
            args = args[set_flags.end():]
            first = first.lstrip()[len(set_flags.group(0).rstrip()):].lstrip()
        rest = dedent_script(inst.lines[1:])
        if first.strip() not in ("", "\\"):  # continuation lines indented under the first
            rest = [first] + [f"  {line}" if line else line for line in rest]
        self.out.add_lifted(self.rules.command(args, rest, self.workdir, split=True), "RUN", self.workdir)

    def _run_heredoc(self, inst: Instruction, args: str) -> None:
        delim, body = inst.heredocs[0]
        if len(inst.heredocs) != 1 or not re.fullmatch(r"<<-?([\"']?)" + re.escape(delim) + r"\1", args):
            # `RUN python3 <<EOF` / `RUN cat <<EOF > f`: the body is the command's input, as in a
            # shell here-document, so the shell text with its bodies means the same
            lines = [args] + [line for d, b in inst.heredocs for line in (*b, d)]
            self.out.add_lifted(self.rules.command("\n".join(lines), lines, self.workdir, split=True),
                                "RUN", self.workdir)
            return
        if body and body[0].startswith("#!") and not re.search(r"\b(?:ba)?sh\b", body[0]):
            self.out.drop(inst.shown, f"a here-document script for {body[0][2:].strip()}: put it in "
                          "a file under files: and run it in a build step")
            return
        changed = False
        for text, lines, _index in script_commands(body):
            lifted = self.rules.command(text, lines, self.workdir, split=False)
            changed = changed or lifted.changes_dir
            self.out.add_lifted(lifted, "RUN", None)
        if changed:
            self.out.pending_cd = self.workdir

    def _env(self, inst: Instruction) -> None:
        for key, value in self._pairs(inst) or []:
            self.out.add_env(key, value, _pair_shown("ENV", key, value))
            if not SECRET_NAME.search(key):
                self.vars[key] = value

    def _label(self, inst: Instruction) -> None:
        for key, value in self._pairs(inst) or []:
            self.out.add_label(key, value, _pair_shown("LABEL", key, value))

    def _maintainer(self, inst: Instruction) -> None:
        self.out.add_label("maintainer", " ".join(self._words(inst, split=False) or []),
                           inst.shown)

    def _pairs(self, inst: Instruction) -> Optional[List[Tuple[str, str]]]:
        """`KEY value with spaces` (the legacy form: one pair) or `K=v K2="a b"`."""
        key, rest = (re.split(r"\s+", inst.args, maxsplit=1) + [""])[:2]
        if "=" not in key:
            values = self._words(Instruction(inst.keyword, rest.strip(), inst.lines, inst.line), split=False)
            return None if values is None else [(key, values[0] if values else "")]
        expanded = self._words(inst)
        if expanded is None:
            return None
        if any("=" not in w for w in expanded):
            self.out.drop(inst.shown, "mixes KEY=value and KEY value forms; Docker rejects it")
            return None
        return [tuple(w.split("=", 1)) for w in expanded]  # type: ignore[misc]

    def _arg(self, inst: Instruction) -> None:
        for word in self._words(inst) or []:
            key, has_value, value = word.partition("=")
            if not has_value and key in self.global_args:
                has_value, value = "=", self.global_args[key]
            shown = _pair_shown("ARG", key, value) if has_value else f"ARG {key}"
            if SECRET_NAME.search(key) or refusal(f"{key}={value}", sshd=False):
                self.out.drop(shown, REASON_SECRET)
            elif not has_value:
                self.out.drop(shown, "has no default value and stardock has no build arguments")
            elif not VARIABLE.fullmatch(key):
                self.out.drop(shown, "not a variable name")
            else:
                self.vars[key] = value
                self.out.add_build([f"export {key}={shlex.quote(value)}"])
                self.out.note(f"ARG {key}: a variable of the build steps (stardock has no --build-arg)")

    def _workdir(self, inst: Instruction) -> None:
        words = self._words(inst, split=False)
        if words:
            self.workdir = posixpath.normpath(posixpath.join(self.workdir, words[0]))
            self.out.pending_cd = self.workdir
        self.out.drop(inst.shown, _NOT_CARRIED["WORKDIR"])

    def _add(self, inst: Instruction) -> None:
        self._copy(inst)

    def _copy(self, inst: Instruction) -> None:
        args, flags = inst.args, {}
        while args.startswith("--"):
            flag, _, args = args.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            args = args.lstrip()
        if inst.heredocs:
            self.out.drop(inst.shown, "files written from a here-document: put the file next to "
                          "the recipe and copy it")
            return
        if "from" in flags:
            self.out.drop(inst.shown, f"copies from {flags['from']!r}, another stage or image, "
                          "which is not imported")
            return
        try:
            paths = json.loads(args) if args.startswith("[") else None
        except ValueError:
            paths = None
        if not (isinstance(paths, list) and all(isinstance(p, str) for p in paths)):
            paths = self._words(Instruction(inst.keyword, args, inst.lines, inst.line))
        if paths is None:
            return
        if len(paths) < 2:
            self.out.drop(inst.shown, "needs a source and a destination")
            return
        for name in sorted(set(flags) - {"chown", "chmod", "link"}):
            self.out.note(f"{inst.keyword} --{name} dropped")
        if "chown" in flags:
            self.out.note(f"{inst.keyword} --chown={flags['chown']}: ownership is not carried (files "
                          "belong to root; jobs run as the submitting user)")
        *sources, dest = paths
        as_dir = dest.endswith(("/", "/.")) or dest == "."
        dest = posixpath.normpath(posixpath.join(self.workdir, dest))
        dest = dest.rstrip("/") + "/" if as_dir else dest
        if (len(sources) > 1 or any(c in "".join(sources) for c in "*?[")) and not dest.endswith("/"):
            dest += "/"
        for src in sources:
            self._copy_one(inst, src, dest, flags.get("chmod"))

    def _copy_one(self, inst: Instruction, src: str, dest: str, chmod: Optional[str]) -> None:
        shown = one_line(f"{inst.keyword} {src} {dest}")
        if "://" in src or src.startswith("git@"):
            self.out.drop(shown, "ADD of a URL: download it in a build step (curl/wget) or put the file "
                          "next to the recipe")
            return
        rel = posixpath.normpath(src.lstrip("/")) if src.strip("/") else "."
        if rel == ".." or rel.startswith("../"):
            self.out.drop(shown, "outside the build context")
            return
        matches = self.sources(rel)
        if not matches:
            self.out.drop(shown, "not found in the build context (taken to be the recipe's directory)")
            return
        for source in matches:
            if inst.keyword == "ADD" and source.is_file() and tarfile.is_tarfile(source):
                self.out.drop(shown, "ADD of a tar archive: Docker unpacks it, stardock copies files as "
                              "they are; unpack it next to the recipe, or in a build step")
                continue
            if self.out.add_file(source, dest, shown) and chmod:
                target = dest + source.name if dest.endswith("/") and source.is_file() else dest
                self.out.add_build([f"chmod {'-R ' if source.is_dir() else ''}{shlex.quote(chmod)} "
                                    f"{shlex.quote(target)}"])

    def _cmd(self, inst: Instruction) -> None:
        if self.cmd is not None:
            self.out.drop(self.cmd.shown, f"overridden by the CMD on line {inst.line}", self.cmd.line)
        self.cmd = inst

    def _entrypoint(self, inst: Instruction) -> None:
        if self.entrypoint is not None:
            self.out.drop(self.entrypoint.shown, f"overridden by the ENTRYPOINT on line {inst.line}",
                          self.entrypoint.line)
        self.entrypoint = inst

    def _command(self) -> None:
        """ENTRYPOINT and CMD as Docker combines them: exec forms are lists, a shell form is a
        string (run with /bin/sh -c, in stardock as in Docker)."""
        entry = _form(self.entrypoint)
        cmd = _form(self.cmd)
        if isinstance(entry, str) and self.cmd is not None:
            self.out.drop(self.cmd.shown, "Docker ignores CMD when ENTRYPOINT is in shell form",
                          self.cmd.line)
            cmd = None
        if isinstance(entry, list):
            command = entry + (["/bin/sh", "-c", cmd] if isinstance(cmd, str) else cmd or [])
        else:
            command = entry if entry is not None else cmd
        used = [i for i in (self.entrypoint, self.cmd) if i is not None]
        text = command if isinstance(command, str) else shlex.join(command or [])
        reason = refusal(text) if command else None
        if reason:
            for inst in used:
                self.out.drop(inst.shown, reason, inst.line)
        elif command:
            self.out.command = command


def _form(inst: Optional[Instruction]):
    if inst is None:
        return None
    try:
        value = json.loads(inst.args)
    except ValueError:
        return inst.args
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return inst.args


def _pair_shown(keyword: str, key: str, value: str) -> str:
    return one_line(f"{keyword} {key}=…" if SECRET_NAME.search(key) else f"{keyword} {key}={value}")
