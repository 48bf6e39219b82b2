"""Package installs in a recipe's shell commands, read word by word: `apt-get install` (with the
recipe's choice about recommended packages) and `pip install` (with what a pip item of the spec
can say, and what it cannot)."""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

from stardock_hpc.importer.shell import ASSIGNMENT, unquote
from stardock_hpc.spec import APT_RE, PIP_RE

SSH_SERVER = "openssh-server"
_APT_TOOLS = {"apt-get", "apt", "aptitude"}
_APT_FLAGS = {"--yes", "--assume-yes", "--quiet", "--no-install-suggests",
              "--force-yes", "--allow-unauthenticated", "--fix-missing", "--fix-broken",
              "--allow-downgrades", "--allow-change-held-packages", "--show-upgraded"}
_APT_SHORT = re.compile(r"-[yqfmV]+")
_APT_OPTION = {"-o", "--option"}          # configuration: dropped with a note
_APT_VALUE = {"-t", "--target-release", "--default-release", "-c", "--config-file"}
APT_HOUSEKEEPING = {"update", "clean", "autoclean"}
APT_NEEDS_LISTS = {"install", "build-dep", "source", "download", "satisfy", "reinstall"}
_NO_RECOMMENDS = {"--no-install-recommends", "-R", "--without-recommends"}   # apt-get / aptitude
_RECOMMENDS = {"--install-recommends", "-r", "--with-recommends"}
_RECOMMENDS_OPTION = re.compile(r"(?i)APT::Install-Recommends\s*=\s*[\"']?(true|false|1|0|yes|no)[\"']?")
APT_UPGRADE = {"upgrade", "dist-upgrade", "full-upgrade"}
_APT_CACHE = ("/var/lib/apt/lists", "/var/cache/apt")

_PIP = re.compile(r"pip(?:3(?:\.\d+)?)?")
_PYTHON = re.compile(r"python(?:3(?:\.\d+)?)?")
_PIP_FLAGS = {"--no-cache-dir", "-q", "--quiet", "-qq", "-v", "--verbose", "--user",
              "--break-system-packages", "--disable-pip-version-check", "--no-warn-script-location",
              "--prefer-binary", "--no-compile", "--compile"}
# with these, pip replaces what is installed already (stardock's venv sees Debian's Python
# packages): a pip item cannot say it, so the command stays as written
_PIP_REPLACES = {"-U", "--upgrade", "-I", "--ignore-installed", "--force-reinstall"}
_SYSTEM_BIN = ("/usr/bin", "/usr/local/bin", "/bin", "/usr/local/sbin")
_PIP_VALUE = {"--progress-bar", "--root-user-action", "--upgrade-strategy"}
_PIP_FILE = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable"}
_PIP_GLOBAL_VALUE = {"--proxy", "--cache-dir", "--log", "--timeout", "--retries", "--cert", "--client-cert",
                     "--exists-action", "--trusted-host", "--python"}


def literal_command(words: Sequence[str]) -> List[Optional[str]]:
    """Literal words of a simple command without leading assignments and sudo."""
    out = [unquote(w) for w in words]
    while out and out[0] is not None and (ASSIGNMENT.fullmatch(out[0]) or out[0] in ("sudo", "-E", "-H")):
        out.pop(0)
    return out


@dataclass
class AptCommand:
    sub: str
    packages: List[Optional[str]]
    dropped_options: List[str]
    liftable: bool
    recommends: bool            # apt's default: recommended packages too


def read_apt(words: List[Optional[str]]) -> Optional[AptCommand]:
    if not words or words[0] is None or posixpath.basename(words[0]) not in _APT_TOOLS:
        return None
    sub, packages, dropped, liftable, recommends = "", [], [], True, True
    rest = list(words[1:])
    while rest:
        word = rest.pop(0)
        if word is None or not word.startswith("-"):
            if not sub:
                sub = word or "?"
            else:
                packages.append(word)
        elif word in _NO_RECOMMENDS or word in _RECOMMENDS:
            recommends = word in _RECOMMENDS
        elif word in _APT_FLAGS or _APT_SHORT.fullmatch(word):
            continue
        elif word in _APT_OPTION or word.startswith(("-o", "--option=")):
            value = rest.pop(0) if word in _APT_OPTION and rest else word
            value = value if word in _APT_OPTION else re.sub(r"^(?:-o|--option=)", "", value or "")
            said = _RECOMMENDS_OPTION.fullmatch(value or "")
            if said:
                recommends = said.group(1).lower() in ("true", "1", "yes")
            else:
                dropped.append(f"-o {value}")
        else:
            liftable = False  # -t RELEASE, -c FILE, ...: cannot be said in packages.apt
            if word in _APT_VALUE and rest:
                rest.pop(0)
    liftable = liftable and all(p is not None and (re.fullmatch(APT_RE, p) or p == SSH_SERVER)
                                for p in packages)
    return AptCommand(sub, packages, dropped, liftable, recommends)


def is_apt_cleanup(words: List[Optional[str]]) -> bool:
    if words[:1] != ["rm"] or None in words:
        return False
    paths = [w for w in words[1:] if w and not w.startswith("-")]
    return bool(paths) and all(str(w).startswith(_APT_CACHE) for w in paths)


def is_frontend(raw: Sequence[str]) -> bool:
    """`export DEBIAN_FRONTEND=noninteractive`: stardock's apt step sets it itself."""
    literal = [unquote(w) for w in raw]
    if literal[:1] == ["export"]:
        literal = literal[1:]
    return bool(literal) and all(w is not None and w.startswith("DEBIAN_FRONTEND=") for w in literal)


@dataclass
class PipCommand:
    requirements: List[str]
    upgrade_pip: bool
    problem: Optional[str]      # why a pip item cannot say it
    files: List[str]            # local files it reads (-r FILE, -e DIR, ./pkg)
    replaces: bool              # --upgrade, --force-reinstall...: pip replaces what is installed
    foreign: Optional[str]      # the program, when it is the pip of another Python (/opt/conda/bin/pip)


def read_pip(words: List[Optional[str]]) -> Optional[PipCommand]:
    if not words or words[0] is None:
        return None
    tool = posixpath.basename(words[0])
    if _PIP.fullmatch(tool):
        rest = list(words[1:])
    elif _PYTHON.fullmatch(tool) and words[1:3] == ["-m", "pip"]:
        rest = list(words[3:])
    else:
        return None
    while rest and rest[0] is not None and rest[0].startswith("-"):   # pip's general options
        option = rest.pop(0)
        if option in _PIP_GLOBAL_VALUE and rest:
            rest.pop(0)
    if rest[:1] != ["install"]:
        return None
    foreign = words[0] if "/" in words[0] and posixpath.dirname(words[0]) not in _SYSTEM_BIN else None
    rest.pop(0)
    reqs, files, problems, upgrade, replaces = [], [], [], False, False
    while rest:
        word = rest.pop(0)
        if word is None:
            problems.append("a requirement computed at build time")
        elif word in _PIP_REPLACES:
            upgrade = upgrade or word in ("-U", "--upgrade")
            replaces = True
        elif word in _PIP_FLAGS:
            continue
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
    return PipCommand(reqs, upgrade and "pip" in reqs, "; ".join(problems) or None, files, replaces, foreign)
