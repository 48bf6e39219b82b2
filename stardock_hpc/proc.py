"""The one way stardock-hpc runs a program: argument lists, never a shell.

Tests of output parsing patch `run` here; everything else calls it.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Union

from stardock_hpc.errors import ExternalError

PathLike = Union[str, "os.PathLike[str]"]


_debug = [False]


def enable_debug() -> None:
    """--debug: every program run is logged (logging is loaded for it only)."""
    import logging
    logging.basicConfig(level=logging.DEBUG, format="stardock: debug: %(message)s")
    _debug[0] = True


def debug(message: str, *args: object) -> None:
    if _debug[0]:
        import logging
        logging.getLogger(__name__).debug(message, *args)


@dataclass(frozen=True)
class Result:
    argv: tuple
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 20) -> str:
        text = (self.stderr or self.stdout).rstrip()
        return "\n".join(text.splitlines()[-lines:])


def run(
    argv: Sequence[PathLike],
    *,
    check: bool = True,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
    input: Optional[str] = None,
    timeout: Optional[float] = None,
    on_line: Optional[Callable[[str], None]] = None,
) -> Result:
    """Run argv and return its output.

    env replaces the environment when given (callers build it explicitly). With on_line, stdout
    and stderr are merged and each line is handed over as it arrives (build progress); the
    merged text is returned as stdout.
    """
    args = tuple(os.fspath(a) for a in argv)
    debug("run: %s", shlex.join(args))
    try:
        if on_line is None:
            proc = subprocess.run(args, env=env, cwd=cwd, input=input, timeout=timeout,
                                  capture_output=True, text=True, check=False,
                                  stdin=None if input is not None else subprocess.DEVNULL)
            result = Result(args, proc.returncode, proc.stdout, proc.stderr)
        else:
            result = _run_streaming(args, env, cwd, timeout, on_line)
    except FileNotFoundError as exc:
        raise ExternalError(f"{args[0]} is not installed or not on PATH",
                            hint="see `stardock doctor`") from exc
    except subprocess.TimeoutExpired as exc:
        raise TimedOut(f"{shlex.join(args)} did not finish within {timeout:g}s") from exc
    if check and not result.ok:
        raise ExternalError(f"{shlex.join(args[:3])}{' ...' if len(args) > 3 else ''} "
                            f"exited {result.returncode}:\n{result.tail()}")
    return result


def _run_streaming(args: tuple, env, cwd, timeout, on_line) -> Result:
    """Lines are read by a thread, so the timeout holds even while the program prints nothing;
    on timeout or an exception here (a signal turned into one by `stoppable`) the program gets
    SIGTERM, then SIGKILL: whatever it started elsewhere is for the caller to stop."""
    lines: List[str] = []
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, text=True, errors="replace",
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    assert proc.stdout is not None

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            on_line(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except BaseException:
        _terminate(proc)
        raise
    finally:
        reader.join(timeout=5.0)  # a process it left behind may hold the pipe open: not our wait
    text = "\n".join(lines) + ("\n" if lines else "")
    return Result(args, proc.returncode, text, "")


def _terminate(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM first (an engine cleans up after itself on it), SIGKILL after grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_interactive(argv: Sequence[PathLike], *, env: Optional[Mapping[str, str]] = None) -> int:
    """Run argv on the user's terminal (stdin, stdout, stderr inherited); return its status."""
    args = tuple(os.fspath(a) for a in argv)
    debug("run (interactive): %s", shlex.join(args))
    try:
        return subprocess.call(args, env=env)
    except FileNotFoundError as exc:
        raise ExternalError(f"{args[0]} is not installed or not on PATH") from exc


def spawn(argv: Sequence[PathLike], *, env: Optional[Mapping[str, str]] = None, pipes: bool = False,
          stderr: Optional[int] = None, detach: bool = False) -> subprocess.Popen:
    """Start argv and return at once: with pipes, its stdin and stdout are ours to talk over
    (bytes); detach: in a session of its own, with nothing of our terminal."""
    args = tuple(os.fspath(a) for a in argv)
    debug("spawn: %s", shlex.join(args))
    try:
        return subprocess.Popen(args, env=env, stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                                stdout=subprocess.PIPE if pipes else subprocess.DEVNULL, stderr=stderr,
                                start_new_session=detach, close_fds=True)
    except FileNotFoundError as exc:
        raise ExternalError(f"{args[0]} is not installed or not on PATH") from exc


class TimedOut(ExternalError):
    """A program ran past its timeout (and was stopped)."""
