"""Process trees: the processes an engine leaves below us, found and stopped.

Engines double-fork (conmon and the pause process for a job; a build's RUN step in a session
of its own), so a process that must stop everything it started becomes a child subreaper: every
orphan below it is reparented to it, not to init, and can be found by walking /proc.
"""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List

from stardock_hpc.errors import StardockError


class Interrupted(StardockError):
    """SIGTERM, SIGINT or SIGHUP arrived while a `stoppable` block ran."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def set_subreaper(on: bool) -> bool:
    """Make orphans of our descendants our children (not init's), so they can be found and stopped."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0


def descendants(root: int) -> List[int]:
    """Processes below root (as a subreaper, every orphan of ours is reparented to us)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


_stoppable_depth = [0]


def in_stoppable() -> bool:
    """Whether a `stoppable` block runs (then every descendant is the block's to stop)."""
    return _stoppable_depth[0] > 0


def stop_descendants(grace: float = 5.0) -> List[int]:
    """SIGTERM, then SIGKILL, every process below this one, and reap them."""
    me = os.getpid()
    left = descendants(me)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in descendants(me):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and descendants(me):
            reap_nowait()
            time.sleep(0.05)
        if not descendants(me):
            break
    reap_nowait()
    return left


def reap_nowait() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@contextmanager
def stoppable() -> Iterator[None]:
    """Run the block as a child subreaper, with SIGTERM/SIGINT/SIGHUP raising Interrupted (once:
    later ones are ignored while the block cleans up). When the block fails, for whatever
    reason, every process it left below us is stopped before the error goes on."""
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    raised: List[int] = []

    def handler(signum: int, _frame) -> None:
        if not raised:
            raised.append(signum)
            raise Interrupted(signum)

    set_subreaper(True)
    if main:
        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    _stoppable_depth[0] += 1
    try:
        yield
    except BaseException:
        if main:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        stop_descendants()
        raise
    finally:
        _stoppable_depth[0] -= 1
        for sig, old in previous.items():
            signal.signal(sig, old)
        if not in_stoppable():
            set_subreaper(False)
