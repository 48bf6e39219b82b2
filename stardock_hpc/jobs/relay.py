"""A notebook's way from the login node to its server on a compute node, through Slurm alone: no
sshd on the nodes and no TCP port anywhere.

On the login node a forwarder listens on a Unix socket in a directory only the user can enter
(`ssh -L PORT:SOCKET login` reaches it from the user's own computer). It carries every
connection over one `srun --overlap` step of the notebook's job, whose task (node_side) opens a
connection of its own to the server's socket in the job's private directory for each.

Frames on the step's stdin and stdout: kind (1 byte), stream (4), length (4), payload. OPEN
starts a stream, DATA carries its bytes in order, CLOSE ends it (from either side).
"""
from __future__ import annotations

import itertools
import os
import socket
import stat
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

OPEN, DATA, CLOSE = 1, 2, 3
HEADER = struct.Struct(">BII")
CHUNK = 65536


def frame(kind: int, stream: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, stream, len(payload)) + payload


def _read_exactly(fd: int, n: int) -> Optional[bytes]:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(fd: int) -> Optional[Tuple[int, int, bytes]]:
    """The next frame, or None at the end of the pipe. A frame that cannot be ours ends it too."""
    head = _read_exactly(fd, HEADER.size)
    if head is None:
        return None
    kind, stream, length = HEADER.unpack(head)
    if kind not in (OPEN, DATA, CLOSE) or length > CHUNK:
        raise ValueError(f"not a relay frame (kind {kind}, length {length})")
    payload = _read_exactly(fd, length) if length else b""
    return None if payload is None else (kind, stream, payload)


class Mux:
    """One side's streams over one pipe of frames."""

    def __init__(self, out_fd: int) -> None:
        self.out_fd = out_fd
        self.lock = threading.Lock()
        self.streams: Dict[int, socket.socket] = {}
        self.broken = False

    def send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        data = memoryview(frame(kind, stream, payload))
        with self.lock:
            try:
                while data:
                    data = data[os.write(self.out_fd, data):]
            except OSError:
                self.broken = True

    def add(self, stream: int, sock: socket.socket, announce: bool = False) -> None:
        """A stream for sock; announce: tell the other side first (OPEN), before any of its bytes."""
        self.streams[stream] = sock
        if announce:
            self.send(OPEN, stream)
        threading.Thread(target=self._pump, args=(stream, sock), daemon=True).start()

    def _pump(self, stream: int, sock: socket.socket) -> None:
        """The socket's bytes out as frames until it ends, then CLOSE (unless the other side closed)."""
        try:
            while True:
                data = sock.recv(CHUNK)
                if not data:
                    break
                self.send(DATA, stream, data)
        except OSError:
            pass
        if self.streams.pop(stream, None) is not None:
            self.send(CLOSE, stream)
        sock.close()

    def deliver(self, kind: int, stream: int, payload: bytes) -> None:
        sock = self.streams.get(stream)
        if sock is None:
            return
        if kind == DATA:
            try:
                sock.sendall(payload)
                return
            except OSError:
                pass
            self.send(CLOSE, stream)
        self.streams.pop(stream, None)
        try:
            sock.shutdown(socket.SHUT_RDWR)  # its pump sees the end and closes it
        except OSError:
            pass

    def close_all(self) -> None:
        for stream in list(self.streams):
            self.deliver(CLOSE, stream, b"")


def check_private_socket(path: str) -> None:
    """The server's socket: ours, in a directory of ours that nobody else can enter, no link on the
    way. Raises OSError otherwise."""
    uid = os.getuid()
    parent = os.lstat(os.path.dirname(path))
    if not stat.S_ISDIR(parent.st_mode) or parent.st_uid != uid or parent.st_mode & 0o077:
        raise PermissionError(f"{os.path.dirname(path)} is not a private directory of yours")
    st = os.lstat(path)
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != uid:
        raise PermissionError(f"{path} is not a socket of yours")


def node_side(server: str, in_fd: int = 0, out_fd: int = 1) -> int:
    """The step's task on the compute node: each stream opened on stdin becomes a connection to
    the server's socket."""
    try:
        check_private_socket(server)
    except OSError as exc:
        print(f"stardock-relay: {exc}", file=sys.stderr)
        return 1
    mux = Mux(out_fd)
    while True:
        got = read_frame(in_fd)
        if got is None:
            break
        kind, stream, payload = got
        if kind != OPEN:
            mux.deliver(kind, stream, payload)
            continue
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(server)
        except OSError:
            sock.close()
            mux.send(CLOSE, stream)
            continue
        mux.add(stream, sock)
    mux.close_all()
    return 0


class Forwarder:
    """The login side: listens on a private Unix socket, starts the step when a connection needs
    it (again, should it end while the job still runs) and stops when the job has ended."""

    def __init__(self, listen: Path, step_argv: List[str], alive: Callable[[], bool],
                 log: Callable[[str], None]) -> None:
        self.listen, self.step_argv, self.alive, self.log = listen, step_argv, alive, log
        self.ids = itertools.count(1)
        self.mux: Optional[Mux] = None
        self.step_lock = threading.Lock()
        self.stopped = False
        self.failures = 0  # steps in a row that ended at once: the job is gone

    def _step(self) -> Mux:
        """The running step's mux, started when there is none."""
        from stardock_hpc import proc

        with self.step_lock:
            if self.mux is not None and not self.mux.broken:
                return self.mux
            step = proc.spawn(self.step_argv, pipes=True)
            assert step.stdin is not None and step.stdout is not None
            mux = Mux(step.stdin.fileno())
            self.mux = mux
            threading.Thread(target=self._read_step, args=(step, mux), daemon=True).start()
            self.log(f"started the relay step (pid {step.pid})")
            return mux

    def _read_step(self, step, mux: Mux) -> None:
        started = time.monotonic()
        try:
            while True:
                got = read_frame(step.stdout.fileno())
                if got is None:
                    break
                mux.deliver(*got)
        except (OSError, ValueError) as exc:
            self.log(f"the relay step's output: {exc}")
        mux.broken = True
        mux.close_all()
        for pipe in (step.stdin, step.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        step.wait()
        self.log(f"the relay step ended (exit {step.returncode})")
        self.failures = self.failures + 1 if step.returncode and time.monotonic() - started < 10 else 0
        if self.failures >= 3:
            self.log("the relay step cannot start: the forwarder stops")
            self.stopped = True

    def serve(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.listen))
        finally:
            os.umask(old)
        listener.listen(64)
        listener.settimeout(5.0)
        checked = time.monotonic()
        try:
            while not self.stopped:
                try:
                    conn, _ = listener.accept()
                except socket.timeout:
                    conn = None
                if time.monotonic() - checked > 10 or conn is None:
                    checked = time.monotonic()
                    if not self.alive():
                        self.log("the job has ended: the forwarder stops")
                        break
                if conn is None:
                    continue
                conn.settimeout(None)
                mux = self._step()
                stream = next(self.ids)
                mux.add(stream, conn, announce=True)
        finally:
            listener.close()
            try:
                self.listen.unlink()
            except OSError:
                pass
            if self.mux is not None:
                self.mux.close_all()


def _record_alive(path: Path) -> Callable[[], bool]:
    """The job is alive while its run record is missing (not written yet) or says running."""
    import json

    def alive() -> bool:
        try:
            return json.loads(path.read_text()).get("state") == "running"
        except FileNotFoundError:
            return True
        except (OSError, ValueError, AttributeError):
            return False
    return alive


def main(argv: Optional[List[str]] = None) -> None:
    """node SOCKET (the step's task) | login LISTEN RECORD LOG -- STEP_ARGV... (the forwarder)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "node":
        sys.exit(node_side(args[1]))
    if len(args) > 5 and args[0] == "login" and args[4] == "--":
        import signal

        listen, record, log_path = Path(args[1]), Path(args[2]), Path(args[3])
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

        def log(text: str) -> None:
            os.write(log_fd, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n".encode())

        forwarder = Forwarder(listen, args[5:], _record_alive(record), log)

        def stop(_sig: int, _frame: object) -> None:
            raise SystemExit(0)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        log(f"forwarding {listen} (pid {os.getpid()})")
        forwarder.serve()
        sys.exit(0)
    print("usage: relay node SOCKET | relay login LISTEN RECORD LOG -- STEP_ARGV...", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
