"""What `stardock import` does with the shell commands of a recipe (a Dockerfile RUN, a line of
%post): lift package installs into packages.apt / packages.pip, drop the apt housekeeping that
stardock does itself, refuse passwords, secrets and SSH servers, keep the rest as build steps.

Why commands are split: a Dockerfile RUN is one `sh -c`, whose status is its last command's;
stardock's build steps are lines of one `bash -e` script, where a failure in the middle of an
`a && b` line does not stop the script. One command per line keeps "stop at the first failure".
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from stardock_hpc.importer.shell import ASSIGNMENT, Segment, command_words, one_line, split_flat, summarize, unquote
from stardock_hpc.spec import APT_RE, PIP_RE

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
_ADDS_REPO = re.compile(r"add-apt-repository|apt-key|/etc/apt/(?:sources\.list|keyrings|trusted)"
                        r"|/usr/share/keyrings|extrepo")
_APT_INSTALL = re.compile(r"\bapt(?:-get)?\b[^;&|]*\binstall\b")

_APT_TOOLS = {"apt-get", "apt", "aptitude"}
_APT_FLAGS = {"--yes", "--assume-yes", "--quiet", "--no-install-recommends", "--no-install-suggests",
              "--force-yes", "--allow-unauthenticated", "--fix-missing", "--fix-broken",
              "--allow-downgrades", "--allow-change-held-packages", "--show-upgraded"}
_APT_SHORT = re.compile(r"-[yqfmV]+")
_APT_OPTION = {"-o", "--option"}          # configuration: dropped with a note
_APT_VALUE = {"-t", "--target-release", "--default-release", "-c", "--config-file"}
_APT_HOUSEKEEPING = {"update", "clean", "autoclean"}
_APT_UPGRADE = {"upgrade", "dist-upgrade", "full-upgrade"}
_APT_CACHE = ("/var/lib/apt/lists", "/var/cache/apt")
_SSH_SERVER = "openssh-server"

_PIP = re.compile(r"pip(?:3(?:\.\d+)?)?")
_PYTHON = re.compile(r"python(?:3(?:\.\d+)?)?")
_PIP_FLAGS = {"-U", "--upgrade", "--no-cache-dir", "-q", "--quiet", "-qq", "-v", "--verbose", "--user",
              "--break-system-packages", "--disable-pip-version-check", "--no-warn-script-location",
              "--prefer-binary", "--no-compile", "--compile", "-I", "--ignore-installed", "--force-reinstall"}
_PIP_VALUE = {"--progress-bar", "--root-user-action", "--upgrade-strategy"}
_PIP_FILE = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable"}


@dataclass
class Lifted:
    """What one top-level command became."""

    apt: List[str] = field(default_factory=list)
    pip: List[str] = field(default_factory=list)
    build: List[str] = field(default_factory=list)
    dropped: List[Tuple[str, str]] = field(default_factory=list)  # (what, reason): not carried
    notes: List[str] = field(default_factory=list)
    changes_dir: bool = False


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


def _changes_dir(text: str) -> bool:
    return any(w[0] in ("cd", "pushd", "popd") for w in command_words(text))


def _command(words: Sequence[str]) -> List[Optional[str]]:
    """Literal words of a simple command without leading assignments and sudo."""
    out = [unquote(w) for w in words]
    while out and out[0] is not None and (ASSIGNMENT.fullmatch(out[0]) or out[0] in ("sudo", "-E", "-H")):
        out.pop(0)
    return out


@dataclass
class _Apt:
    sub: str
    packages: List[Optional[str]]
    dropped_options: List[str]
    liftable: bool


def _apt(words: List[Optional[str]]) -> Optional[_Apt]:
    if not words or words[0] is None or posixpath.basename(words[0]) not in _APT_TOOLS:
        return None
    sub, packages, dropped, liftable = "", [], [], True
    rest = list(words[1:])
    while rest:
        word = rest.pop(0)
        if word is None or not word.startswith("-"):
            if not sub:
                sub = word or "?"
            else:
                packages.append(word)
        elif word in _APT_FLAGS or _APT_SHORT.fullmatch(word):
            continue
        elif word in _APT_OPTION or word.startswith(("-o", "--option=")):
            value = rest.pop(0) if word in _APT_OPTION and rest else word
            dropped.append(f"-o {value}" if word in _APT_OPTION else word)
        else:
            liftable = False  # -t RELEASE, -c FILE, ...: cannot be said in packages.apt
            if word in _APT_VALUE and rest:
                rest.pop(0)
    liftable = liftable and all(p is not None and (re.fullmatch(APT_RE, p) or p == _SSH_SERVER)
                                for p in packages)
    return _Apt(sub, packages, dropped, liftable)


def _is_apt_cleanup(words: List[Optional[str]]) -> bool:
    if words[:1] != ["rm"] or None in words:
        return False
    paths = [w for w in words[1:] if w and not w.startswith("-")]
    return bool(paths) and all(str(w).startswith(_APT_CACHE) for w in paths)


def _is_frontend(raw: Sequence[str]) -> bool:
    """`export DEBIAN_FRONTEND=noninteractive`: stardock's apt step sets it itself."""
    literal = [unquote(w) for w in raw]
    if literal[:1] == ["export"]:
        literal = literal[1:]
    return bool(literal) and all(w is not None and w.startswith("DEBIAN_FRONTEND=") for w in literal)


@dataclass
class _Pip:
    requirements: List[str]
    upgrade_pip: bool
    problem: Optional[str]      # why packages.pip cannot say it
    files: List[str]            # local files it reads (-r FILE, -e DIR, ./pkg)


def _pip(words: List[Optional[str]]) -> Optional[_Pip]:
    if not words or words[0] is None:
        return None
    tool = posixpath.basename(words[0])
    if _PIP.fullmatch(tool):
        rest = list(words[1:])
    elif _PYTHON.fullmatch(tool) and words[1:3] == ["-m", "pip"]:
        rest = list(words[3:])
    else:
        return None
    if rest[:1] != ["install"]:
        return None
    rest.pop(0)
    reqs, files, problems, upgrade = [], [], [], False
    while rest:
        word = rest.pop(0)
        if word is None:
            problems.append("a requirement computed at build time")
        elif word in _PIP_FLAGS:
            upgrade = upgrade or word in ("-U", "--upgrade")
        elif word in _PIP_VALUE:
            rest[:1] = []
        elif word.split("=", 1)[0] in _PIP_VALUE:
            continue
        elif word in _PIP_FILE or re.fullmatch(r"-[rce]\S+|--(?:requirement|constraint|editable)=\S+", word):
            flag, value = (word, rest.pop(0) if rest else None) if word in _PIP_FILE else (
                (word[:2], word[2:]) if word[1] != "-" else tuple(word.split("=", 1)))
            problems.append(f"{flag} {value if value is not None else '(computed)'}")
            if value and "://" not in value:
                files.append(value)
        elif word.startswith("-"):
            problems.append(f"option {word}")
            if "=" not in word and rest and rest[0] is not None and not rest[0].startswith("-") and \
                    word in ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--target",
                             "-t", "--prefix", "--root", "--no-binary", "--only-binary", "--platform"):
                problems[-1] += f" {rest.pop(0)}"
        elif "/" in word or word.startswith(".") or word.endswith((".whl", ".tar.gz", ".zip")):
            problems.append(word)
            if "://" not in word:
                files.append(word)
        elif re.fullmatch(PIP_RE, word):
            reqs.append(re.sub(r"\s+", "", word))
        else:
            problems.append(f"requirement {word!r}")
    return _Pip(reqs, upgrade and "pip" in reqs, "; ".join(problems) or None, files)


class ShellRules:
    """Lifts commands in recipe order; remembers what earlier commands did."""

    def __init__(self, in_image: Callable[[str, str], bool]) -> None:
        self.in_image = in_image        # (path, cwd) -> does the recipe copy it into the image?
        self.repo_added = False         # an apt source was added: later installs stay build steps
        self.told_apt_kept = False

    def command(self, text: str, lines: List[str], cwd: str, split: bool) -> Lifted:
        """One top-level command: `text` is it with continuations joined, `lines` as written.
        split=True writes a flat command list one command per line even when nothing was lifted
        (Dockerfile RUN); otherwise such a line is kept as written (%post)."""
        out = Lifted()
        segments = split_flat(text)
        if segments is None:
            return self._compound(text, lines, out)
        keep_apt = self.repo_added or bool(_ADDS_REPO.search(text)) or any(map(self._holds_apt_back, segments))
        if keep_apt and _APT_INSTALL.search(text) and not self.told_apt_kept:
            self.told_apt_kept = True
            out.notes.append("apt installs from here on are kept as build steps: "
                             + ("they install from a repository the recipe adds"
                                if self.repo_added or _ADDS_REPO.search(text)
                                else "they use options, package names or pipes packages.apt cannot express"))
        kept: List[str] = []
        for seg in segments:
            kept += self._segment(seg, cwd, keep_apt, out)
            if _ADDS_REPO.search(seg.text):
                self.repo_added = True
        if not split and kept == [s.text for s in segments]:
            kept = list(lines)
        out.build = kept
        out.changes_dir = _changes_dir(text)
        return out

    def _compound(self, text: str, lines: List[str], out: Lifted) -> Lifted:
        reason = refusal(text)
        if reason:
            out.dropped.append((summarize(text) if reason == REASON_SECRET else one_line(text), reason))
            return out
        if _ADDS_REPO.search(text):
            self.repo_added = True
        if _APT_INSTALL.search(text) or re.search(r"\bpip3?\s+(?:-\S+\s+)*install\b", text):
            out.notes.append("package installs inside if/for/case/... or here-documents are kept as "
                             "build steps, not lifted into packages")
        out.build = list(lines)
        out.changes_dir = _changes_dir(text)
        return out

    @staticmethod
    def _holds_apt_back(seg: Segment) -> bool:
        """An install that cannot be lifted (`xargs apt-get install`, `-t backports`, a .deb):
        the whole command's apt lines stay, `apt-get update` included."""
        apt = _apt(_command(seg.commands[0])) if len(seg.commands) == 1 else None
        if apt is None:
            return bool(_APT_INSTALL.search(seg.text))
        return apt.sub == "install" and not apt.liftable

    def _segment(self, seg: Segment, cwd: str, keep_apt: bool, out: Lifted) -> List[str]:
        secret = refusal(seg.text, sshd=False)
        if secret:
            out.dropped.append((summarize(seg.text), secret))
            return []
        words = _command(seg.commands[0]) if len(seg.commands) == 1 else []
        apt = _apt(words)
        if apt is not None:
            return self._apt_segment(seg, apt, keep_apt, out)
        if keep_apt and _is_apt_cleanup(words):
            return [seg.text]
        if _is_apt_cleanup(words) or _is_frontend(seg.commands[0]):
            return []  # stardock's apt step does these itself
        pip = _pip(words)
        if pip is not None:
            return self._pip_segment(seg, pip, cwd, out)
        if words[:1] == ["set"] and all(w and re.fullmatch(r"[-+][euxo]+|pipefail", w) for w in words[1:]):
            out.notes.append(f"`{seg.text}` dropped: stardock's build steps run with bash -e")
            return []
        if _SSHD.search(seg.text):
            out.dropped.append((one_line(seg.text), REASON_SSHD))
            return []
        return [seg.text]

    def _apt_segment(self, seg: Segment, apt: _Apt, keep_apt: bool, out: Lifted) -> List[str]:
        if apt.sub in _APT_UPGRADE:
            out.dropped.append((one_line(seg.text), REASON_UPGRADE))
            return []
        if apt.sub != "install":
            return [seg.text] if keep_apt or apt.sub not in _APT_HOUSEKEEPING else []
        if _SSH_SERVER in apt.packages:
            out.dropped.append((f"apt package {_SSH_SERVER}", REASON_SSHD))
        if keep_apt:
            if all(p == _SSH_SERVER for p in apt.packages):
                return []
            return [re.sub(r"\s+", " ", re.sub(rf"(?<!\S)['\"]?{_SSH_SERVER}['\"]?(?!\S)", "", seg.text)).strip()]
        for option in apt.dropped_options:
            out.notes.append(f"apt option {option} dropped (stardock runs apt-get with its own options)")
        out.apt += [str(p) for p in apt.packages if p != _SSH_SERVER]
        return []

    def _pip_segment(self, seg: Segment, pip: _Pip, cwd: str, out: Lifted) -> List[str]:
        missing = [f for f in pip.files if not self.in_image(f, cwd)]
        if missing:
            out.dropped.append((one_line(seg.text), f"reads {missing[0]}, which the recipe does not copy "
                                "into the image; list it under files: and add the step by hand"))
            return []
        if pip.problem:
            out.notes.append(f"`{one_line(seg.text, 80)}` kept as a build step: packages.pip cannot "
                             f"express {pip.problem}")
            return [seg.text]
        if pip.upgrade_pip:
            out.notes.append("`pip install --upgrade pip` dropped: stardock's Python environment brings "
                             "its own pip")
        out.pip += [r for r in pip.requirements if not (pip.upgrade_pip and r == "pip")]
        return []


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
