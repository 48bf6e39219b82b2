"""`stardock shell`: an interactive session in an environment on a compute node (srun --pty).

StarDock's SSH access, without sshd or passwords: Slurm's own authentication. The node wrapper
starts the container on the terminal from a launch file in the user's records directory.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional

from stardock_hpc import proc
from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.request import SubmitRequest
from stardock_hpc.jobs.script import WRAPPER
from stardock_hpc.jobs.submit import prepare
from stardock_hpc.resources import data_dir
from stardock_hpc.site import Site
from stardock_hpc.slurm.script import Script

OWN = ("env", "image", "mount", "engine", "site")
DEFAULT_COMMAND = ["/bin/bash"]


class ShellRequest(NamedTuple):
    req: SubmitRequest          # stardock's options
    srun: List[str]             # srun's options, as given
    command: List[str]          # what runs in the container


def parse_shell_args(argv: List[str], cwd: Path) -> ShellRequest:
    """stardock's options out, srun's options (as given) before `--`, the command after it."""
    req = SubmitRequest(script=Script(None, "#!/bin/sh\n", []))
    srun: List[str] = []
    command: List[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            command = argv[i + 1:]
            break
        word, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        if token == "--debug":
            req.debug = True
        elif word in OWN:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"stardock shell: --{word} needs a value")
                value, i = argv[i + 1], i + 1
            if word == "env":
                req.spec_path = cwd / value
            elif word == "image":
                req.image = value
            elif word == "mount":
                req.mounts.append(value)
            elif word == "site":
                req.site = value
            else:
                req.engine = value
        else:
            srun.append(token)
        i += 1
    return ShellRequest(req, srun, command or list(DEFAULT_COMMAND))


def parse_exec_args(argv: List[str], cwd: Path) -> ShellRequest:
    """stardock exec: stardock's options, `--`, the command (no srun options: it runs here)."""
    parsed = parse_shell_args(argv, cwd)
    if parsed.srun:
        raise UsageError(f"stardock exec: unknown option {parsed.srun[0]!r}; it takes --env SPEC or --image KEY, "
                         "--mount, --engine, --site, then `--` and the command")
    if "--" not in argv or not argv[argv.index("--") + 1:]:
        raise UsageError("stardock exec: give the command after `--` (stardock exec --image KEY -- CMD [ARGS])")
    return parsed


def run_exec(request: ShellRequest, site: Site, on_line: Optional[Callable[[str], None]] = None) -> int:
    """Run the command here, in its own container; its exit status."""
    from stardock_hpc.jobs.node import run_exec as run_here

    prepared = prepare(request.req, site, on_line, command=request.command, interactive=sys.stdin.isatty())
    return run_here(prepared.launch, request.command, dict(os.environ))


def run_shell(shell: ShellRequest, site: Site,
              on_line: Optional[Callable[[str], None]] = None) -> int:
    """Run the session; its exit status."""
    prepared = prepare(shell.req, site, on_line, command=shell.command, interactive=True)
    fd, launch_file = tempfile.mkstemp(prefix="shell-", suffix=".json", dir=prepared.records)
    with os.fdopen(fd, "w") as fh:
        fh.write(prepared.launch.to_json())
    try:
        environ = dict(os.environ)
        if site.scheduler.partition and "SLURM_PARTITION" not in environ:
            environ["SLURM_PARTITION"] = site.scheduler.partition  # the site's default; -p still wins
        return proc.run_interactive(["srun", "--pty", *shell.srun, sys.executable,
                                     data_dir("wrappers") / WRAPPER, "--spec-file", launch_file], env=environ)
    finally:
        os.unlink(launch_file)
