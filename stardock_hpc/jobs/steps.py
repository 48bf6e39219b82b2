"""Slurm's commands from inside a job's container: srun steps whose tasks run in the environment.

The batch script runs in the container, where Slurm's client is not. The node wrapper binds
wrappers/stardock-slurm at /.stardock/bin/{srun,scontrol,...} (first on PATH) and a directory
private to the job at /.stardock/rpc, and serves it from a thread (StepServer):

  * the shim makes a request directory there: its arguments (NUL-separated), environment
    (`env -0`), working directory, and named pipes for output, error, input, the exit status and
    signals; then writes the directory's name to the `requests` pipe;
  * the server runs the command on the host, in the job, with the pipes as its standard streams:
    `srun OPTIONS <python> stardock-node --task STEPFILE -- PROGRAM...` for srun (every task then
    starts its own container: jobs/node.py run_task), the command as given for scontrol, squeue,
    sacct, sinfo, sstat and scancel; it forwards the signals the shim receives and writes the
    exit status, which the shim exits with.

The step file (in the user's private records directory, which every node sees) carries the
launch and the script's environment at the moment srun was called; each task takes it with its
own SLURM_* and PMI variables from slurmstepd. Nothing the container writes is trusted beyond
what the user may do anyway: the commands run as the user, in the job.
"""
from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from stardock_hpc.errors import StardockError
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.slurm import srun as srun_cli

SHIM = "stardock-slurm"
PASSED_THROUGH = ("scontrol", "squeue", "sacct", "sinfo", "sstat", "scancel")
COMMANDS = ("srun", "sbcast", *PASSED_THROUGH)
BIN_IN_CONTAINER = "/.stardock/bin"
RPC_IN_CONTAINER = "/.stardock/rpc"
REQUEST_RE = re.compile(r"r\.[A-Za-z0-9]{8}")
SIGNALS = {name: getattr(signal, f"SIG{name}") for name in ("INT", "TERM", "HUP", "USR1", "USR2", "QUIT")}
# What slurmstepd gives each task (Slurm's variables, PMIx's and PMI2's), over the script's values
TASK_PREFIXES = ("SLURM", "PMI")


def make_bin(directory: Path, shim: Path) -> None:
    """The directory bound at /.stardock/bin: the shim under each command's name."""
    directory.mkdir(mode=0o700)
    text = shim.read_text()
    for name in COMMANDS:
        path = directory / name
        path.write_text(text)
        path.chmod(0o500)
    directory.chmod(0o500)


@dataclass
class Step:
    """What a task of a step needs, written by the server, read by every task (run_task)."""

    launch: Launch
    env: Dict[str, str]       # the script's environment when it called srun
    cwd: str                  # its working directory in the container
    output: str               # the job's output directory on the host
    label: str                # the job's label (123 or 123_4)

    def to_json(self) -> str:
        return json.dumps({"launch": json.loads(self.launch.to_json()), "env": self.env, "cwd": self.cwd,
                           "output": self.output, "label": self.label})

    @classmethod
    def from_json(cls, text: str) -> Step:
        data = json.loads(text)
        return cls(Launch.from_json(json.dumps(data["launch"])), dict(data["env"]), str(data["cwd"]),
                   str(data["output"]), str(data["label"]))


def task_env(step_env: Dict[str, str], host_env: Dict[str, str]) -> Dict[str, str]:
    """The script's environment with each task's own Slurm and PMI variables."""
    env = {k: v for k, v in step_env.items() if not k.startswith(TASK_PREFIXES)}
    env.update({k: v for k, v in host_env.items() if k.startswith(TASK_PREFIXES)})
    return env


def multi_prog_file(conf: str, prefix: Sequence[str]) -> str:
    """srun --multi-prog's configuration with the task wrapper in front of each line's program
    (the ranks field and the program as written; Slurm still expands %t and %o)."""
    lines = []
    for line in conf.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            lines.append(line)
            continue
        ranks, *rest = re.split(r"\s+", stripped, maxsplit=1)
        if not rest:
            raise StardockError(f"the --multi-prog line {stripped!r} names no program")
        lines.append(f"{ranks} {' '.join(shlex.quote(p) for p in prefix)} -- {rest[0]}")
    return "\n".join(lines) + "\n"


MAX_REQUEST = 4 << 20  # bytes of arguments or environment


def _read(dfd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{name} is not a file")
        data = os.read(fd, MAX_REQUEST + 1)
        if len(data) > MAX_REQUEST:
            raise ValueError(f"{name} is too large")
        return data
    finally:
        os.close(fd)


def _pipe(dfd: int, name: str, flags: int) -> int:
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{name} is not a named pipe")
    return fd


class StepServer:
    """Serves the job's requests (see the module's docstring) until stopped."""

    def __init__(self, rpc: Path, steps: Path, launch: Launch, output: Path, label: str,
                 mounts: Dict[str, Path], python: str = sys.executable,
                 wrapper: Optional[Path] = None) -> None:
        self.rpc, self.steps, self.launch, self.output, self.label = rpc, steps, launch, output, label
        self.mounts = mounts          # container path -> host path, for files srun must read
        self.python = python
        if wrapper is None:
            from stardock_hpc.resources import data_dir
            wrapper = data_dir("wrappers") / "stardock-node"
        self.wrapper = wrapper
        self.counter = 0
        self.lock = threading.Lock()
        os.mkfifo(rpc / "requests", 0o600)
        self.fd = os.open(rpc / "requests", os.O_RDWR | os.O_CLOEXEC)  # never at end of file
        self.thread = threading.Thread(target=self._serve, name="stardock-steps", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                name = line.decode("ascii", "replace")
                if REQUEST_RE.fullmatch(name):
                    threading.Thread(target=self._handle, args=(self.rpc / name,), daemon=True).start()

    def _handle(self, req: Path) -> None:
        """One request. What is in the request directory was made in the container: it is opened
        below the directory's descriptor without following links, and the pipes must be pipes
        (a link planted there would let the container write or read host files through us)."""
        try:
            dfd = os.open(req, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        fds: Dict[str, int] = {}
        try:
            if os.fstat(dfd).st_uid != os.getuid():
                return
            args = [a.decode("utf-8", "surrogateescape") for a in _read(dfd, "argv").split(b"\0")[:-1]]
            env = dict(e.decode("utf-8", "surrogateescape").partition("=")[::2]
                       for e in _read(dfd, "env").split(b"\0") if b"=" in e)
            cwd = _read(dfd, "cwd").decode("utf-8", "surrogateescape")
            for name, flags in (("out", os.O_WRONLY), ("err", os.O_WRONLY), ("in", os.O_RDONLY),
                                ("signal", os.O_RDWR | os.O_NONBLOCK)):
                fds[name] = _pipe(dfd, name, flags)
        except (OSError, ValueError):
            for fd in fds.values():
                os.close(fd)
            os.close(dfd)
            return
        code = 127
        step_file: Optional[Path] = None
        try:
            command, step_file = self._command(args, env, cwd)
            child = subprocess.Popen(command, stdin=fds["in"], stdout=fds["out"], stderr=fds["err"],
                                     env=self._host_env(env), start_new_session=True)
            for name in ("in", "out", "err"):
                os.close(fds.pop(name))
            code = self._wait(child, fds["signal"])
        except StardockError as exc:
            os.write(fds["err"], f"stardock: {args[0] if args else 'srun'}: {exc}\n".encode())
            code = 1 if args and args[0] == "sbcast" else 2
        except OSError as exc:
            os.write(fds["err"], f"stardock: cannot run {args[0] if args else '?'}: {exc.strerror}\n".encode())
        finally:
            for fd in fds.values():
                os.close(fd)
            if step_file is not None:
                for leftover in (step_file, step_file.with_suffix(".conf")):
                    try:
                        leftover.unlink()
                    except OSError:
                        pass
            try:
                status = _pipe(dfd, "status", os.O_WRONLY)
                os.write(status, f"{code}\n".encode())
                os.close(status)
            except OSError:
                pass
            os.close(dfd)

    def _wait(self, child: subprocess.Popen, sig: int) -> int:
        while True:
            try:
                ready, _, _ = select.select([sig], [], [], 0.5)
            except InterruptedError:
                ready = []
            if ready:
                try:
                    names = os.read(sig, 4096).decode("ascii", "replace").split()
                except BlockingIOError:
                    names = []
                for name in names:
                    if name in SIGNALS and child.poll() is None:
                        child.send_signal(SIGNALS[name])
            status = child.poll()
            if status is not None:
                return status if status >= 0 else 128 - status

    def _host_env(self, env: Dict[str, str]) -> Dict[str, str]:
        """The wrapper's own environment (the batch step's) with the Slurm and srun variables
        the script set or changed (srun reads its defaults from them)."""
        host = dict(os.environ)
        host.update({k: v for k, v in env.items() if k.startswith(("SLURM_", "SRUN_"))})
        return host

    def _command(self, args: List[str], env: Dict[str, str], cwd: str):
        name, rest = args[0], args[1:]
        if name in PASSED_THROUGH:
            return [name, *rest], None
        if name == "sbcast":
            raise StardockError("sbcast copies files to the nodes' own disks, which the job's containers do not "
                                "see; put the file in the output directory or a volume (every node sees those)")
        if name != "srun":
            raise StardockError(f"{name} is not served here")
        split = srun_cli.split(rest)
        if not split.program:
            return ["srun", *split.options], None  # --help, --version, --usage
        with self.lock:
            self.counter += 1
            step_file = self.steps / f"{self.label}.{os.getpid()}.{self.counter}.step.json"
        fd = os.open(step_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(Step(self.launch, env, cwd, str(self.output), self.label).to_json())
        prefix = [self.python, str(self.wrapper), "--task", str(step_file)]
        if not split.multi_prog:
            return ["srun", *split.options, *prefix, "--", *split.program], step_file
        try:
            conf = self._host_path(split.program[0], cwd, "the --multi-prog file")
            text = multi_prog_file(conf.read_text(), prefix)
            multi = step_file.with_suffix(".conf")
            fd = os.open(multi, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
        except BaseException:
            step_file.unlink()
            raise
        return ["srun", *split.options, str(multi), *split.program[1:]], step_file

    def _host_path(self, path: str, cwd: str, what: str) -> Path:
        """A file the script names, on the host: it must be in the output directory or a volume."""
        full = os.path.normpath(path if path.startswith("/") else os.path.join(cwd, path))
        for target, host in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if full == target or full.startswith(target.rstrip("/") + "/"):
                return host / os.path.relpath(full, target)
        raise StardockError(f"{what} {path} is inside the image; put it in the output directory or a volume "
                            "(srun reads it on the host)")

    def stop(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
