"""What differs between slurmrestd API versions, and what the servers get wrong, in one place.

stardock speaks v0.0.36, v0.0.37 and v0.0.38: what Slurm 20.11 to 22.05 serve (22.05 serves all
three). It asks the server which it offers (GET /openapi) and takes the newest of those; a site can
pin one with `scheduler.rest_api`. Slurm 23.02 and later serve v0.0.39+, whose job description is
read by a different, typed parser: not spoken yet, and refused with a clear message rather than
guessed at.

Everything below was seen against slurmrestd 22.05.8 (the testbed) unless it says otherwise. There,
the three versions read a job's fields alike: through a table of names onto sbatch's own option
parsers (slurm_process_option_data), so a field takes sbatch's spelling of the value ("1G",
"now+1hour", "exclusive") and the published schema's types ("integer", "boolean") are often not
what the parser accepts (true for "exclusive" or "no_kill" is "Invalid ... specification"). The
versions differ in which names their tables hold (ApiVersion.missing).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Tuple


@dataclass(frozen=True)
class ApiVersion:
    name: str
    # v0.0.38 job fields this version does not know ("Unknown key" -> HTTP 400)
    missing: FrozenSet[str] = frozenset()

    def submit_path(self) -> str:
        return f"/slurm/{self.name}/job/submit"

    def job_path(self, job_id: str) -> str:
        return f"/slurm/{self.name}/job/{job_id}"

    def jobs_path(self) -> str:
        return f"/slurm/{self.name}/jobs"

    def db_job_path(self, job_id: str) -> str:
        return f"/slurmdb/{self.name}/job/{job_id}"

    def ping_path(self) -> str:
        return f"/slurm/{self.name}/ping"


VERSIONS: Dict[str, ApiVersion] = {
    "v0.0.38": ApiVersion("v0.0.38"),
    # (probed field by field against 22.05: "Unknown key")
    "v0.0.37": ApiVersion("v0.0.37", missing=frozenset({"container", "cpu_binding_hint", "mcs_label", "prefer",
                                                        "time_minimum"})),
    # The published v0.0.36 schema spells some fields differently (standard_in, standard_out,
    # account_gather_freqency, cluster_constraints) but 22.05's parser takes the v0.0.38 names too.
    "v0.0.36": ApiVersion("v0.0.36", missing=frozenset({"container", "cpu_binding_hint", "mcs_label", "prefer",
                                                        "priority", "time_minimum"})),
}
SUPPORTED: Tuple[str, ...] = ("v0.0.38", "v0.0.37", "v0.0.36")  # newest first

# --- quirks of the 22.05 servers, whatever the API version ----------------------------------------
# A job field "argv" with any element kills slurmrestd: the job is created, then the daemon dies
# before it answers (a submit whose outcome the client cannot know: never to be retried). The
# script's arguments are therefore set by a `set --` line in the job script (script_with_args).
ARGV_KILLS_SERVER = True
# dbv0.0.36-38 report exit_code {"status": "SUCCESS", "return_code": 0} for every job that exited,
# whatever its status (the dump tests WIFEXITED only). The exit code is taken from /slurm/.../job
# (exit_code: the raw wait status) while slurmctld still holds the job (MinJobAge); after that
# the accounting only knows a signal, and an exit code it cannot tell is reported as unknown.
DB_EXIT_CODE_UNRELIABLE = True
# slurmrestd's errors when it sent a request to slurmctld and no answer came (slurmctld frozen):
# slurm_errno.h's SOCKET_IMPL_ZERO_RECV_LENGTH, PROTOCOL_INCOMPLETE_PACKET, SOCKET_IMPL_TIMEOUT and
# SOCKET_ZERO_BYTES_SENT ("Zero Bytes were transmitted or received")
LOST_ANSWER = frozenset({5000, 5003, 5004, 5005})
# A bad, expired or foreign token is not HTTP 401: the request reaches slurmctld/slurmdbd, which
# refuse it, and slurmrestd answers HTTP 500 (job calls: error -1 "Unspecified error" or 5005 "Zero
# Bytes were transmitted or received") or HTTP 200 with error 1007 "Protocol authentication error"
# (slurmdb calls). 401 comes only when the token headers are missing. GET /openapi answers any token.
TOKEN_ERRORS = frozenset({-1, 1007, 5005})
# Other server behaviour the job fields work around (see job_options.RULES):
#   "requeue": false is ignored (the job stays requeueable): --no-requeue sends "no_requeue": true;
#   "nodes" as the schema's list is wrong: [n] is "Invalid node count list size", [1, 2] drops the
#   maximum (NumNodes=1); sbatch's string ("1", "1-2") gives what sbatch gives;
#   "signal" with the B: flag is rejected ("Invalid SIGNAL specification");
#   relative "current_working_directory" is resolved against slurmrestd's own directory;
#   "export", "export_file", "clusters", "contiguous", "extra_node_info", "network", "overcommit",
#   "oversubscribe", "power_flags", "propagate", "reboot", "required_switches", "user_id",
#   "group_id" are disabled ("Disabled key");
#   "environment" must be set and non-empty (HTTP 400 "environment must be set");
#   the job info's exit_code is the raw wait status (768 = exit 3), time_limit is minutes,
#   memory_per_node MB.
# Error codes that mean "no such job" in GET /slurm/.../job/{id}: 2017 "Invalid job id specified".
NO_SUCH_JOB = frozenset({2017})

_PATH_RE = re.compile(r"^/slurm/(v0\.0\.[0-9]+)/job/submit$")


def offered(paths: Iterable[str]) -> List[str]:
    """The API versions an OpenAPI document's paths offer job submission in, newest first."""
    found = {m.group(1) for p in paths for m in [_PATH_RE.match(p)] if m}
    return sorted(found, key=lambda v: tuple(int(x) for x in v[1:].split(".")), reverse=True)


def choose(offers: List[str], pinned: str) -> Tuple[ApiVersion, str]:
    """The version to speak and why: the pinned one (site config), else the newest offered that
    stardock speaks. Raises ValueError with the reason when there is none."""
    if pinned != "auto":
        if pinned not in VERSIONS:
            raise ValueError(f"scheduler.rest_api is {pinned}, which stardock does not speak "
                             f"(it speaks {', '.join(SUPPORTED)})")
        if offers and pinned not in offers:
            raise ValueError(f"scheduler.rest_api is {pinned}, but the server offers only {', '.join(offers)}")
        return VERSIONS[pinned], "site config (scheduler.rest_api)"
    for name in SUPPORTED:
        if name in offers:
            return VERSIONS[name], f"newest of {', '.join(offers)} offered by the server"
    raise ValueError(f"the server offers API versions {', '.join(offers) or '(none)'}; stardock speaks "
                     f"{', '.join(SUPPORTED)} (Slurm 20.11 to 22.05)")


def script_with_args(script: str, args: List[str]) -> str:
    """The job script with its arguments set by a `set --` line after the #SBATCH header (see
    ARGV_KILLS_SERVER); the header stays first, so Slurm and the wrapper see the same script."""
    if not args:
        return script
    lines = script.splitlines(keepends=True)
    at = 1
    while at < len(lines) and (not lines[at].strip() or lines[at].lstrip().startswith("#")):
        at += 1
    line = "set -- " + " ".join(shlex.quote(a) for a in args) + "  # the script's arguments\n"
    return "".join(lines[:at] + [line] + lines[at:])
