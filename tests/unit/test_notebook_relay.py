"""The notebook's relay (jobs/relay.py) with real sockets and real processes: the login end (the
forwarder) and the node end (wrappers/stardock-relay, run here as the step would run it on the
node, without srun), a server on a Unix socket in a private directory. Many streams at once,
bytes intact both ways, ends of streams, the forwarder's end with its job, and the node end's
refusal of a socket anybody else could have planted."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stardock_hpc.jobs.relay import CLOSE, DATA, OPEN, Forwarder, frame, read_frame
from stardock_hpc.resources import data_dir

NODE_END = [sys.executable, str(data_dir("wrappers") / "stardock-relay")]


def serve(path: Path) -> threading.Thread:
    """A server on a Unix socket: for each connection, the sha256 of what it received once the
    client says `END`, then as many bytes as the client asked for in its first line."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(32)

    def one(conn: socket.socket) -> None:
        with conn:
            data = b""
            while not data.endswith(b"END"):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            size = int(data.split(b"\n", 1)[0])
            conn.sendall(hashlib.sha256(data).hexdigest().encode() + b"\n" + b"x" * size)

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def server(tmp_path):
    private = tmp_path / "job"
    private.mkdir(mode=0o700)
    path = private / "jupyter.sock"
    serve(path)
    return path


def talk(path: Path, size: int, payload: bytes) -> tuple:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    message = f"{size}\n".encode() + payload + b"END"
    sock.sendall(message)
    got = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    sock.close()
    digest, _, rest = got.partition(b"\n")
    return digest.decode(), len(rest), hashlib.sha256(message).hexdigest()


def test_frames_round_trip_and_a_corrupt_one_is_refused():
    r, w = os.pipe()
    os.write(w, frame(OPEN, 7) + frame(DATA, 7, b"abc") + frame(CLOSE, 7))
    assert [read_frame(r) for _ in range(3)] == [(OPEN, 7, b""), (DATA, 7, b"abc"), (CLOSE, 7, b"")]
    os.write(w, b"\x09\x00\x00\x00\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError):
        read_frame(r)
    os.close(w)
    assert read_frame(r) is None


@pytest.fixture
def forwarder(tmp_path, server):
    login = tmp_path / "login"
    login.mkdir(mode=0o700)
    listen = login / "notebook.sock"
    state = {"alive": True}
    lines: list = []
    fwd = Forwarder(listen, [*NODE_END, str(server)], lambda: state["alive"], lines.append)
    thread = threading.Thread(target=fwd.serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not listen.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield listen, state, thread, lines
    fwd.stopped = True
    thread.join(10)


def test_many_streams_at_once_carry_their_bytes_intact_both_ways(forwarder):
    listen, _state, _thread, _lines = forwarder
    assert oct(listen.stat().st_mode & 0o777) == "0o600"  # only the user can connect
    results = {}

    def client(i: int) -> None:
        payload = os.urandom(3000 * i + 1)
        results[i] = talk(listen, 200_000 + i, payload)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(12))
    for i, (digest, size, expected) in results.items():
        assert digest == expected and size == 200_000 + i


def test_the_forwarder_stops_and_removes_its_socket_when_the_job_has_ended(forwarder):
    listen, state, thread, lines = forwarder
    assert talk(listen, 10, b"hello")[1] == 10
    state["alive"] = False
    thread.join(20)
    assert not thread.is_alive() and not listen.exists()
    assert any("the job has ended" in line for line in lines), lines


def test_a_step_that_ends_is_started_again_for_the_next_connection(tmp_path, server):
    login = tmp_path / "login"
    login.mkdir(mode=0o700)
    listen = login / "nb.sock"
    lines: list = []
    # the node end exits after its first stream: the step "ended" while the job still runs
    once = [sys.executable, "-c", "import os; from stardock_hpc.jobs import relay; r = relay.read_frame(0); "
            "os.write(1, relay.frame(relay.CLOSE, r[1]))"]
    fwd = Forwarder(listen, once, lambda: True, lines.append)
    thread = threading.Thread(target=fwd.serve, daemon=True)
    thread.start()
    while not listen.exists():
        time.sleep(0.02)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(listen))
    sock.settimeout(10)
    assert sock.recv(10) == b""  # closed by the step, which then ended
    sock.close()
    fwd.step_argv = [*NODE_END, str(server)]
    for _ in range(50):
        if fwd.mux is not None and fwd.mux.broken:
            break
        time.sleep(0.1)
    assert talk(listen, 5, b"again")[1] == 5
    assert sum("started the relay step" in line for line in lines) == 2, lines
    fwd.stopped = True
    thread.join(10)


@pytest.mark.parametrize("plant", ["open-directory", "symlink", "not-a-socket"])
def test_the_node_end_refuses_a_socket_it_cannot_trust(tmp_path, server, plant):
    if plant == "open-directory":
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o777)
        shared.chmod(0o777)
        target = shared / "jupyter.sock"
        serve(target)
    elif plant == "symlink":
        target = server.parent / "link.sock"
        target.symlink_to(server)
    else:
        target = server.parent / "file.sock"
        target.write_text("")
    proc = subprocess.run([*NODE_END, str(target)], input=frame(OPEN, 1) + frame(DATA, 1, b"1\nEND"),
                          capture_output=True, timeout=30)
    assert proc.returncode == 1 and b"stardock-relay:" in proc.stderr
    assert proc.stdout == b""
