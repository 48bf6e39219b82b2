"""The site config (site.yaml): what the admin decides. Engine, shared image cache, bases,
volume map, mount root, scheduler and policy.

Found from --site, then $STARDOCK_SITE_CONFIG, then /etc/stardock/site.yaml; without any, the
built-in defaults apply. The choice and its source are kept for `stardock site show`.
"""
from __future__ import annotations

import grp
import os
import posixpath
import pwd
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from stardock_hpc.errors import UsageError
from stardock_hpc.patterns import BASE_RE
from stardock_hpc.schedulers.registry import NAMES as BACKENDS

if TYPE_CHECKING:
    from stardock_hpc import yamlfile
    from stardock_hpc.schema import Obj
# The YAML parser and the schema are loaded only to read a site file that is not in the user's
# parsed-site cache (load_site): a submission of a built image needs neither.

SYSTEM_SITE = Path("/etc/stardock/site.yaml")
ENGINES = ("podman", "apptainer")
TOKEN_SOURCES = ("auto", "env", "scontrol")  # slurmrestd's JWT: $SLURM_JWT, `scontrol token`, or either
FAMILIES = ("debian",)
VOLUME_NAME_RE = r"[a-z][a-z0-9_-]{0,31}"
PATH_FIELDS = ("user", "uid", "gid", "group", "home")
USER_RE = r"[a-z_][a-z0-9_.-]{0,31}\$?"
MEM_RE = r"[0-9]+[KMGT]?"
TIME_RE = r"(?:[0-9]+-)?[0-9]+(?::[0-9]{2}){0,2}"


@dataclass(frozen=True)
class BaseImage:
    name: str
    family: str
    archive: Optional[Path] = None  # an OCI archive on disk (no registry needed)
    ref: Optional[str] = None       # a registry reference, where the site has a registry


LOCAL_BASE_PREFIX = "localhost/stardock-base/"


def base_reference(base: BaseImage) -> str:
    """The FROM line's image: a registry reference, or the local name under which the engine
    loads a base archive (a stable name keeps Podman's layer cache)."""
    if base.ref:
        return base.ref
    return LOCAL_BASE_PREFIX + base.name


def expand_path(template: str, user: str) -> Path:
    """A site path template for one user: {user} {uid} {gid} {group} {home}."""
    pw = pwd.getpwnam(user)
    try:
        group = grp.getgrgid(pw.pw_gid).gr_name
    except KeyError:
        group = str(pw.pw_gid)
    return Path(template.format(user=user, uid=pw.pw_uid, gid=pw.pw_gid, group=group, home=pw.pw_dir))


@dataclass(frozen=True)
class Volume:
    name: str
    path: str                       # host path template: {user} {uid} {gid} {group}
    mode: str = "ro"                # the most a job may get: ro, or rw
    users: Tuple[str, ...] = ()     # who may use it (empty: everybody)
    groups: Tuple[str, ...] = ()
    description: str = ""

    def host_path(self, user: str) -> Path:
        return expand_path(self.path, user)

    def allows(self, user: str) -> bool:
        if not self.users and not self.groups:
            return True
        if user in self.users:
            return True
        pw = pwd.getpwnam(user)
        mine = {grp.getgrgid(pw.pw_gid).gr_name} | {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
        return bool(mine & set(self.groups))


@dataclass(frozen=True)
class SchedulerConfig:
    """The site's scheduler section: how jobs reach Slurm (the backends are schedulers/)."""

    backend: str = "sbatch"
    rest_url: Optional[str] = None
    rest_api: str = "auto"
    rest_token: str = "auto"
    partition: Optional[str] = None


DEFAULT_PIDS = 4096          # as RHEL's default `ulimit -u` for users, which Slurm propagates
DEFAULT_BUILD_TIMEOUT = "1:00:00"


@dataclass(frozen=True)
class Limits:
    mem: Optional[str] = None
    cpus: Optional[int] = None
    time: Optional[str] = None
    pids: int = DEFAULT_PIDS        # processes and threads of a job's container (RLIMIT_NPROC)


@dataclass(frozen=True)
class InputsPolicy:
    """policy.inputs: what a job's --input may fetch (jobs/staging.py). file: is off unless the
    site lists it: a #STARDOCK line in a script someone else wrote would otherwise hand the
    user's own files to the job."""

    schemes: Tuple[str, ...] = ("http", "https")
    hosts: Tuple[str, ...] = ()     # host names (*.example.org: any below it); empty: any host
    max_bytes: str = "10G"          # the most one input may be
    retries: int = 3                # attempts after the first (inputs and deliveries), with backoff
    cache_max: str = "10G"          # the user's download cache on a node (least recently used first); 0: none


@dataclass(frozen=True)
class DeliveriesPolicy:
    """policy.deliveries: where a job's --deliver URL may send its outputs (jobs/staging.py). With
    no network in the container, a delivery is the job's way out: no host is allowed unless the
    site lists it (`*` for any). Deliveries to site volumes follow the volume map."""

    schemes: Tuple[str, ...] = ("http", "https")
    hosts: Tuple[str, ...] = ()     # host names, *.example.org, or *; empty: no URL deliveries


@dataclass(frozen=True)
class Policy:
    network: bool = False           # containers get a network at run time
    node_network: bool = True       # multi-node jobs and MPI steps share the node's network
    custom_build: bool = True       # specs may carry their own build steps
    pip: bool = True                # specs may install from PyPI
    limits: Limits = Limits()
    build_timeout: str = DEFAULT_BUILD_TIMEOUT   # a build running longer is stopped (Slurm time format)
    inputs: InputsPolicy = InputsPolicy()
    deliveries: DeliveriesPolicy = DeliveriesPolicy()


@dataclass(frozen=True)
class Trust:
    users: Tuple[str, ...] = ()
    groups: Tuple[str, ...] = ()


DEFAULT_BASES = {"debian:bookworm": BaseImage("debian:bookworm", "debian",
                                              ref="docker.io/library/debian:bookworm")}


DEFAULT_NODE_STORAGE = "/var/tmp/stardock-{uid}"


@dataclass(frozen=True)
class Site:
    engine: str = "podman"
    cache: Path = field(default_factory=lambda: Path(os.path.expanduser("~/.cache/stardock/images")))
    bases: Dict[str, BaseImage] = field(default_factory=lambda: dict(DEFAULT_BASES))
    default_base: Optional[str] = "debian:bookworm"
    volumes: Dict[str, Volume] = field(default_factory=dict)
    mount_root: str = "/data"
    outputs: str = "{home}/stardock/outputs"                  # per-job output directories go here
    records: str = "{home}/.local/share/stardock/jobs"       # job records
    node_storage: str = DEFAULT_NODE_STORAGE                 # per-user engine state on each node (node-local)
    node_storage_max: str = "20G"                             # its bound; least recently used images go first
    catalog: Tuple[Path, ...] = ()
    ca_certificates: Tuple[Path, ...] = ()
    scheduler: SchedulerConfig = SchedulerConfig()
    policy: Policy = Policy()
    trusted_builders: Trust = Trust()
    path: Optional[Path] = None     # the file it came from (None: built-in defaults)
    source: str = "built-in defaults (no site config found)"
    explicit: frozenset = frozenset()  # top-level and nested keys set in the file

    def base(self, name: Optional[str]) -> BaseImage:
        chosen = name or self.default_base
        if chosen is None:
            raise UsageError("the spec names no base and the site has no default_base",
                             hint=f"add 'base:' with one of: {', '.join(self.bases) or '(none)'}")
        if chosen not in self.bases:
            raise UsageError(f"base {chosen!r} is not offered by this site ({self.source}); "
                             f"offered: {', '.join(self.bases) or '(none)'}")
        return self.bases[chosen]



def _abs_path(value: str) -> None:
    if not value.startswith("/"):
        from stardock_hpc.schema import Invalid
        raise Invalid("must be an absolute path")


def _volume_path(value: str) -> None:
    _abs_path(value)
    for name in re.findall(r"\{([^}]*)\}", value):
        if name not in PATH_FIELDS:
            from stardock_hpc.schema import Invalid
            raise Invalid(f"unknown placeholder {{{name}}}; allowed: "
                          + ", ".join("{" + f + "}" for f in PATH_FIELDS))
    if ".." in value.split("/"):
        from stardock_hpc.schema import Invalid
        raise Invalid("'..' is not allowed")


def _mount_root(value: str) -> None:
    _abs_path(value)
    norm = posixpath.normpath(value)
    if norm in ("/", "/usr", "/etc", "/bin", "/lib", "/proc", "/sys", "/dev", "/tmp"):
        from stardock_hpc.schema import Invalid
        raise Invalid("would hide part of the image's system; pick a directory such as /data")


def site_type() -> Obj:
    from stardock_hpc.schema import Bool, Int, Key, ListOf, MapOf, Obj, Str
    base = Obj({
        "family": Key(Str("Which catalog recipes apply.", choices=FAMILIES)),
        "archive": Key(Str("An OCI archive of the image on disk.", check=_abs_path)),
        "ref": Key(Str("A registry reference.", pattern=r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,255}",
                       pattern_help="an image reference such as registry.example.org/debian:bookworm")),
    }, "A base image the site offers.")
    volume = Obj({
        "path": Key(Str("Host path; {user}, {uid}, {gid}, {group} are filled in.", check=_volume_path),
                    required=True),
        "mode": Key(Str("The most a job may get: ro (inputs) or rw (outputs).", choices=("ro", "rw")),
                    default="ro"),
        "users": Key(ListOf(Str(pattern=USER_RE, pattern_help="a user name")), default=()),
        "groups": Key(ListOf(Str(pattern=USER_RE, pattern_help="a group name")), default=()),
        "description": Key(Str(min_len=0), default=""),
    }, "A host directory jobs may mount by its logical name.")
    limits = Obj({
        "mem": Key(Str("Largest --mem a job may ask for.", pattern=MEM_RE, pattern_help="e.g. 64G")),
        "cpus": Key(Int("Largest --cpus-per-task.", minimum=1)),
        "time": Key(Str("Longest --time.", pattern=TIME_RE, pattern_help="e.g. 2-00:00:00")),
        "pids": Key(Int("Most processes and threads a job's container may run (applied as RLIMIT_NPROC: "
                        "rootless engines count the user's processes on the node).", minimum=16),
                    default=DEFAULT_PIDS),
    }, make=lambda **kw: Limits(**kw))
    return Obj({
        "engine": Key(Str("Container engine.", choices=ENGINES), default="podman"),
        "cache": Key(Str("Shared image cache directory.", check=_abs_path)),
        "bases": Key(MapOf(base, "Base images offered, by name.", key_pattern=BASE_RE,
                           key_help="an image name such as debian:bookworm")),
        "default_base": Key(Str("Base used when a spec names none.", pattern=BASE_RE)),
        "volumes": Key(MapOf(volume, "Volume map.", key_pattern=VOLUME_NAME_RE,
                             key_help="lowercase letters, digits, '_' and '-'"), default={}),
        "mount_root": Key(Str("Where volumes appear in the container.", check=_mount_root), default="/data"),
        "outputs": Key(Str("Where each job's output directory is made (a path template).",
                           check=_volume_path), default="{home}/stardock/outputs"),
        "records": Key(Str("Where job records are kept (a path template).", check=_volume_path),
                       default="{home}/.local/share/stardock/jobs"),
        "node_storage": Key(Str("Each user's engine state on a compute node (Podman's store and runtime "
                                "files, Apptainer's cache): a node-local path template, never the home.",
                                check=_volume_path), default=DEFAULT_NODE_STORAGE),
        "node_storage_max": Key(Str("The most a user's node storage holds; over it, the least recently used "
                                    "images not in use are removed.", pattern=MEM_RE, pattern_help="e.g. 20G"),
                                default="20G"),
        "catalog": Key(ListOf(Str("A directory of site app definitions.", check=_abs_path)), default=()),
        "ca_certificates": Key(ListOf(Str("A PEM certificate file.", check=_abs_path),
                                      "CA certificates every image trusts (a site proxy's CA, "
                                      "so that builds reach PyPI through it)."), default=()),
        "scheduler": Key(Obj({
            "backend": Key(Str(choices=BACKENDS), default="sbatch"),
            "rest_url": Key(Str(pattern=r"https?://[A-Za-z0-9.:\[\]_-]+(?:/[A-Za-z0-9._/-]*)?",
                                pattern_help="an http(s) URL such as http://127.0.0.1:6820")),
            "rest_api": Key(Str(pattern=r"auto|v0\.0\.[0-9]+", pattern_help="auto or v0.0.NN"),
                            default="auto"),
            "rest_token": Key(Str("Where the slurmrestd token comes from: $SLURM_JWT (env), `scontrol token` "
                                  "(scontrol), or $SLURM_JWT when set, else scontrol (auto).",
                                  choices=TOKEN_SOURCES), default="auto"),
            "partition": Key(Str("The partition of jobs that name none (in an #SBATCH line, $SBATCH_PARTITION "
                                 "or -p); without it, Slurm's default partition.",
                                 pattern=r"[A-Za-z0-9_.-]+", pattern_help="a partition name")),
        }, make=lambda **kw: SchedulerConfig(**kw)), default=SchedulerConfig()),
        "policy": Key(Obj({
            "network": Key(Bool("Containers get a network at run time."), default=False),
            "node_network": Key(Bool("The containers of a job on several nodes, and the tasks of its MPI steps, "
                                     "share the node's network: MPI needs the nodes' interconnect and "
                                     "slurmstepd's PMIx server. false keeps them off every network (MPI "
                                     "across containers then fails)."), default=True),
            "custom_build": Key(Bool("Specs may carry their own build steps."), default=True),
            "pip": Key(Bool("Specs may install packages from PyPI."), default=True),
            "limits": Key(limits, default=Limits()),
            "build_timeout": Key(Str("A build running longer is stopped and nothing is cached (e.g. 1:00:00).",
                                     pattern=TIME_RE, pattern_help="a Slurm time such as 30:00 or 2:00:00"),
                                 default=DEFAULT_BUILD_TIMEOUT),
            "inputs": Key(Obj({
                "schemes": Key(ListOf(Str(choices=("http", "https", "file")),
                                      "The URL schemes a job's --input may use (file: the nodes' files, "
                                      "read as the user; off unless listed).", unique=True),
                               default=("http", "https")),
                "hosts": Key(ListOf(Str(pattern=r"(?:\*\.)?[A-Za-z0-9.-]{1,253}",
                                        pattern_help="a host name, or *.domain for any host below it"),
                                    "The hosts a job's --input may fetch from (empty: any).", unique=True),
                             default=()),
                "max_bytes": Key(Str("The largest input a job may fetch.", pattern=MEM_RE, pattern_help="e.g. 10G"),
                                 default="10G"),
                "retries": Key(Int("Attempts after the first of a failing download or delivery (with backoff).",
                                   minimum=0, maximum=10), default=3),
                "cache_max": Key(Str("The most a user's download cache on a node holds (least recently used "
                                     "files go first; 0: nothing is kept).", pattern=MEM_RE, pattern_help="e.g. 10G"),
                                 default="10G"),
            }, make=lambda schemes, hosts, max_bytes, retries, cache_max: InputsPolicy(
                tuple(schemes), tuple(hosts), max_bytes, retries, cache_max)),
                          default=InputsPolicy()),
            "deliveries": Key(Obj({
                "schemes": Key(ListOf(Str(choices=("http", "https")),
                                      "The URL schemes a job's --deliver may use.", unique=True),
                               default=("http", "https")),
                "hosts": Key(ListOf(Str(pattern=r"\*|(?:\*\.)?[A-Za-z0-9.-]{1,253}",
                                        pattern_help="a host name, *.domain for any host below it, or * for any"),
                                    "The hosts a job's --deliver URL may send its outputs to (empty: none; "
                                    "deliveries to volumes follow the volume map).", unique=True),
                             default=()),
            }, make=lambda schemes, hosts: DeliveriesPolicy(tuple(schemes), tuple(hosts))),
                              default=DeliveriesPolicy()),
        }, make=lambda **kw: Policy(**kw)), default=Policy()),
        "trusted_builders": Key(Obj({
            "users": Key(ListOf(Str(pattern=USER_RE, pattern_help="a user name")), default=()),
            "groups": Key(ListOf(Str(pattern=USER_RE, pattern_help="a group name")), default=()),
        }, make=lambda users, groups: Trust(tuple(users), tuple(groups))), default=Trust()),
    }, "stardock-hpc site configuration (site.yaml).", title="site.yaml")


def _explicit(data: Any, prefix: str = "") -> frozenset:
    keys = set()
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}{key}"
            keys.add(name)
            if key not in ("bases", "volumes"):
                keys |= _explicit(value, name + ".")
    return frozenset(keys)


def _from_document(doc: yamlfile.Document, path: Path, source: str) -> Site:
    from stardock_hpc.schema import Context, validate_document
    if doc.data is None:
        doc.data = {}
    raw = validate_document(doc, site_type())
    ctx = Context(doc)
    bases = dict(DEFAULT_BASES) if raw["bases"] is None else {}
    for name, b in (raw["bases"] or {}).items():
        family = b["family"] or name.split(":")[0].split("/")[-1]
        if family not in FAMILIES:
            raise ctx.fail(("bases", name), f"cannot tell the family of {name!r}; add "
                           f"'family:' ({', '.join(FAMILIES)})")
        if bool(b["archive"]) == bool(b["ref"]):
            raise ctx.fail(("bases", name), "give exactly one of 'archive' (a file on disk) or "
                           "'ref' (a registry reference)")
        bases[name] = BaseImage(name, family, Path(b["archive"]) if b["archive"] else None, b["ref"])
    default_base = raw["default_base"]
    if default_base is None:
        default_base = next(iter(bases)) if len(bases) == 1 else (
            "debian:bookworm" if "debian:bookworm" in bases else None)
    elif default_base not in bases:
        raise ctx.fail(("default_base",), f"{default_base!r} is not one of the bases: {', '.join(bases)}")
    volumes = {name: Volume(name, v["path"], v["mode"], tuple(v["users"]), tuple(v["groups"]),
                            v["description"]) for name, v in raw["volumes"].items()}
    kwargs: Dict[str, Any] = dict(
        engine=raw["engine"], bases=bases, default_base=default_base, volumes=volumes,
        mount_root=posixpath.normpath(raw["mount_root"]), outputs=raw["outputs"], records=raw["records"],
        node_storage=raw["node_storage"], node_storage_max=raw["node_storage_max"],
        catalog=tuple(Path(p) for p in raw["catalog"]),
        ca_certificates=tuple(Path(p) for p in raw["ca_certificates"]),
        scheduler=raw["scheduler"], policy=raw["policy"], trusted_builders=raw["trusted_builders"],
        path=path, source=source, explicit=_explicit(doc.data))
    if raw["cache"]:
        kwargs["cache"] = Path(raw["cache"])
    return Site(**kwargs)


def parse_site(text: str, path: Path, source: str = "test") -> Site:
    from stardock_hpc import yamlfile
    return _from_document(yamlfile.parse(text, str(path)), path, source)


def find_site(option: Optional[str], environ: Optional[Dict[str, str]] = None) -> Tuple[Optional[Path], str]:
    """Which site config applies, and why: --site, then $STARDOCK_SITE_CONFIG, then /etc."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if option:
        return Path(option), "--site option"
    if env.get("STARDOCK_SITE_CONFIG"):
        return Path(env["STARDOCK_SITE_CONFIG"]), "$STARDOCK_SITE_CONFIG"
    if SYSTEM_SITE.exists():
        return SYSTEM_SITE, str(SYSTEM_SITE)
    return None, "built-in defaults (no site config found)"


def load_site(option: Optional[str] = None, environ: Optional[Dict[str, str]] = None) -> Site:
    path, how = find_site(option, environ)
    if path is None:
        return Site()
    source = f"{path} (from {how})"
    cached = ParsedSiteCache.for_user(os.environ if environ is None else environ)
    key = cached.key(path, source) if cached else None
    if cached and key:
        site = cached.get(key)
        if site is not None:
            return site
    from stardock_hpc import yamlfile
    from stardock_hpc.fsutil import read_text
    text = read_text(path, "site config", yamlfile.MAX_BYTES)
    site = _from_document(yamlfile.parse(text, str(path)), path, source)
    if cached and key:
        cached.put(key, site, text)
    return site


class ParsedSiteCache:
    """The user's parsed site configs, in $XDG_RUNTIME_DIR (memory, the user's alone, gone at
    logout): a command then reads no YAML (issue 10: a submission of a built image costs sbatch
    + 60 ms at most). An entry is used only when the file still holds exactly the text it was
    made from (compared byte for byte: no clock or file identity is trusted) and this stardock's
    site.py is the one that made it; anything else, or any doubt about the directory, and the
    file is parsed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def for_user(cls, environ: Mapping[str, str]) -> Optional[ParsedSiteCache]:
        from stardock_hpc.fsutil import private_runtime_dir

        runtime = private_runtime_dir(environ)
        return cls(runtime / "stardock") if runtime else None

    @staticmethod
    def key(path: Path, source: str) -> Optional[Dict[str, Any]]:
        try:
            st, code = os.stat(path), os.stat(__file__)
        except OSError:
            return None
        return {"path": str(path), "source": source, "file": [st.st_dev, st.st_ino],
                "code": [code.st_size, code.st_mtime_ns], "uid": os.getuid()}

    def _name(self, key: Dict[str, Any]) -> Path:
        return self.directory / f"site-{key['file'][0]}-{key['file'][1]}.json"

    def get(self, key: Dict[str, Any]) -> Optional[Site]:
        import json
        try:
            fd = os.open(self._name(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_uid != os.getuid():
                return None
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = json.loads(fh.read(1 << 20))
            if data.get("key") != key:
                return None
            with open(key["path"], "rb") as site_file:
                if site_file.read((1 << 20) + 1) != data["text"].encode("utf-8"):
                    return None
            return site_from_settings(data["site"], Path(key["path"]), key["source"], data["explicit"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        finally:
            os.close(fd)

    def put(self, key: Dict[str, Any], site: Site, text: str) -> None:
        """Best effort: a command never fails over its cache."""
        import json
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            st = os.lstat(self.directory)
            if st.st_uid != os.getuid() or not os.path.isdir(self.directory) or os.path.islink(self.directory):
                return
            from stardock_hpc.fsutil import write_atomic
            write_atomic(self._name(key), json.dumps({"key": key, "text": text, "site": site_settings(site),
                                                      "explicit": sorted(site.explicit)}), mode=0o600)
            self._bound()
        except OSError:
            pass

    MAX_ENTRIES = 16

    def _bound(self) -> None:
        """At most MAX_ENTRIES site files are kept, those written last (a user's few site files
        stay; one made per test or per `--site` file of a script does not pile up in memory)."""
        entries = []
        for entry in os.scandir(self.directory):
            if entry.name.startswith("site-") and entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
                entries.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
        for _mtime, name in sorted(entries)[:-self.MAX_ENTRIES]:
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                pass


def site_from_settings(data: Dict[str, Any], path: Optional[Path], source: str, explicit: Any) -> Site:
    """The Site that site_settings() wrote out (the parsed-site cache's entries)."""
    pol = data["policy"]
    lim, inp, sch, trust = pol["limits"], pol["inputs"], data["scheduler"], data["trusted_builders"]
    return Site(
        engine=data["engine"], cache=Path(data["cache"]),
        bases={n: BaseImage(n, b["family"], Path(b["archive"]) if b.get("archive") else None, b.get("ref"))
               for n, b in data["bases"].items()},
        default_base=data["default_base"],
        volumes={n: Volume(n, v["path"], v["mode"], tuple(v["users"]), tuple(v["groups"]), v["description"])
                 for n, v in data["volumes"].items()},
        mount_root=data["mount_root"], outputs=data["outputs"], records=data["records"],
        node_storage=data["node_storage"], node_storage_max=data["node_storage_max"],
        catalog=tuple(Path(p) for p in data["catalog"]),
        ca_certificates=tuple(Path(p) for p in data["ca_certificates"]),
        scheduler=SchedulerConfig(sch["backend"], sch["rest_url"], sch["rest_api"], sch["rest_token"],
                                  sch["partition"]),
        policy=Policy(network=pol["network"], node_network=pol["node_network"], custom_build=pol["custom_build"],
                      pip=pol["pip"], limits=Limits(lim["mem"], lim["cpus"], lim["time"], lim["pids"]),
                      build_timeout=pol["build_timeout"],
                      inputs=InputsPolicy(tuple(inp["schemes"]), tuple(inp["hosts"]), inp["max_bytes"],
                                          inp["retries"], inp["cache_max"]),
                      deliveries=DeliveriesPolicy(tuple(pol["deliveries"]["schemes"]),
                                                  tuple(pol["deliveries"]["hosts"]))),
        trusted_builders=Trust(tuple(trust["users"]), tuple(trust["groups"])),
        path=path, source=source, explicit=frozenset(explicit))


def site_json_schema() -> Dict[str, Any]:
    from stardock_hpc.schema import json_schema
    return json_schema(site_type(), title="stardock-hpc site config (site.yaml)",
                       schema_id="https://stardock-hpc.org/schema/site.schema.json")


def site_settings(site: Site) -> Dict[str, Any]:
    """The resolved settings as plain data, in the order of the file format."""
    return {
        "engine": site.engine,
        "cache": str(site.cache),
        "bases": {n: {"family": b.family, **({"archive": str(b.archive)} if b.archive else {}),
                      **({"ref": b.ref} if b.ref else {})} for n, b in site.bases.items()},
        "default_base": site.default_base,
        "volumes": {n: {"path": v.path, "mode": v.mode, "users": list(v.users), "groups": list(v.groups),
                        "description": v.description} for n, v in site.volumes.items()},
        "mount_root": site.mount_root,
        "outputs": site.outputs,
        "records": site.records,
        "node_storage": site.node_storage,
        "node_storage_max": site.node_storage_max,
        "catalog": [str(p) for p in site.catalog],
        "ca_certificates": [str(p) for p in site.ca_certificates],
        "scheduler": {"backend": site.scheduler.backend, "rest_url": site.scheduler.rest_url,
                      "rest_api": site.scheduler.rest_api, "rest_token": site.scheduler.rest_token,
                      "partition": site.scheduler.partition},
        "policy": {"network": site.policy.network, "node_network": site.policy.node_network,
                   "custom_build": site.policy.custom_build,
                   "pip": site.policy.pip,
                   "limits": {"mem": site.policy.limits.mem, "cpus": site.policy.limits.cpus,
                              "time": site.policy.limits.time, "pids": site.policy.limits.pids},
                   "build_timeout": site.policy.build_timeout,
                   "inputs": {"schemes": list(site.policy.inputs.schemes), "hosts": list(site.policy.inputs.hosts),
                              "max_bytes": site.policy.inputs.max_bytes, "retries": site.policy.inputs.retries,
                              "cache_max": site.policy.inputs.cache_max},
                   "deliveries": {"schemes": list(site.policy.deliveries.schemes),
                                  "hosts": list(site.policy.deliveries.hosts)}},
        "trusted_builders": {"users": list(site.trusted_builders.users),
                             "groups": list(site.trusted_builders.groups)},
    }
