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
own SLURM_* and PMI variables from slurmstepd.

The container is a boundary: what runs in it asks the host for Slurm's steps and facts, and
nothing else (slurm/steppolicy.py: every option and variable of every command by an allow-list).
What is enforced here: an option that is not allowed is refused with one message naming it and
why (exit 2, in the job's log); srun's options naming the tasks' files, working directory and
environment are taken in the container's view, never handed to the host's srun (--output, --error,
--input: opened by each task's wrapper without following links, jobs/stepview.py; --multi-prog and
node list files: read now and copied; --chdir: the tasks' directory in the container; --export:
the tasks' environment in the container); of the variables the container set or changed, the
host's command gets only those that stand for an allowed option or are the command's own
harmless ones (the rest stay in the container), and the host's srun always exports the job's own
environment to the task wrappers (never one the container chose: LD_PRELOAD or PYTHONPATH there
would run the container's code on the host).
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
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.jobs import stepview
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.slurm import getopt
from stardock_hpc.slurm import srun as srun_cli
from stardock_hpc.slurm.getopt import Option
from stardock_hpc.slurm.steppolicy import (
    CLIENTS,
    IN_CONTAINER,
    PASS,
    SRUN_ENV_IN_CONTAINER,
    SRUN_ENV_PASS,
    SRUN_OPTIONS,
    env_problem,
    scontrol_problem,
    srun_problem,
)

SHIM = "stardock-slurm"
PASSED_THROUGH = tuple(CLIENTS)  # scontrol, squeue, sacct, sinfo, sstat, scancel
COMMANDS = ("srun", "sbcast", *PASSED_THROUGH)
BIN_IN_CONTAINER = "/.stardock/bin"
RPC_IN_CONTAINER = "/.stardock/rpc"
REQUEST_RE = re.compile(r"r\.[A-Za-z0-9]{8}")
SIGNALS = {name: getattr(signal, f"SIG{name}") for name in ("INT", "TERM", "HUP", "USR1", "USR2", "QUIT")}
# What slurmstepd gives each task (Slurm's variables, PMIx's and PMI2's), over the script's values
TASK_PREFIXES = ("SLURM", "PMI")
# stardock's own variables in the container (its output directory, image...): kept whatever --export says
OWN_PREFIX = "STARDOCK_"


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
    # srun's --output, --error, --input as filename patterns in the container's view (absolute),
    # opened by each task's wrapper (jobs/stepview.py); --open-mode
    stdout: Optional[str] = None
    stderr: Optional[str] = None
    stdin: Optional[str] = None
    open_mode: Optional[str] = None

    def to_json(self) -> str:
        return json.dumps({"launch": json.loads(self.launch.to_json()), "env": self.env, "cwd": self.cwd,
                           "output": self.output, "label": self.label, "stdout": self.stdout,
                           "stderr": self.stderr, "stdin": self.stdin, "open_mode": self.open_mode})

    @classmethod
    def from_json(cls, text: str) -> Step:
        data = json.loads(text)
        return cls(Launch.from_json(json.dumps(data["launch"])), dict(data["env"]), str(data["cwd"]),
                   str(data["output"]), str(data["label"]), data.get("stdout"), data.get("stderr"),
                   data.get("stdin"), data.get("open_mode"))


def task_env(step_env: Dict[str, str], host_env: Dict[str, str]) -> Dict[str, str]:
    """The script's environment with each task's own Slurm and PMI variables. A Slurm variable
    the script set and the task has none of stays (the host's srun never saw it)."""
    env = {k: v for k, v in step_env.items() if not k.startswith("PMI")}
    env.update({k: v for k, v in host_env.items() if k.startswith(TASK_PREFIXES)})
    return env


def open_streams(step: Step, environ: Dict[str, str]) -> None:
    """In a task's wrapper (jobs/node.py run_task), before its container starts: the step's
    --output, --error and --input files become this process's standard streams, which the
    container inherits. srun's rule: without --error, errors go to the --output file too."""
    places = stepview.view(step.launch, step.output)
    if step.stdin:
        fd = stepview.open_task_file(places, step.stdin, environ, False, False)
        os.dup2(fd, 0)
        os.close(fd)
    out = None
    if step.stdout:
        out = stepview.open_task_file(places, step.stdout, environ, True,
                                      stepview.truncates(step.stdout, environ, step.open_mode))
        os.dup2(out, 1)
    if step.stderr:
        fd = out if out is not None and step.stderr == step.stdout else stepview.open_task_file(
            places, step.stderr, environ, True, stepview.truncates(step.stderr, environ, step.open_mode))
        os.dup2(fd, 2)
        if fd != out:
            os.close(fd)
    if out is not None:
        os.close(out)


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


def _remove(paths: List[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass
    paths.clear()


def _pipe(dfd: int, name: str, flags: int) -> int:
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{name} is not a named pipe")
    return fd


@dataclass
class HostCommand:
    """What the host runs for a request: the command line, its environment, its directory."""

    argv: List[str]
    env: Dict[str, str]
    cwd: Optional[str]


class StepServer:
    """Serves the job's requests (see the module's docstring) until stopped."""

    def __init__(self, rpc: Path, steps: Path, launch: Launch, output: Path, label: str,
                 python: str = sys.executable, wrapper: Optional[Path] = None) -> None:
        self.rpc, self.steps, self.launch, self.output, self.label = rpc, steps, launch, output, label
        self.places = stepview.view(launch, str(output))  # what the container shares with the host
        # the job's own environment: what the container set or changed is judged against it
        self.baseline = dict(os.environ)
        # Slurm's other commands run in an empty directory of the job's that the container does
        # not see (scontrol update writes slurm_job_<id>_resize.* into its working directory)
        self.quiet_dir = tempfile.mkdtemp(prefix="commands-", dir=rpc.parent)
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
        made: List[Path] = []
        try:
            command = self._command(args, env, cwd, made)
            child = subprocess.Popen(command.argv, stdin=fds["in"], stdout=fds["out"], stderr=fds["err"],
                                     env=command.env, cwd=command.cwd, start_new_session=True)
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
            _remove(made)
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

    def _command(self, args: List[str], env: Dict[str, str], cwd: str, made: List[Path]) -> HostCommand:
        """What the host runs for a request, judged by slurm/steppolicy.py; the files it makes
        for the command go into made (removed once it ends)."""
        name, rest = args[0], args[1:]
        changed = {k: v for k, v in env.items() if self.baseline.get(k) != v}
        for var in sorted(changed):
            why = env_problem(var)
            if why:
                raise UsageError(f"${var} is refused: {why} (it is set in the container)")
        if name in CLIENTS:
            return self._client(name, rest, changed)
        if name == "sbcast":
            raise StardockError("sbcast copies files to the nodes' own disks, which the job's containers do not "
                                "see; put the file in the output directory or a volume (every node sees those)")
        if name != "srun":
            raise StardockError(f"{name} is not served here")
        try:
            return self._srun(rest, env, changed, cwd, made)
        except BaseException:
            _remove(made)  # a step refused halfway leaves nothing
            raise

    def _client(self, name: str, rest: List[str], changed: Dict[str, str]) -> HostCommand:
        client = CLIENTS[name]
        options, operands, _stop = getopt.parse(client.table, rest)
        for option in options:
            if option.name in client.refused:
                raise UsageError(f"{option.shown()} is refused: {client.refused[option.name]}")
        why = scontrol_problem(operands, options) if name == "scontrol" else None
        if why:
            raise UsageError(why)
        host = dict(self.baseline)
        host.update({k: v for k, v in changed.items() if k in client.env})
        return HostCommand([name, *rest], host, self.quiet_dir)

    def _srun(self, rest: List[str], env: Dict[str, str], changed: Dict[str, str], cwd: str,
              made: List[Path]) -> HostCommand:
        host = dict(self.baseline)
        host.update({k: v for k, v in changed.items() if k in SRUN_ENV_PASS})
        # variables that stand for an option: judged as that option; the allowed ones reach the
        # host's srun as they are, the ones taken in the container's view apply to each component
        in_view: List[Option] = []
        for option in srun_cli.env_options(changed):
            var = option.written[1:]
            why = srun_problem(option)
            if why:
                raise UsageError(f"{option.shown()} is refused: {why}")
            if SRUN_OPTIONS[option.name] == PASS:
                host[var] = option.value or ""
            elif option.name != "export":
                in_view.append(option)
        # --export's variables apply as srun reads them, set here or not (sbatch --export=NONE sets
        # SLURM_EXPORT_ENV=NONE for the job's steps)
        exports = srun_cli.env_options({k: env[k] for k in ("SLURM_EXPORT_ENV", "SRUN_EXPORT_ENV") if k in env})
        for var in SRUN_ENV_IN_CONTAINER & set(changed):  # SLURM_HOSTFILE: a node list file
            data = stepview.read_in_view(self.places, changed[var], cwd, f"${var}")
            host[var] = str(self._private(made, "nodes", data))
        # the task wrappers get the job's environment, never one the container chose
        host["SLURM_EXPORT_ENV"] = "ALL"
        host.pop("SRUN_EXPORT_ENV", None)
        argv = ["srun"]
        for n, component in enumerate(srun_cli.components(rest)):
            if n:
                argv.append(srun_cli.HET_SEPARATOR)
            argv += self._component(component, [*exports, *in_view], env, cwd, made)
        return HostCommand(argv, host, None)

    def _component(self, component: srun_cli.Component, from_env: List[Option], env: Dict[str, str], cwd: str,
                   made: List[Path]) -> List[str]:
        """One component of the step: its options for the host's srun, and its step file."""
        options: List[str] = []
        taken: Dict[str, Option] = {}  # the ones taken in the container's view: the last one wins
        for option in [*from_env, *component.options]:
            why = srun_problem(option)
            if why:
                raise UsageError(f"{option.shown()} is refused: {why}")
            if SRUN_OPTIONS[option.name] == PASS:
                options += option.tokens
            elif option.name == "multi-prog":
                options += option.tokens
            elif option.name == "jobid":
                own = self.baseline.get("SLURM_JOB_ID")
                if option.value != own:
                    raise UsageError(f"{option.shown()} is refused: it names another job ({option.value}) than this "
                                     f"one ({own})")
                options += option.tokens
            elif option.name in ("nodefile", "nodelist", "exclude"):
                if option.name != "nodefile" and "/" not in (option.value or ""):
                    options += option.tokens
                    continue
                data = stepview.read_in_view(self.places, option.value or "", cwd, f"the {option.shown()} file")
                options.append(f"--{option.name}={self._private(made, 'nodes', data)}")
            else:
                assert SRUN_OPTIONS[option.name] == IN_CONTAINER
                taken[option.name] = option
        chdir = taken.get("chdir")
        step_cwd = stepview.absolute(chdir.value or "", cwd) if chdir else cwd
        export = taken.get("export")
        step_env = srun_cli.exported(export.value if export else None, env)
        step_env.update({k: v for k, v in env.items() if k.startswith(OWN_PREFIX)})
        streams: Dict[str, Optional[str]] = {}
        for name in ("output", "error", "input"):
            stream = taken.get(name)
            if stream is None:
                continue
            value = stream.value or ""
            if srun_cli.is_io_mode(value):
                options.append(f"--{name}={value}")
                continue
            why = srun_cli.pattern_problem(value)
            if why:
                raise UsageError(f"{stream.shown()} {value!r} is refused: {why}")
            streams[name], _place = stepview.in_view(self.places, value, step_cwd, name != "input", stream.shown())
        if streams.get("output") and "error" not in taken:
            streams["error"] = streams["output"]
        if not component.program:
            return options  # --help, --version, --usage; srun refuses a step without a program
        open_mode = taken.get("open-mode")
        step = Step(self.launch, step_env, step_cwd, str(self.output), self.label, streams.get("output"),
                    streams.get("error"), streams.get("input"), open_mode.value if open_mode else None)
        step_file = self._private(made, "json", step.to_json().encode())
        prefix = [self.python, str(self.wrapper), "--task", str(step_file)]
        if not component.multi_prog:
            return [*options, *prefix, "--", *component.program]
        conf = stepview.read_in_view(self.places, component.program[0], cwd, "the --multi-prog file")
        text = multi_prog_file(conf.decode("utf-8", "surrogateescape"), prefix)
        multi = self._private(made, "conf", text.encode("utf-8", "surrogateescape"))
        return [*options, str(multi), *component.program[1:]]

    def _private(self, made: List[Path], kind: str, data: bytes) -> Path:
        """A file of the request's in the user's private records directory (every node sees it),
        removed when the request ends (or by the job's wrapper, if it is cut short)."""
        with self.lock:
            self.counter += 1
            path = self.steps / f"{self.label}.{os.getpid()}.{self.counter}.step.{kind}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        made.append(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return path

    def stop(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
