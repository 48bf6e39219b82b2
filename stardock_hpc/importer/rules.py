"""What `stardock import` does with the shell commands of a recipe (a Dockerfile RUN, a line of
%post): lift package installs into apt and pip items of build: (at their place in the recipe, with
the recipe's choice about recommended packages), drop the apt housekeeping that stardock does
itself, refuse passwords, secrets and SSH servers, keep the rest as build steps.

A flat command list (`a && b; c`) is written one command per step: a failure stops the build at
any of them, as it stops the RUN. An install is lifted only where the shell after it can be put
back (see state.py); elsewhere it stays a shell command as written.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple, Union

from stardock_hpc.importer.installs import (
    APT_HOUSEKEEPING,
    APT_NEEDS_LISTS,
    APT_UPGRADE,
    SSH_SERVER,
    AptCommand,
    PipCommand,
    is_apt_cleanup,
    is_frontend,
    literal_command,
    read_apt,
    read_pip,
)
from stardock_hpc.importer.shell import ASSIGNMENT, Segment, command_words, one_line, split_flat, summarize, unquote
from stardock_hpc.importer.state import ShellState
from stardock_hpc.spec import AptStep, PipStep

REASON_SECRET = ("sets a password/secret: stardock uses Slurm's authentication; "
                 "secrets never go into images")
REASON_SSHD = ("sets up an SSH server: stardock jobs are reached through Slurm, not SSH, and "
               "images carry no passwords or keys")
REASON_UPGRADE = ("stardock installs on the site's base as it is; upgrading it is the site's job "
                  "(ask for a refreshed base)")

SECRET_NAME = re.compile(r"(?i)passw(?:or)?d|secrets?(?:$|_)|tokens?(?:$|_)|credentials?(?:$|_)"
                         r"|(?:^|_)pass(?:$|_)|(?:^|_)(?:api|private|access|auth|ssh|gpg|secret)?_?keys?(?:$|_)")
_SECRET_TOOLS = {"chpasswd", "chgpasswd", "passwd", "mkpasswd", "htpasswd", "smbpasswd", "sshpass"}
_PASSWORD_OPTION_TOOLS = {"useradd", "usermod", "adduser", "mysql", "mysqladmin"}
_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")
_SSHD = re.compile(r"\bsshd\b|/etc/ssh/|ssh-keygen|authorized_keys|\bservice\s+ssh\b|openssh-server")
_SECRET_FALLBACK = re.compile(r"\b(?:chpasswd|passwd|mkpasswd|htpasswd)\b|--passw")
# credentials written in plain text, and values shaped like well-known tokens and keys
SECRET_TEXT = re.compile(r"(?i)\bpass(?:word|wd)?\b\s*[:=]\s*\S+|\.netrc\b|\.pgpass\b|\.git-credentials\b"
                         r"|\bgh[pousr]_[A-Za-z0-9]{20,}|\bglpat-[A-Za-z0-9_-]{20,}|\bxox[abpr]-[A-Za-z0-9-]{10,}"
                         r"|\bAKIA[0-9A-Z]{16}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----")
_ADDS_REPO = re.compile(r"(?:add-apt|apt-add)-repository|apt-key|/etc/apt/(?:sources\.list|keyrings|trusted)"
                        r"|/usr/share/keyrings|extrepo|\bdpkg\s+(?:-\S*i|--install)\b")
_APT_INSTALL = re.compile(r"\bapt(?:-get)?\b[^;&|]*\binstall\b")

@dataclass(frozen=True)
class Shell:
    """Shell lines kept as the recipe wrote them; `need`: the shell state they run in."""

    lines: Tuple[str, ...]
    need: ShellState
    after: ShellState
    pip: bool = False            # runs pip: stardock's venv must exist by then


Item = Union[Shell, AptStep, PipStep]


@dataclass
class Lifted:
    """What one top-level command became, in order."""

    items: List[Item] = field(default_factory=list)
    dropped: List[Tuple[str, str]] = field(default_factory=list)  # (what, reason): not carried
    notes: List[str] = field(default_factory=list)
    state: ShellState = field(default_factory=ShellState)         # the shell after it


def refusal(text: str, sshd: bool = True) -> Optional[str]:
    """REASON_SECRET if the command sets a password or carries a secret, REASON_SSHD if it
    sets up an SSH server, else None."""
    if _URL_CREDENTIALS.search(text) or SECRET_TEXT.search(text):
        return REASON_SECRET
    commands = command_words(text)
    if not commands and _SECRET_FALLBACK.search(text):
        return REASON_SECRET
    for raw in commands:
        words = [unquote(w, allow_dollar=True) or w for w in raw]
        tool = posixpath.basename(words[0])
        if tool in _SECRET_TOOLS or (tool == "openssl" and words[1:2] == ["passwd"]):
            return REASON_SECRET
        for word in words:
            assign = ASSIGNMENT.fullmatch(word)
            if assign and SECRET_NAME.search(assign.group(1)):
                return REASON_SECRET
            if word.startswith(("--password", "--passwd")) or (
                    tool in _PASSWORD_OPTION_TOOLS and re.fullmatch(r"-p\S*", word)):
                return REASON_SECRET
        for prev, word in zip(["", *words], words):  # curl -u user:password, curl -fsu user:password
            flag = re.fullmatch(r"-[A-Za-z]*u|--user", prev)
            value = word if flag else re.sub(r"^(?:-[A-Za-z]*u|--user=)", "", word)
            if tool in ("curl", "wget") and ":" in value and (value != word or flag):
                return REASON_SECRET
    if sshd and _SSHD.search(text):
        return REASON_SSHD
    return None


class ShellRules:
    """Lifts commands in recipe order; remembers what earlier commands did."""

    def __init__(self, in_image: Callable[[str, str], bool]) -> None:
        self.in_image = in_image        # (path, cwd) -> does the recipe copy it into the image?
        self.repo_added = False         # an apt source was added: later installs stay build steps
        self.told_apt_kept = False
        self.lists_fresh = False        # a kept `apt-get update` ran since the last apt item
        self.foreign_python: Optional[str] = None   # why `pip` is not stardock's venv's (conda on PATH)

    def command(self, text: str, lines: List[str], state: ShellState, split: bool) -> Lifted:
        """One top-level command: `text` is it with continuations joined, `lines` as written,
        `state` the shell it starts in. split=True writes a flat command list one command per
        line even when nothing was lifted (Dockerfile RUN); otherwise such a line is kept as
        written (%post)."""
        out = Lifted(state=state)
        segments = split_flat(text)
        if segments is None:
            return self._compound(text, lines, out)
        keep_apt = self.repo_added or bool(_ADDS_REPO.search(text)) or any(map(self._holds_apt_back, segments))
        if keep_apt and _APT_INSTALL.search(text) and not self.told_apt_kept:
            self.told_apt_kept = True
            out.notes.append("apt installs from here on are kept as build steps: "
                             + ("they install from a repository the recipe adds"
                                if self.repo_added or _ADDS_REPO.search(text)
                                else "they use options, package names or pipes apt items cannot express"))
        items: List[Item] = []
        current = state
        for seg in segments:
            for item in self._segment(seg, keep_apt, current, out):
                if isinstance(item, Shell):
                    current = item.after   # an install leaves the recipe's shell as it was
                items.append(item)
            if _ADDS_REPO.search(seg.text):
                self.repo_added = True
        kept = [line for item in items if isinstance(item, Shell) for line in item.lines]
        if not split and len(kept) == len(segments) and kept == [s.text for s in segments] \
                and all(isinstance(i, Shell) for i in items):
            items = [Shell(tuple(lines), state, current, any(i.pip for i in items if isinstance(i, Shell)))]
        out.items = _merge(items)
        out.state = current
        return out

    def _compound(self, text: str, lines: List[str], out: Lifted) -> Lifted:
        reason = refusal(text)
        if reason:
            out.dropped.append((summarize(text) if reason == REASON_SECRET else one_line(text), reason))
            return out
        if _ADDS_REPO.search(text):
            self.repo_added = True
        pip = bool(re.search(r"\bpip3?\s+(?:-\S+\s+)*install\b", text))
        if _APT_INSTALL.search(text) or pip:
            out.notes.append("package installs inside if/for/case/... or here-documents are kept as "
                             "build steps, not lifted into apt or pip items")
        after = out.state.after_script(text)
        out.items = [Shell(tuple(lines), out.state, after, pip and not self.foreign_python)]
        out.state = after
        return out

    @staticmethod
    def _holds_apt_back(seg: Segment) -> bool:
        """An install that cannot be lifted (`xargs apt-get install`, `-t backports`, a .deb):
        the whole command's apt lines stay, `apt-get update` included."""
        apt = read_apt(literal_command(seg.commands[0])) if len(seg.commands) == 1 else None
        if apt is None:
            return bool(_APT_INSTALL.search(seg.text))
        return apt.sub == "install" and not apt.liftable

    def _keep(self, seg: Segment, state: ShellState, pip: bool = False) -> Shell:
        after = state.after(seg.commands[0], seg.text) if len(seg.commands) == 1 else state
        return Shell((seg.text,), state, after, pip)

    def _segment(self, seg: Segment, keep_apt: bool, state: ShellState, out: Lifted) -> List[Item]:
        secret = refusal(seg.text, sshd=False)
        if secret:
            out.dropped.append((summarize(seg.text), secret))
            return []
        words = literal_command(seg.commands[0]) if len(seg.commands) == 1 else []
        apt = read_apt(words)
        if apt is not None:
            return self._apt_segment(seg, apt, keep_apt, state, out)
        if is_apt_cleanup(words):
            if keep_apt or not state.exact:
                self.lists_fresh = False
                return [self._keep(seg, state)]
            return []  # stardock's apt step does these itself
        if is_frontend(seg.commands[0]):
            return []
        pip = read_pip(words)
        if pip is not None:
            return self._pip_segment(seg, pip, state, out)
        if words[:1] == ["set"] and all(w and re.fullmatch(r"[-+][euxo]+|pipefail", w) for w in words[1:]):
            out.notes.append(f"`{seg.text}` dropped: stardock's build steps run with bash -e")
            return []
        if _SSHD.search(seg.text):
            out.dropped.append((one_line(seg.text), REASON_SSHD))
            return []
        return [self._keep(seg, state)]

    def _apt_segment(self, seg: Segment, apt: AptCommand, keep_apt: bool, state: ShellState, out: Lifted) -> List[Item]:
        if apt.sub in APT_UPGRADE:
            out.dropped.append((one_line(seg.text), REASON_UPGRADE))
            return []
        keep = keep_apt or not state.exact
        if apt.sub != "install":
            if apt.sub == "update" and keep:
                self.lists_fresh = True
            return [self._keep(seg, state)] if keep or apt.sub not in APT_HOUSEKEEPING else []
        if SSH_SERVER in apt.packages:
            out.dropped.append((f"apt package {SSH_SERVER}", REASON_SSHD))
        if keep:
            if not keep_apt and not self.told_apt_kept:
                out.notes.append(f"`{one_line(seg.text, 80)}` kept as a build step: the commands before it "
                                 "change the shell in a way an apt item (which starts a new shell) would undo")
            if all(p == SSH_SERVER for p in apt.packages):
                return []
            text = re.sub(r"\s+", " ", re.sub(rf"(?<!\S)['\"]?{SSH_SERVER}['\"]?(?!\S)", "", seg.text)).strip()
            items: List[Item] = []
            if apt.sub in APT_NEEDS_LISTS and not self.lists_fresh:
                # stardock's own apt items remove the package lists after them, as recipes do
                out.notes.append(f"`apt-get update` added before `{one_line(text, 60)}`: the package lists "
                                 "are not there at this point")
                items.append(Shell(("apt-get update",), state, state))
                self.lists_fresh = True
            return items + [Shell((text,), state, state)]
        for option in apt.dropped_options:
            out.notes.append(f"apt option {option} dropped (stardock runs apt-get with its own options)")
        packages = tuple(str(p) for p in apt.packages if p != SSH_SERVER)
        self.lists_fresh = False
        return [AptStep(packages, apt.recommends)] if packages else []

    def _pip_segment(self, seg: Segment, pip: PipCommand, state: ShellState, out: Lifted) -> List[Item]:
        cwd = state.cwd or "/"
        missing = [f for f in pip.files if not self.in_image(f, cwd)]
        if missing and not state.moved and not missing[0].startswith("/"):
            out.dropped.append((one_line(seg.text), f"reads {missing[0]}, which the recipe does not copy "
                                "into the image; list it under files: and add the step by hand"))
            return []
        if missing:   # after a cd into what an earlier step made (a git clone), or a path it made
            out.notes.append(f"`{one_line(seg.text, 80)}` reads {missing[0]}, which the recipe does not copy "
                             "into the image: kept, as an earlier build step must make it")
        other = pip.foreign or self.foreign_python
        if other:
            out.notes.append(f"`{one_line(seg.text, 80)}` kept as written: it is the pip of another Python "
                             f"({other}), not stardock's Python environment")
            return [self._keep(seg, state)]
        if pip.problem or pip.replaces or not state.exact:
            if pip.problem:
                out.notes.append(f"`{one_line(seg.text, 80)}` kept as a build step: a pip item cannot "
                                 f"express {pip.problem}")
            elif pip.upgrade_pip and pip.requirements == ["pip"]:
                out.notes.append("`pip install --upgrade pip` dropped: stardock's Python environment brings "
                                 "its own pip")
                return []
            return [self._keep(seg, state, pip=True)]
        return [PipStep(tuple(pip.requirements))] if pip.requirements else []


def _merge(items: List[Item]) -> List[Item]:
    """Consecutive shell lines as one Shell (they need only the first's state), consecutive
    installs of one kind as one item."""
    out: List[Item] = []
    for item in items:
        last = out[-1] if out else None
        if isinstance(item, Shell) and isinstance(last, Shell):
            out[-1] = Shell(last.lines + item.lines, last.need, item.after, last.pip or item.pip)
        elif isinstance(item, AptStep) and isinstance(last, AptStep) and last.recommends == item.recommends:
            out[-1] = AptStep(tuple(dict.fromkeys(last.packages + item.packages)), last.recommends)
        elif isinstance(item, PipStep) and isinstance(last, PipStep):
            out[-1] = PipStep(tuple(dict.fromkeys(last.requirements + item.requirements)))
        else:
            out.append(item)
    return out


def redact(text: str) -> str:
    """A recipe line as it may be shown: secret values elided (the name stays, so the user
    finds the line)."""
    text = _URL_CREDENTIALS.sub(lambda m: m.group(0).split("://", 1)[0] + "://…@", text)
    text = re.sub(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S+)",
                  lambda m: f"{m.group(1)}=…" if SECRET_NAME.search(m.group(1)) else m.group(0), text)
    text = re.sub(r"(--passw\w*|\s-[A-Za-z]*u|--user)(=|\s+|(?=\S+:))(?!…)\S+", r"\1\2…", text)
    text = SECRET_TEXT.sub("…", text)
    if re.search(r"\b(?:chpasswd|chgpasswd|passwd|mkpasswd|htpasswd|smbpasswd|sshpass)\b"
                 r"|\b(?:useradd|usermod|adduser|mysql)\b.*\s-p", text):
        keyword = re.match(r"[A-Z]+ |(?:RUN|%post|apt package) ", text)
        head = keyword.group(0) if keyword else ""
        text = head + summarize(text[len(head):])
    return text
