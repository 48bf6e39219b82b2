"""`stardock deps`: what the user's own programs and libraries need that a spec's image lacks, and
the Debian packages of the spec's base that provide it (Ahoy's client, for ELF files).

1. elfdeps.py reads each file's interpreter and DT_NEEDED libraries; what the files themselves
   provide (their SONAMEs) is not needed from the image.
2. The image answers what it has (PROBE_SCRIPT: ldconfig's cache and the interpreters).
3. For each library it lacks, the image's own apt (its sources, release and architecture) finds
   the package, as a user without root: a private package index, candidates named as Debian
   names shared-library packages (libfoo.so.3 -> libfoo3, libfoo-1.2.so.0 -> libfoo-1.2-0),
   then a search by name; each candidate is downloaded and kept only if it holds the library.
4. `--add` writes the packages into the spec's packages.apt, leaving the rest of the file (its
   comments too) as it was.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Tuple

from stardock_hpc.elfdeps import ElfInfo
from stardock_hpc.errors import UsageError

if TYPE_CHECKING:
    from stardock_hpc.builder import BuildResult

SONAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")
PATH_RE = re.compile(r"/[A-Za-z0-9._+/-]{1,400}")

# $1...: interpreters (absolute paths) to look for. Prints "so NAME TAG" per ldconfig entry and
# "interp PATH yes|no".
PROBE_SCRIPT = r"""
ldconfig -p 2>/dev/null | sed -n 's/^[[:space:]]*\([^ ]*\) (\([^)]*\)).*/so \1 \2/p'
for p in "$@"; do if [ -e "$p" ]; then echo "interp $p yes"; else echo "interp $p no"; fi; done
"""

# $1...: "SONAME|STEM|CAND1,CAND2,..." per library. A private package index (no root needed),
# then each candidate downloaded and listed; prints "provides SONAME PACKAGE" or "none SONAME".
RESOLVE_SCRIPT = r"""
set -u
T=$(mktemp -d) || exit 3
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/lists/partial" "$T/cache/archives/partial" "$T/debs"
A="-o Dir::State::Lists=$T/lists -o Dir::Cache=$T/cache -o Debug::NoLocking=1"
if ! apt-get $A -qq update >"$T/update.log" 2>&1; then
    echo "error the package index could not be fetched: $(tail -n 3 "$T/update.log" | tr '\n' ' ')"
    exit 4
fi
for item in "$@"; do
    so=${item%%|*}; rest=${item#*|}; stem=${rest%%|*}; cands=${rest#*|}
    found=""
    tried=""
    for pass in named searched; do
        if [ "$pass" = searched ]; then
            cands=$(apt-cache $A search --names-only "^$stem" 2>/dev/null | cut -d' ' -f1 | grep -v -- '-dev$' \
                    | grep -v -- '-dbg$' | head -n 8 | tr '\n' ',')
        fi
        old_ifs=$IFS; IFS=,
        for pkg in $cands; do
            IFS=$old_ifs
            case ",$tried," in *",$pkg,"*) continue ;; esac
            tried="$tried,$pkg"
            [ -n "$pkg" ] || continue
            apt-cache $A show --no-all-versions "$pkg" >/dev/null 2>&1 || continue
            rm -f "$T/debs/"*.deb
            (cd "$T/debs" && apt-get $A -qq download "$pkg" >/dev/null 2>&1) || continue
            for deb in "$T/debs/"*.deb; do
                if dpkg-deb -c "$deb" 2>/dev/null | awk '{print $6}' | grep -q "/$so\$"; then
                    found=$pkg
                fi
            done
            [ -n "$found" ] && break
        done
        IFS=$old_ifs
        [ -n "$found" ] && break
    done
    if [ -n "$found" ]; then echo "provides $so $found"; else echo "none $so"; fi
done
"""


@dataclass
class Needs:
    """What a set of ELF files needs from an image."""

    libraries: Dict[str, List[str]] = field(default_factory=dict)     # SONAME -> files naming it
    interpreters: Dict[str, List[str]] = field(default_factory=dict)  # loader -> files asking for it
    machines: Dict[str, List[str]] = field(default_factory=dict)      # machine -> files
    static: List[str] = field(default_factory=list)


def needs_of(files: Iterable[ElfInfo]) -> Needs:
    """What the files need, less what they provide one another (a program and its own library)."""
    files = list(files)
    if not files:
        raise UsageError("no ELF programs or libraries among the paths given")
    provided = {f.soname or Path(f.path).name for f in files}
    out = Needs()
    for f in files:
        out.machines.setdefault(f.machine, []).append(f.path)
        if f.static:
            out.static.append(f.path)
        if f.interpreter:
            out.interpreters.setdefault(f.interpreter, []).append(f.path)
        for lib in f.needed:
            if lib not in provided:
                out.libraries.setdefault(lib, []).append(f.path)
    return out


@dataclass(frozen=True)
class ImageHas:
    libraries: Dict[str, Tuple[str, ...]]   # SONAME -> ldconfig's tags (libc6,x86-64)
    interpreters: Dict[str, bool]


def parse_probe(text: str) -> ImageHas:
    libraries: Dict[str, Tuple[str, ...]] = {}
    interpreters: Dict[str, bool] = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if parts[0] == "so" and len(parts) == 3:
            libraries[parts[1]] = libraries.get(parts[1], ()) + (parts[2],)
        elif parts[0] == "interp" and len(parts) == 3:
            interpreters[parts[1]] = parts[2] == "yes"
    return ImageHas(libraries, interpreters)


def lacking(needs: Needs, has: ImageHas, bits: Dict[str, int]) -> List[str]:
    """The libraries needs names that the image lacks (of the files' word size: a 32-bit copy of
    a library does not serve a 64-bit program)."""
    out = []
    for lib in sorted(needs.libraries):
        tags = has.libraries.get(lib, ())
        want64 = bits.get(lib, 64) == 64
        if not any(("64" in tag) == want64 for tag in tags):
            out.append(lib)
    return out


def candidates(soname: str) -> Tuple[str, List[str]]:
    """A library's stem (for a search) and the package names Debian's policy gives it (8.1):
    libfoo.so.3 -> libfoo3; libfoo-1.2.so.0 and libfoo2.so.1 -> libfoo-1.2-0, libfoo2-1; also the
    64-bit time_t transition's t64 names."""
    m = re.fullmatch(r"(.+?)\.so((?:\.[0-9A-Za-z]+)*)", soname)
    if not m:
        return soname.lower(), []
    stem = m.group(1).lower().replace("_", "-")
    version = m.group(2).lstrip(".").split(".")[0] if m.group(2) else ""
    if not version:
        return stem, [stem]
    joined = f"{stem}-{version}" if stem[-1].isdigit() else f"{stem}{version}"
    return stem, [joined, f"{joined}t64"]


def resolve_args(libraries: Iterable[str]) -> Tuple[List[str], List[str]]:
    """RESOLVE_SCRIPT's arguments, and the names refused (not a plain library name)."""
    args, refused = [], []
    for lib in libraries:
        if not SONAME_RE.fullmatch(lib):
            refused.append(lib)
            continue
        stem, names = candidates(lib)
        args.append(f"{lib}|{re.escape(stem)}|{','.join(names)}")
    return args, refused


def parse_resolved(text: str) -> Tuple[Dict[str, str], List[str]]:
    provides: Dict[str, str] = {}
    unresolved: List[str] = []
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["provides"] and len(parts) == 3:
            provides[parts[1]] = parts[2]
        elif parts[:1] == ["none"] and len(parts) == 2:
            unresolved.append(parts[1])
        elif parts[:1] == ["error"]:
            raise UsageError(f"the image's package manager: {line[6:]}")
    return provides, unresolved


# --- --add: the packages into the spec, the rest of the file as it was ----------------------------
def add_apt_packages(text: str, packages: List[str], name: str) -> str:
    """text (a spec) with packages added to packages.apt, once each, in order. Comments, order and
    layout of everything else stay; the list itself is written as a flow list where the spec had
    one or none, as block items where it had block items."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise UsageError(f"{name}: not valid YAML ({exc})") from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise UsageError(f"{name}: a spec is a mapping of keys")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    packages_node = _child(root, "packages")
    if packages_node is None:
        return "".join(lines) + f"packages:\n  apt: {_flow(packages)}\n"
    if not isinstance(packages_node, yaml.MappingNode) or packages_node.flow_style:
        raise UsageError(f"{name}:{packages_node.start_mark.line + 1}: packages: write it as a block mapping "
                         "(apt: and pip: on lines of their own) for --add to change it")
    apt = _child(packages_node, "apt")
    if apt is None:
        first = packages_node.value[0][0]
        indent = " " * first.start_mark.column
        lines.insert(first.start_mark.line, f"{indent}apt: {_flow(packages)}\n")
        return "".join(lines)
    if not isinstance(apt, yaml.SequenceNode):
        raise UsageError(f"{name}:{apt.start_mark.line + 1}: packages.apt: a list")
    have = [item.value for item in apt.value]
    new = [p for p in packages if p not in have]
    if not new:
        return "".join(lines)
    if apt.flow_style or not apt.value:
        start, end = apt.start_mark, apt.end_mark
        if start.line != end.line:
            raise UsageError(f"{name}:{start.line + 1}: packages.apt: write the list on one line for --add")
        line = lines[start.line]
        lines[start.line] = line[:start.column] + _flow(have + new) + line[end.column:]
        return "".join(lines)
    last = apt.value[-1]
    dash = lines[last.start_mark.line][:last.start_mark.column].rstrip()
    prefix = dash[:-1] if dash.endswith("-") else " " * max(0, last.start_mark.column - 2)
    at = last.end_mark.line + (1 if last.end_mark.column else 0)
    for offset, package in enumerate(new):
        lines.insert(at + offset, f"{prefix}- {package}\n")
    return "".join(lines)


def _child(mapping, key: str):
    for k, v in mapping.value:
        if getattr(k, "value", None) == key:
            return v
    return None


def _flow(items: List[str]) -> str:
    return "[" + ", ".join(items) + "]"



@dataclass
class Report:
    """What `stardock deps` found: per library the package that provides it, or nothing."""

    files: List[str]
    present: List[str]                 # libraries the image has
    packages: Dict[str, str]           # library -> Debian package of the base that provides it
    unresolved: List[str]              # libraries no package was found for
    interpreters_missing: List[str]
    other_machines: List[str]          # files for another processor than the image's
    key: str = ""

    def package_list(self) -> List[str]:
        return sorted(set(self.packages.values()))

    def json(self) -> Dict:
        return {"files": self.files, "key": self.key, "present": self.present, "packages": self.packages,
                "add": self.package_list(), "unresolved": self.unresolved,
                "interpreters_missing": self.interpreters_missing, "other_machines": self.other_machines}


def find(files: List[ElfInfo], result: BuildResult, run_script: Callable[[str, List[str], bool], str]) -> Report:
    """The report for files against the image of result; run_script(script, args, network) runs
    a shell script in that image and returns its output."""
    import platform

    needs = needs_of(files)
    own = {"x86_64": "x86_64", "aarch64": "aarch64"}.get(platform.machine(), platform.machine())
    other = sorted(p for machine, paths in needs.machines.items() if machine != own for p in paths)
    interpreters = [i for i in needs.interpreters if PATH_RE.fullmatch(i)]
    has = parse_probe(run_script(PROBE_SCRIPT, interpreters, False))
    bits = {lib: next(f.bits for f in files if lib in f.needed) for lib in needs.libraries}
    missing = lacking(needs, has, bits)
    args, refused = resolve_args(missing)
    packages: Dict[str, str] = {}
    unresolved: List[str] = list(refused)
    if args:
        packages, none = parse_resolved(run_script(RESOLVE_SCRIPT, args, True))
        unresolved += none
    return Report(files=[f.path for f in files], present=sorted(set(needs.libraries) - set(missing)),
                  packages=packages, unresolved=sorted(unresolved),
                  interpreters_missing=sorted(i for i in needs.interpreters if not has.interpreters.get(i)),
                  other_machines=other, key=result.entry.key)


def find_for_spec(paths: List[Path], spec: Path, site_option: Optional[str], engine, on_line, say,
                  add: bool = False) -> Report:
    """`stardock deps`: the spec's image built (or found in the cache), the files checked against
    it, and with add, the packages written into the spec (which must still validate)."""
    from stardock_hpc.builder import build, run_in_image
    from stardock_hpc.cache import image_tag
    from stardock_hpc.elfdeps import elf_files
    from stardock_hpc.fsutil import read_text, write_atomic
    from stardock_hpc.inputs import site_and_catalog
    from stardock_hpc.spec import parse_spec

    files = list(elf_files(paths))
    site, catalog = site_and_catalog(site_option)
    result = build(spec, site, catalog, engine, on_line, say)
    entry = result.entry
    tag = entry.meta.get("image_tag") or image_tag(result.plan.name, entry.key)

    def run_script(script: str, args: List[str], network: bool) -> str:
        what = "look up packages for" if network else "look into"
        return run_in_image(engine, entry.artifact, tag, script, args, what, network=network)

    report = find(files, result, run_script)
    if add and report.packages:
        text = read_text(spec, "spec")
        changed = add_apt_packages(text, report.package_list(), str(spec))
        parse_spec(changed, spec, apps=catalog.names(), bases=site.bases)  # still a valid spec
        if changed != text:
            write_atomic(spec, changed, mode=spec.stat().st_mode & 0o777)
    return report
