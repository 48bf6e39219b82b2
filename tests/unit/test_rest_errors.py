"""The REST backend's error paths against a small local HTTP server that answers as slurmrestd 22.05
does when things go wrong (the features themselves are proven against the real slurmrestd in
tests/integration/test_rest_backend.py): one clear error each, retries only where repeating is
harmless, never a second submit."""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from stardock_hpc import proc
from stardock_hpc.errors import UsageError
from stardock_hpc.schedulers import rest_client
from stardock_hpc.schedulers.rest_client import (
    OutcomeUnknown,
    RestClient,
    RestError,
    TokenRejected,
    TokenSource,
    Unreachable,
    jwt_claims,
)

OPENAPI = {"paths": {"/slurm/v0.0.38/job/submit": {}, "/slurm/v0.0.37/job/submit": {}}}
PING_BAD_TOKEN = (500, {"errors": [{"error_number": -1, "error": "Unspecified error",
                                    "description": "slurmctld config is unable to load"}]})


def fake_jwt(user: str = "u", exp: float = 0) -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256'})}.{part({'exp': int(exp or time.time() + 3600), 'sun': user})}.c2ln"


class FakeRest:
    """Answers from a table {(method, path): (status, body)}; "drop" closes the connection after
    reading the request, without answering; a list of answers is used up in order."""

    def __init__(self, routes: Dict[Tuple[str, str], object]) -> None:
        self.routes = routes
        self.seen: List[Tuple[str, str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                fake.seen.append((self.command, self.path, dict(self.headers)))
                answer = fake.routes.get((self.command, self.path), (404, {"errors": [{"error": "no route"}]}))
                if isinstance(answer, list):
                    answer = answer.pop(0) if len(answer) > 1 else answer[0]
                if answer == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, data = answer  # type: ignore[misc]
                raw = data.encode() if isinstance(data, str) else json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                _ = body

            do_GET = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.seen if (m, p) == (method, path))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    servers: List[FakeRest] = []

    def make(routes):
        servers.append(FakeRest(routes))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(rest_client, "BACKOFF", 0.01)
    monkeypatch.setattr(rest_client, "_DISCOVERED", {})


def client(url: str, api: str = "auto") -> RestClient:
    return RestClient(url, api, TokenSource("env", {"SLURM_JWT": fake_jwt("alice")}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_bad_token_is_named_although_slurmrestd_says_500(fake):
    srv = fake({("GET", "/openapi"): (200, OPENAPI),
                ("POST", "/slurm/v0.0.38/job/submit"): (500, {"errors": [
                    {"error_code": 5005, "error": "Zero Bytes were transmitted or received"}]}),
                ("GET", "/slurm/v0.0.38/ping"): PING_BAD_TOKEN})
    c = client(srv.url)
    with pytest.raises(TokenRejected, match="rejected the token for user alice from [$]SLURM_JWT") as err:
        c.call("POST", "/slurm/v0.0.38/job/submit", {"script": "#!/bin/sh\n"})
    assert "scontrol token" in (err.value.hint or "")
    assert srv.count("POST", "/slurm/v0.0.38/job/submit") == 1
    headers = srv.seen[-1][2]
    assert headers["X-SLURM-USER-NAME"] == "alice" and headers["X-SLURM-USER-TOKEN"].count(".") == 2


def test_the_same_codes_with_a_good_token_are_the_controllers_answer(fake):
    srv = fake({("GET", "/slurm/v0.0.38/job/7"): (500, {"errors": [
                    {"error_number": -1, "error": "Unspecified error", "description": "Unable to find JobId=7"}]}),
                ("GET", "/slurm/v0.0.38/ping"): (200, {"pings": [{"ping": "UP"}], "errors": []})})
    status, data = client(srv.url, "v0.0.38").call("GET", "/slurm/v0.0.38/job/7")
    assert status == 500 and rest_client.error_list(data) == [(-1, "Unspecified error: Unable to find JobId=7")]


def test_the_accountings_200_with_an_authentication_error_is_a_bad_token_too(fake):
    srv = fake({("GET", "/slurmdb/v0.0.38/job/7"): (200, {"jobs": [], "errors": [
                    {"error_number": 1007, "error": "Protocol authentication error"}]}),
                ("GET", "/slurm/v0.0.38/ping"): PING_BAD_TOKEN})
    with pytest.raises(TokenRejected, match="Protocol authentication error"):
        client(srv.url, "v0.0.38").call("GET", "/slurmdb/v0.0.38/job/7")


def test_no_token_headers_is_401(fake):
    srv = fake({("GET", "/slurm/v0.0.38/job/7"): (401, "Authentication failure")})
    with pytest.raises(TokenRejected, match="no usable token"):
        client(srv.url, "v0.0.38").call("GET", "/slurm/v0.0.38/job/7")


def test_nothing_listening_is_unreachable_after_bounded_retries():
    c = client(f"http://127.0.0.1:{free_port()}", "v0.0.38")
    started = time.monotonic()
    with pytest.raises(Unreachable, match=r"cannot reach slurmrestd at .* \(3 attempts\): connection refused"):
        c.call("GET", "/slurm/v0.0.38/job/7")
    assert time.monotonic() - started < 5
    with pytest.raises(Unreachable, match="connection refused") as err:
        c.call("POST", "/slurm/v0.0.38/job/submit", {})
    assert "attempts" not in str(err.value)


def test_a_submit_whose_answer_is_lost_is_reported_and_never_sent_again(fake):
    srv = fake({("POST", "/slurm/v0.0.38/job/submit"): "drop"})
    with pytest.raises(OutcomeUnknown, match="broke after the request .* was sent.*may or may not"):
        client(srv.url, "v0.0.38").call("POST", "/slurm/v0.0.38/job/submit", {"script": "x"})
    # the fake counts a request when it arrives, before it drops the connection: final once call raised
    assert srv.count("POST", "/slurm/v0.0.38/job/submit") == 1


def test_a_lost_answer_to_a_question_is_asked_again(fake):
    srv = fake({("GET", "/slurm/v0.0.38/job/7"): ["drop", "drop", (200, {"jobs": [{"job_id": 7}], "errors": []})]})
    status, data = client(srv.url, "v0.0.38").call("GET", "/slurm/v0.0.38/job/7")
    assert status == 200 and data["jobs"][0]["job_id"] == 7
    assert srv.count("GET", "/slurm/v0.0.38/job/7") == 3


def test_an_answer_that_is_not_json_is_shown(fake):
    srv = fake({("GET", "/slurm/v0.0.38/job/7"): (502, "<html>bad gateway</html>")})
    with pytest.raises(RestError, match="HTTP 502 and no JSON: '<html>bad gateway"):
        client(srv.url, "v0.0.38").call("GET", "/slurm/v0.0.38/job/7")


def test_a_server_that_speaks_only_newer_versions_is_refused_clearly(fake):
    srv = fake({("GET", "/openapi"): (200, {"paths": {"/slurm/v0.0.40/job/submit": {}}})})
    with pytest.raises(RestError, match="offers API versions v0.0.40; stardock speaks v0.0.38"):
        _ = client(srv.url).version


def test_tokens_from_the_environment_or_scontrol_refreshed_before_expiry(monkeypatch):
    with pytest.raises(UsageError, match="SLURM_JWT is not set .*rest_token: env"):
        TokenSource("env", {}).get()
    with pytest.raises(UsageError, match="expired"):
        TokenSource("env", {"SLURM_JWT": fake_jwt(exp=time.time() - 10)}).get()
    calls: List[list] = []

    def scontrol(argv, **_kw):
        calls.append(list(argv))
        ok = argv[:2] == ["scontrol", "token"]
        return proc.Result(tuple(argv), 0 if ok else 1, f"SLURM_JWT={fake_jwt('bob', time.time() + 30)}\n", "")
    source = TokenSource("auto", {"SLURM_JWT": fake_jwt(exp=time.time() - 10)}, run=scontrol)
    first = source.get()
    assert first.source == "`scontrol token`" and first.user == "bob"
    source.get()  # expires within the refresh margin: asked again
    assert len(calls) == 2
    failing = TokenSource("auto", {}, run=lambda argv, **kw: proc.Result(tuple(argv), 1, "", "scontrol: auth/jwt "
                                                                                           "not configured"))
    with pytest.raises(UsageError, match="scontrol token. failed: scontrol: auth/jwt not configured"):
        failing.get()
    assert jwt_claims("not-a-jwt") == {} and jwt_claims("a.!!!.c") == {}


def run_cli(*args: str, site: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "HOME": str(site.parent), "PYTHONPATH": str(Path(__file__).parents[2]),
            **env}
    return subprocess.run([sys.executable, "-m", "stardock_hpc", *args, "--site", str(site)], capture_output=True,
                          text=True, env=full, timeout=60)


def write_site(tmp_path: Path, url: str, token: str = "auto") -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(f"scheduler: {{backend: rest, rest_url: '{url}', rest_api: v0.0.38, rest_token: {token}}}\n"
                    f"records: '{tmp_path}/records'\n")
    return site


def one_error(proc_: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert proc_.returncode == code, (proc_.returncode, proc_.stdout, proc_.stderr)
    assert "Traceback" not in proc_.stderr
    errors = [line for line in proc_.stderr.splitlines() if line.startswith("stardock: error:")]
    assert len(errors) == 1 and fragment in proc_.stderr, proc_.stderr


def test_the_command_line_gives_one_clear_error_for_each(fake, tmp_path):
    srv = fake({("DELETE", "/slurm/v0.0.38/job/7"): (500, {"errors": [
                    {"error_number": 5005, "error": "Zero Bytes were transmitted or received"}]}),
                ("GET", "/slurm/v0.0.38/ping"): PING_BAD_TOKEN})
    one_error(run_cli("cancel", "7", site=write_site(tmp_path, srv.url), env={"SLURM_JWT": fake_jwt()}),
              1, "rejected the token")
    one_error(run_cli("cancel", "7", site=write_site(tmp_path, srv.url, "env"), env={}),
              2, "no token for slurmrestd")
    one_error(run_cli("status", "7", site=write_site(tmp_path, f"http://127.0.0.1:{free_port()}"),
                      env={"SLURM_JWT": fake_jwt()}), 1, "cannot reach slurmrestd")
