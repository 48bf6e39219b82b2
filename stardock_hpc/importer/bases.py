"""The recipe's base image, on a site that offers its own bases (`stardock site show`).

One rule: a base the site offers is used as it is. Another image is placed in its family by its
name (debian, ubuntu, python, gcc, continuumio/miniconda3, ... are Debian-family; centos,
rockylinux, fedora, alpine, ... are not) or, when the name does not say, by the package manager
the recipe itself runs (apt-get: Debian-family). A Debian-family image becomes the site's
nearest base of that family, and what the image had on top of plain Debian (its Python, its
compilers, conda) is carried as build items where Debian's mirror or a known installer has it;
all of that is reported first, as the change it is. An image of another family, or one whose
family cannot be told, is refused (exit 2): its commands would not work on the site's bases.
`stardock import --base NAME` chooses the base instead; the stand-ins still apply.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.site import BaseImage

DEBIAN_RELEASES = {"7": "wheezy", "8": "jessie", "9": "stretch", "10": "buster", "11": "bullseye",
                   "12": "bookworm", "13": "trixie", "14": "forky"}
UBUNTU_RELEASES = {"14.04": "trusty", "16.04": "xenial", "18.04": "bionic", "20.04": "focal",
                   "22.04": "jammy", "24.04": "noble"}
_CODENAMES = set(DEBIAN_RELEASES.values()) | {"sid", "testing", "stable", "oldstable"}
_DOCKER_HUB = re.compile(r"^(?:(?:index\.|registry-1\.)?docker\.io/)?(?:library/)?")
# families by the name of the image (a path component) or a word of its tag
_OTHER_FAMILIES = {
    "rhel": ("centos", "rockylinux", "rocky", "almalinux", "fedora", "amazonlinux", "oraclelinux", "rhel",
             "ubi", "ubi7", "ubi8", "ubi9", "sl", "scientificlinux", "opensciencegrid"),
    "alpine": ("alpine",),
    "suse": ("opensuse", "sles", "sle15", "leap", "tumbleweed"),
    "arch": ("archlinux", "arch"),
    "busybox": ("busybox", "scratch"),
    "gentoo": ("gentoo",),
}
_FAMILY_NAMES = {"rhel": "CentOS/RHEL (yum, dnf, rpm)", "alpine": "Alpine (apk, musl)", "suse": "SUSE (zypper)",
                 "arch": "Arch Linux (pacman)", "busybox": "empty or BusyBox (no package manager)",
                 "gentoo": "Gentoo (emerge)", "debian": "Debian"}
# what the recipe runs tells the family of an image whose name does not
_EVIDENCE = (("debian", r"apt-get|apt|aptitude|dpkg|add-apt-repository|apt-add-repository"),
             ("rhel", r"yum|dnf|microdnf|rpm"), ("alpine", r"apk"), ("suse", r"zypper"), ("arch", r"pacman"))
_PYTHON_DEV = ("python3-dev",)
_BUILD = ("build-essential", "pkg-config", "git", "curl", "wget", "ca-certificates", "libffi-dev",
          "libssl-dev", "zlib1g-dev", "libbz2-dev", "liblzma-dev")
CONDA_PREFIX = "/opt/conda"


@dataclass(frozen=True)
class StandIn:
    """What stands in, on the site's base, for the software the recipe's image had: carried as the
    first build items (apt packages, stardock's Python environment, shell steps, env)."""

    has: str = ""                          # what the image had, for the report ("Python 3.7, pip")
    apt: Tuple[str, ...] = ()
    venv: bool = False                     # `python`/`pip` were the image's: stardock's venv stands in
    steps: Tuple[str, ...] = ()
    env: Tuple[Tuple[str, str], ...] = ()  # PATH values may end with :$PATH
    missing: str = ""                      # what is not carried, said in the report
    foreign_python: bool = False           # `pip` is another Python's (conda's): not stardock's venv


@dataclass(frozen=True)
class Image:
    ref: str                    # as the recipe names it, without docker.io/library/
    repo: str                   # "python", "continuumio/miniconda3"
    tag: str
    family: Optional[str]       # "debian", "rhel", "alpine", ...; None: the name does not say
    distro: str = ""            # "debian", "ubuntu" or "" (derived image)
    release: str = ""           # a codename: "bookworm", "focal"
    stand_in: StandIn = field(default_factory=StandIn)

    @property
    def last(self) -> str:
        return self.repo.rsplit("/", 1)[-1]


def parse_image(ref: str) -> Image:
    """An image reference as a family, distribution, release and stand-in, as far as its name says."""
    name = _DOCKER_HUB.sub("", ref.split("@", 1)[0], count=1)
    repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    tag = tag or "latest"
    parts = [p.lower() for p in repo.split("/")]
    if "." in parts[0] or ":" in parts[0] or parts[0] == "localhost":
        parts = parts[1:] or parts   # a registry host: ghcr.io/..., quay.io/...
    last, words = parts[-1], set(re.split(r"[-_.]", tag.lower()))
    for family, names in _OTHER_FAMILIES.items():
        if any(p in names for p in parts) or (family == "alpine" and "alpine" in words):
            return Image(ref, repo, tag, family)
    release = next((w for w in words if w in _CODENAMES), "")
    if last == "debian":
        release = release or DEBIAN_RELEASES.get(tag.split(".")[0].split("-")[0], "")
        return Image(ref, repo, tag, "debian", "debian", release)
    if last == "ubuntu":
        version = tag.split("-")[0]
        codename = UBUNTU_RELEASES.get(version, version if version in UBUNTU_RELEASES.values() else "")
        return Image(ref, repo, tag, "debian", "ubuntu", codename)
    stand_in = _stand_in("/".join(parts), last, tag, words)
    if stand_in is None:
        return Image(ref, repo, tag, None)
    distro = "ubuntu" if parts[0] in ("jupyter", "rocker", "condaforge", "mambaorg") else "debian"
    return Image(ref, repo, tag, "debian", distro, release, stand_in)


def _stand_in(path: str, last: str, tag: str, words: set) -> Optional[StandIn]:
    """For the Debian-family images the importer knows (None for the others)."""
    if last in ("python", "pypy"):
        slim = "slim" in words
        version = tag.split("-")[0] if tag[:1].isdigit() else ""
        return StandIn(f"Python {version} with pip".replace("  ", " ") + ("" if slim else " and build tools"),
                       _PYTHON_DEV + (() if slim else _BUILD), venv=True,
                       missing=f"the image's own Python {version} (Debian's python3 stands in)".replace("  ", " "))
    if last == "gcc":
        return StandIn("GCC and gfortran", ("build-essential", "gfortran"),
                       missing=f"GCC {tag} itself (Debian's gcc stands in)")
    if last == "buildpack-deps":
        apt = ("ca-certificates", "curl", "wget", "gnupg") + (("git",) if "scm" in words or "curl" not in words else ())
        return StandIn("build tools", apt + (_BUILD if not words & {"curl", "scm"} else ()))
    if path in ("continuumio/miniconda3", "continuumio/miniconda"):
        version = "3" if path.endswith("3") else "2"
        url = f"https://repo.anaconda.com/miniconda/Miniconda{version}-latest-Linux-$(uname -m).sh"
        return StandIn(f"conda (Miniconda{version}) in {CONDA_PREFIX}",
                       ("bzip2", "ca-certificates", "curl", "git", "procps", "wget"),
                       steps=(f'curl -fsSL -o /tmp/miniconda.sh "{url}"',
                              f"bash /tmp/miniconda.sh -b -p {CONDA_PREFIX}", "rm -f /tmp/miniconda.sh"),
                       env=(("PATH", f"{CONDA_PREFIX}/bin:$PATH"), ("LANG", "C.UTF-8"), ("LC_ALL", "C.UTF-8")),
                       missing=("the image's conda version" + ("" if tag == "latest" else f" ({tag})")
                                + ": the latest Miniconda is installed, from repo.anaconda.com"),
                       foreign_python=True)
    if path.startswith(("continuumio/", "condaforge/", "mambaorg/")):
        return StandIn(missing="conda and the Python it brings (install it in a build step)")
    if path.startswith("jupyter/"):
        return StandIn("Python with pip", _PYTHON_DEV, venv=True,
                       missing="Jupyter, conda in /opt/conda and the jovyan user of the image")
    if last == "r-base" or path.startswith("rocker/"):
        return StandIn("R", ("r-base",), missing=f"R {tag} itself and the image's extra R packages "
                       "(Debian's r-base stands in)")
    tools = {"node": ("Node.js", ("nodejs", "npm")), "openjdk": ("Java", ("default-jdk-headless",)),
             "eclipse-temurin": ("Java", ("default-jdk-headless",)), "golang": ("Go", ("golang-go",)),
             "rust": ("Rust", ("rustc", "cargo")), "perl": ("Perl", ("perl",)), "ruby": ("Ruby", ("ruby-full",)),
             "neurodebian": ("", ())}
    if last in tools:
        has, apt = tools[last]
        return StandIn(has, apt, missing=f"{has} {tag} itself (Debian's stands in)" if has else "")
    return None


def evidence(texts: Mapping[int, str]) -> Optional[Tuple[str, str, int]]:
    """(family, tool, line) of the first package manager the recipe runs, if any."""
    for line, text in sorted(texts.items()):
        for family, tools in _EVIDENCE:
            found = re.search(rf"(?:^|[\s;&|(`]|sudo\s)({tools})(?=\s|$)", text, re.M)
            if found:
                return family, found.group(1), line
    return None


def nearest(image: Image, bases: Mapping[str, BaseImage], default_base: Optional[str]) -> Optional[BaseImage]:
    """The site's base of the image's family closest to it: the same distribution and release,
    else the site's default, else the first the site lists."""
    family = [b for b in bases.values() if b.family == image.family]
    if not family:
        return None
    for base in family:
        offered = parse_image(base.name)
        if image.release and (offered.distro, offered.release) == (image.distro, image.release):
            return base
    if default_base is not None and default_base in bases and bases[default_base] in family:
        return bases[default_base]
    return family[0]


@dataclass
class BaseChoice:
    base: Optional[str]                    # the site base's name
    stand_in: StandIn = field(default_factory=StandIn)
    change: Optional[str] = None           # the report's first line when the base is not the recipe's


def choose(image_ref: str, shown: str, bases: Mapping[str, BaseImage], default_base: Optional[str],
           chosen: Optional[str], commands: Dict[int, str]) -> BaseChoice:
    """The site base a recipe's image becomes (see the module's docstring); UsageError when it is
    refused. `shown` names the image as the recipe does (`FROM x`, `Bootstrap: yum`); `commands`
    are the recipe's shell texts by line, read for the package manager it runs."""
    for base in bases.values():
        if image_ref in (base.name, base.ref) or (base.ref and _DOCKER_HUB.sub("", base.ref) == image_ref):
            if chosen is None or chosen == base.name:
                return BaseChoice(base.name)
    image = parse_image(image_ref)
    if "@" in image_ref:
        shown += " (pinned by digest: an image the site does not have)"
    offered = ", ".join(bases) or "(none)"
    if chosen is not None:
        if chosen not in bases:
            raise UsageError(f"--base {chosen}: not a base this site offers ({offered})")
        foreign = image.family not in ("debian", None)
        why = f"{image.repo} is {_FAMILY_NAMES.get(str(image.family), image.family)}: its commands may not work there" \
            if foreign else ""
        return BaseChoice(chosen, image.stand_in, _change(shown, chosen, "chosen with --base", image, why))
    family, told = image.family, ""
    if family is None:
        found = evidence(commands)
        if found is None:
            raise UsageError(f"{shown}: cannot tell what {image.repo} is built on (its name does not say, "
                             "and the recipe runs no package manager); stardock builds on the site's bases: "
                             f"{offered}", hint="choose one with `stardock import --base NAME`")
        family, tool, line = found
        told = f"{image.repo} does not say what it is built on; the recipe runs {tool} (line {line})"
        image = Image(image.ref, image.repo, image.tag, family, stand_in=StandIn(
            missing=f"whatever {image.repo} adds to its own base"))
    if family != "debian":
        same = nearest(image, bases, default_base)
        name = _FAMILY_NAMES.get(family, family)
        if same is not None:
            return BaseChoice(same.name, change=f"{shown} -> base {same.name} (the site's {name} base)")
        article = "an" if name[0].lower() in "aeiou" else "a"
        raise UsageError(f"{shown}: {article} {name} base{' (' + told + ')' if told else ''}; this site offers "
                         f"only {', '.join(sorted({b.family for b in bases.values()})) or 'no'}-family "
                         f"bases ({offered}), where the recipe's commands would not work",
                         hint="port the recipe to Debian packages, or choose a base with "
                         "`stardock import --base NAME` and adapt its commands")
    debian = nearest(image, bases, default_base)
    if debian is None:
        raise UsageError(f"{shown}: a Debian-family base; this site offers no Debian-family base "
                         f"({offered})", hint="choose one with `stardock import --base NAME`")
    if told:
        told += ", so it is taken to be Debian-family"
    elif image.distro == "ubuntu" and image.last == "ubuntu":
        told = "Ubuntu is Debian-family"
    elif image.last != "debian":
        told = f"{image.repo} is built on {'Ubuntu' if image.distro == 'ubuntu' else 'Debian'}"
    return BaseChoice(debian.name, image.stand_in, _change(shown, debian.name, "the site's nearest Debian base",
                                                           image, told))


def _change(shown: str, base: str, how: str, image: Image, why: str) -> str:
    """The report's line about the base: what the recipe named, what it became and why, what
    stands in for the image's own software, and what does not."""
    stand_in = image.stand_in
    text = f"{shown} -> base {base} ({how}{'; ' + why if why else ''})"
    if stand_in.has:
        items = [f"apt {' '.join(stand_in.apt)}"] if stand_in.apt else []
        items += ["stardock's Python environment ({pip: [pip]}) as its python and pip"] if stand_in.venv else []
        items += ["its install steps"] if stand_in.steps else []
        text += f". First in build:, for what the image had ({stand_in.has}): " + ", ".join(items)
    if stand_in.missing:
        text += f". Not carried: {stand_in.missing}"
    if image.distro == "ubuntu":
        text += ". Ubuntu's package names can differ from Debian's: check the apt items"
    elif image.release and image.distro == "debian" and image.release != parse_image(base).release:
        text += f". Packages of Debian {image.release} may be missing or renamed in {base}: check the apt items"
    return text
