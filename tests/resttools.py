"""Helpers for the REST backend's integration tests: site files pointing at a given slurmrestd, a
slurmrestd of the test's own (to stop it without touching the testbed's), a TCP proxy that can
lose an answer, and `scontrol show job -o` records."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import yaml

from slurmtools import sh, user

TESTBED_REST = os.environ.get("STARDOCK_REST_URL", "http://127.0.0.1:6820")
# `scontrol show job -o` separates Key=Value pairs by spaces, and values may hold spaces too: a
# field starts only where a word is followed by '=' (as in test_sbatch_fidelity).
FIELD_START = re.compile(r" (?=[A-Za-z_/:]+=)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest_site(directory: Path, **scheduler: str) -> Path:
    """The testbed's site config with the scheduler section changed (rest_url, rest_api, ...)."""
    source = Path(os.environ["STARDOCK_SITE_CONFIG"])
    data = yaml.safe_load(source.read_text())
    data["scheduler"] = {**(data.get("scheduler") or {}), "rest_url": TESTBED_REST, **scheduler}
    path = directory / f"site-{len(list(directory.glob('site-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def scontrol_records(job: str) -> List[Dict[str, str]]:
    proc = sh(["scontrol", "show", "job", "-o", job])
    assert proc.returncode == 0, proc.stderr
    records = []
    for line in proc.stdout.splitlines():
        if line.strip():
            records.append(dict(token.partition("=")[::2] for token in FIELD_START.split(line.rstrip())))
    return sorted(records, key=lambda r: r.get("ArrayTaskId", ""))


def jobs_named(name: str) -> List[str]:
    """Every job of the test user with this name, in slurmctld or in the accounting."""
    ids = set(sh(["squeue", "-h", "-u", user(), "-n", name, "-o", "%A"]).stdout.split())
    ids |= {line.split("|")[0] for line in sh(["sacct", "-n", "-P", "-X", "-u", user(), "--name", name,
                                                "-S", "now-1hour", "-o", "JobIDRaw"]).stdout.split() if line}
    return sorted(ids)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def own_slurmrestd(port: int, log: Path) -> Iterator[subprocess.Popen]:
    """A slurmrestd of this test's own, run by the (unprivileged) test user on 127.0.0.1:port:
    stopping it leaves the testbed's daemon alone."""
    binary = shutil.which("slurmrestd") or "/usr/sbin/slurmrestd"
    with open(log, "ab") as out:
        daemon = subprocess.Popen([binary, "-a", "rest_auth/jwt", f"127.0.0.1:{port}"], stdout=out,
                                  stderr=subprocess.STDOUT, env={**os.environ, "SLURM_JWT": "daemon"})
    try:
        deadline = time.monotonic() + 20
        while not port_open(port):
            assert daemon.poll() is None, f"slurmrestd exited {daemon.returncode}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "slurmrestd did not listen within 20s"
            time.sleep(0.1)
        yield daemon
    finally:
        stop(daemon)


def stop(daemon: subprocess.Popen) -> None:
    """Stop a daemon this test started, by its own PID."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(5)


class Proxy:
    """A TCP proxy to the testbed's slurmrestd. With lose_answer_to set (b"POST "), the request
    that starts with it is passed on, but its answer is thrown away and the client's connection
    closed: the server acted, the client cannot know."""

    def __init__(self, upstream_port: int, lose_answer_to: Optional[bytes] = None) -> None:
        self.upstream = upstream_port
        self.lose = lose_answer_to
        self.lost = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            state = {"losing": False}
            threading.Thread(target=self._pipe, args=(client, server, state, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, state, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, state: dict, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and self.lose and data.startswith(self.lose):
                    state["losing"] = True
                if not upstream and state["losing"]:
                    self.lost += 1
                    break  # the answer is dropped: the client's connection closes below
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.running = False
        self.listener.close()
