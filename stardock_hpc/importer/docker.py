"""Dockerfiles and Containerfiles for `stardock import`: read the instructions the way BuildKit
does (continuations, comment lines inside them, the escape directive, here-documents) and map
each onto the spec. The environment is the final build stage, with the stages it is built FROM;
what other stages build is listed as not carried. The build context is the recipe's directory,
less what its .dockerignore excludes (dockercopy.py)."""
from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.importer.base import RecipeImporter, SiteBases
from stardock_hpc.importer.dockercopy import copy_instruction
from stardock_hpc.importer.dockerlex import Instruction
from stardock_hpc.importer.rules import REASON_SECRET, SECRET_NAME, refusal
from stardock_hpc.importer.shell import VARIABLE, ShellSyntax, dedent_script, one_line, script_commands
from stardock_hpc.importer.spec_builder import PATH_MARK, SpecBuilder
from stardock_hpc.importer.state import ShellState
from stardock_hpc.importer.words import Unresolved, docker_words

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
_INSTRUCTIONS = set(_NOT_CARRIED) | {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "ENV", "ADD", "COPY",
                                     "ENTRYPOINT", "ARG"}
_FOREIGN_PYTHON = re.compile(r"conda|mamba|miniforge|venv|virtualenv|pyenv")
RUN_ARGS_REPLACE = ("arguments given at run time replace the whole command, the ENTRYPOINT too "
                    "(Docker keeps the ENTRYPOINT and passes them to it)")


@dataclass
class Stage:
    start: int                   # index of its FROM among the instructions
    end: int                     # index after its last instruction
    name: str                    # "" when it has no AS name
    image: str                   # the FROM's image, as written

    def lines(self, instructions: List[Instruction]) -> str:
        last = instructions[self.end - 1].line + len(instructions[self.end - 1].lines) - 1
        return f"lines {instructions[self.start].line}-{last}"


class DockerImporter(RecipeImporter):
    RUN_TIME_ONLY = "HOME, USER, ... are known only at run time"

    def __init__(self, path: Path, builder: SpecBuilder, bases: SiteBases) -> None:
        super().__init__(path, builder, bases)
        self.recipe = path
        self.workdir = "/"
        self.cmd: Optional[Instruction] = None
        self.entrypoint: Optional[Instruction] = None
        self.global_args: Dict[str, str] = {}
        self.args: Dict[str, str] = {}          # the stage's ARGs: exported in its build steps
        self.instructions: List[Instruction] = []
        self.stages: List[Stage] = []

    def note_unset(self, name: str) -> None:
        self.note_once(f"${name} is not set by the recipe: expanded to nothing, as Docker does on a "
                       "Debian base")

    def note_once(self, text: str) -> None:
        if not any(text in n for n in self.out.notes):
            self.out.note(text)

    def run(self, instructions: List[Instruction]) -> None:
        self.instructions = instructions
        froms = [i for i, inst in enumerate(instructions) if inst.keyword == "FROM"]
        if not froms:
            raise UsageError("no FROM instruction: not a Dockerfile")
        first = instructions[0]
        if first.keyword not in ("FROM", "ARG"):
            raise UsageError(f"line {first.line}: a Dockerfile starts with FROM (or ARG), not "
                             f"{one_line(first.lines[0], 60)!r}")
        for before, inst in zip([None, *instructions], instructions):
            if inst.keyword not in _INSTRUCTIONS:
                raise UsageError(_unknown(inst, before))
        self.stages = [Stage(a, b, _stage_name(instructions[a]), instructions[a].args)
                       for a, b in zip(froms, froms[1:] + [len(instructions)])]
        chain = self._chain()
        self.vars = self.global_args  # a global ARG's default may use the ones before it
        for inst in instructions[:froms[0]]:
            if inst.keyword != "ARG":
                raise UsageError(f"line {inst.line}: only ARG may come before the first FROM")
            for word in self._words(inst) or []:
                key, _, value = word.partition("=")
                self.global_args[key] = value
                if not any(re.search(rf"\$\{{?{re.escape(key)}\b", instructions[s.start].args) for s in chain):
                    self.out.drop(_pair_shown("ARG", key, value) if "=" in word else f"ARG {key}",
                                  "declared before FROM: only FROM lines see it", inst.line)
        for stage in self.stages:
            if stage not in chain:
                self.out.drop(f"{instructions[stage.start].shown} ({stage.lines(instructions)})",
                              "an earlier build stage of a multi-stage build: stardock builds one image, "
                              "the final stage and the stages it is FROM; what this stage builds is not "
                              "in it (the COPY --from lines that take from it are listed too)",
                              instructions[stage.start].line)
        commands = {i.line: "\n".join([i.args, *(line for _d, b in i.heredocs for line in b)])
                    for s in chain for i in instructions[s.start:s.end] if i.keyword == "RUN"}
        self._from(instructions[chain[0].start], commands)
        for n, stage in enumerate(chain):
            if n:
                self._next_stage(stage, chain[n - 1])
            for inst in instructions[stage.start + 1:stage.end]:
                self.out.line = inst.line
                handler = getattr(self, f"_{inst.keyword.lower()}", None)
                if inst.keyword in _NOT_CARRIED and inst.keyword != "WORKDIR":
                    self.out.drop(inst.shown, _NOT_CARRIED[inst.keyword])
                elif handler is not None:
                    handler(inst)
        self.out.line = None
        self._command()

    def _chain(self) -> List[Stage]:
        """The final stage and the stages it is built FROM, first first."""
        chain = [self.stages[-1]]
        while True:
            image = [w for w in chain[0].image.split() if not w.startswith("--")][:1]
            parent = self.stage(image[0]) if image else None
            if parent is None or parent in chain:
                return chain
            chain.insert(0, parent)

    def stage(self, ref: str) -> Optional[Stage]:
        """The earlier stage a FROM or COPY --from names (by its AS name or its number)."""
        for number, stage in enumerate(self.stages):
            if ref and (ref.lower() == stage.name.lower() or ref == str(number)):
                return stage
        return None

    def _words(self, inst: Instruction, split: bool = True) -> Optional[List[str]]:
        try:
            return docker_words(inst.args, self.lookup, split=split)
        except Unresolved as exc:
            self.drop_unresolved(inst.shown, exc, inst.line)
        except ShellSyntax as exc:
            self.out.drop(inst.shown, f"cannot be read: {exc}", inst.line)
        return None

    def _from(self, inst: Instruction, commands: Dict[int, str]) -> None:
        self.out.line = inst.line
        words = [w for w in inst.args.split() if not w.startswith("--platform")]
        if len(words) != len(inst.args.split()):
            self.note_once("FROM --platform dropped: the site's base is built for the cluster")
        self.vars = dict(self.global_args)
        image = (self._words(Instruction("FROM", words[0] if words else "", [], inst.line)) or [""])[0]
        self.vars = {}  # a stage sees a global ARG only where it declares it again
        if not image:
            raise UsageError(f"line {inst.line}: {inst.shown}: no image named")
        self.set_base(image, f"FROM {image}", commands)

    def _next_stage(self, stage: Stage, parent: Stage) -> None:
        inst = self.instructions[stage.start]
        self.out.line = inst.line
        self.out.note(f"{inst.shown}: built on stage {parent.name or self.stages.index(parent)} "
                      f"({parent.lines(self.instructions)}), imported before it as Docker builds it")
        for key in self.args:
            self.vars.pop(key, None)   # ARGs are per stage; ENV carries over
        self.args = {}

    def _state(self) -> ShellState:
        """The shell a RUN starts in: the WORKDIR, with the stage's ARGs set."""
        return ShellState(self.workdir, tuple(_export(k, v) for k, v in self.args.items()))

    def _run(self, inst: Instruction) -> None:
        args, first = inst.args, inst.lines[0].lstrip()[3:].lstrip()
        while args.startswith("--"):
            flag, _, args = args.partition(" ")
            first = first.partition(" ")[2].lstrip()
            args = args.lstrip()
            if not self._run_flag(inst, flag):
                return
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
        self.out.add_lifted(self.rules.command(args, rest, self._state(), split=True), "RUN")

    def _run_flag(self, inst: Instruction, flag: str) -> bool:
        """RUN --mount / --network / --security; False when the RUN is not carried for it."""
        name, _, value = flag[2:].partition("=")
        if name != "mount":
            self.out.note(f"RUN {flag} dropped: stardock's build steps run with the engine's defaults")
            return True
        options = dict(part.partition("=")[::2] for part in value.split(","))
        kind = options.get("type", "bind")
        if kind in ("secret", "ssh"):
            self.out.drop(inst.shown, REASON_SECRET + " (a build secret mount)")
            return False
        if kind in ("cache", "tmpfs"):
            self.out.note(f"RUN {flag} dropped: a {kind} mount only speeds the step up or holds scratch "
                          "files; what the step builds is the same")
            return True
        self.out.drop(inst.shown, f"needs {flag}: files bound into the step only while it runs, which "
                      "stardock cannot give a build step; copy them with COPY (a files: item) and run the "
                      "step after it")
        return False

    def _run_heredoc(self, inst: Instruction, args: str) -> None:
        delim, body = inst.heredocs[0]
        if len(inst.heredocs) != 1 or not re.fullmatch(r"<<-?([\"']?)" + re.escape(delim) + r"\1", args):
            # `RUN python3 <<EOF` / `RUN cat <<EOF > f`: the body is the command's input, as in a
            # shell here-document, so the shell text with its bodies means the same
            lines = [args] + [line for d, b in inst.heredocs for line in (*b, d)]
            self.out.add_lifted(self.rules.command("\n".join(lines), lines, self._state(), split=True), "RUN")
            return
        if body and body[0].startswith("#!") and not re.search(r"\b(?:ba)?sh\b", body[0]):
            self.out.drop(inst.shown, f"a here-document script for {body[0][2:].strip()}: put it in "
                          "a file under files: and run it in a build step")
            return
        state = self._state()
        for text, lines, _index in script_commands(body):
            lifted = self.rules.command(text, lines, state, split=False)
            self.out.add_lifted(lifted, "RUN")
            state = lifted.state

    def _env(self, inst: Instruction) -> None:
        for key, value in self._pairs(inst) or []:
            self.out.add_env(key, value, _pair_shown("ENV", key, value))
            if not SECRET_NAME.search(key):
                self.vars[key] = value
            head = value.split(PATH_MARK)[0] if key == "PATH" and PATH_MARK in value else ""
            python = next((d for d in head.split(":") if _FOREIGN_PYTHON.search(d)), None)
            if python:
                self.rules.foreign_python = f"{python}/pip, first on PATH from line {inst.line}"

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
                self.args[key] = value
                self.out.note(f"ARG {key}: a variable of the build steps (stardock has no --build-arg)")

    def _workdir(self, inst: Instruction) -> None:
        words = self._words(inst, split=False)
        if words:
            self.workdir = posixpath.normpath(posixpath.join(self.workdir, words[0]))
            self.out.workdirs.add(self.workdir)
        self.out.drop(inst.shown, _NOT_CARRIED["WORKDIR"])

    def _add(self, inst: Instruction) -> None:
        copy_instruction(self, inst)

    def _copy(self, inst: Instruction) -> None:
        copy_instruction(self, inst)

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
        string (run with /bin/sh -c, in stardock as in Docker). A spec has one command, which
        arguments given at run time replace: where Docker would keep the ENTRYPOINT in front of
        them, the report says so."""
        entry = _form(self.entrypoint)
        cmd = _form(self.cmd)
        for inst in (self.entrypoint, self.cmd):
            if inst is not None and inst.args.startswith("[") and isinstance(_form(inst), str):
                self.out.line = inst.line
                self.out.note(f"{inst.shown}: not a JSON list (JSON needs double quotes), so Docker runs it "
                              "as a shell command line, and so does the spec's command")
        self.out.line = None
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
            return
        if not command:
            return
        self.out.command = command
        if self.entrypoint is not None:
            self.out.line = self.entrypoint.line
            joined = f" and CMD (line {self.cmd.line})" if self.cmd is not None and cmd is not None else ""
            shown = command if isinstance(command, str) else shlex.join(command)
            self.out.note(f"ENTRYPOINT{joined} became the command `{one_line(shown, 80)}`: "
                          + (RUN_ARGS_REPLACE if isinstance(entry, list) else
                             "arguments given at run time replace it (Docker ignores them with a shell-form "
                             "ENTRYPOINT)"))
            self.out.line = None


def _unknown(inst: Instruction, before: Optional[Instruction]) -> str:
    text = f"line {inst.line}: unknown instruction {inst.keyword} ({one_line(inst.lines[0], 60)!r}): Docker " \
           "rejects this Dockerfile too"
    if before is not None and before.keyword == "RUN" and not before.lines[-1].rstrip().endswith("\\"):
        last = before.line + len(before.lines) - 1
        text += f"; is the continuation backslash at the end of line {last} missing?"
    return text


def _stage_name(inst: Instruction) -> str:
    words = inst.args.split()
    return words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else ""


def _export(key: str, value: str) -> str:
    """`export KEY=value` as a shell line; the base's $PATH stays $PATH."""
    return f"export {key}=" + '"$PATH"'.join(shlex.quote(part) if part else "" for part in value.split(PATH_MARK)) \
        if PATH_MARK in value else f"export {key}={shlex.quote(value)}"


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
