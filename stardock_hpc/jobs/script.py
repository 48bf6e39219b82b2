"""Render the job script sbatch receives, from the skeleton slurm/job.sbatch.tmpl.

Its host part (everything before the wrapper's exec) runs outside the container, so nothing but
stardock's own text and the user's comment lines may land there: the header is checked again
here, metadata (a cache entry's name, key, engine) is shown in [A-Za-z0-9._-] with the rest
percent-encoded, and the job spec is one line of ASCII JSON, never the here-document's end marker.
"""
from __future__ import annotations

import shlex
import string
import sys
from pathlib import Path
from typing import Optional

from stardock_hpc import __version__
from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.resources import data_dir
from stardock_hpc.slurm.script import Script, is_host_line

TEMPLATE = "job.sbatch.tmpl"
WRAPPER = "stardock-node"
END_MARKER = "STARDOCK_JOB_SPEC"
SHOWN = frozenset(string.ascii_letters + string.digits + "._-")
SHOWN_MAX = 100


def shown(value: str) -> str:
    """A value as text in a comment line: [A-Za-z0-9._-] as is, every other character as the
    %XX of its UTF-8 bytes (so no value can end the line, and none is ambiguous), at most SHOWN_MAX."""
    text = "".join(c if c in SHOWN else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
                   for c in value)
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX] + "..."


def _host_header(script: Script) -> str:
    where = script.path or "the --wrap script"
    for number, line in enumerate(script.header, start=2):
        if not is_host_line(line):  # parse_script never lets one through; a Script made elsewhere might
            raise UsageError(f"{where}:{number}: {line[:60]!r} is not a plain comment to bash; only comment "
                             "lines may stand outside the container")
    return "\n".join(script.header) if script.header else "# (the batch script has no #SBATCH lines)"


def _one_line(value: str, what: str) -> str:
    if any(c in value for c in "\n\r\0") or value == END_MARKER:
        raise UsageError(f"cannot render the job script: the {what} {value[:60]!r} is not one plain line")
    return value


def render_job_script(script: Script, launch: Launch, python: str = sys.executable,
                      wrappers: Optional[Path] = None) -> str:
    """The job script: the batch script's header kept verbatim, then the wrapper call. python
    and wrappers default to this installation (the nodes share it)."""
    template = string.Template((data_dir("slurm") / TEMPLATE).read_text())
    wrapper = str((wrappers or data_dir("wrappers")) / WRAPPER)
    return template.substitute(
        header=_host_header(script), version=__version__, name=shown(launch.name), key12=shown(launch.key[:12]),
        engine=shown(launch.engine), python=shlex.quote(_one_line(python, "Python path")),
        wrapper=shlex.quote(_one_line(wrapper, "wrapper path")), jobspec=_one_line(launch.to_json(), "job spec"))
