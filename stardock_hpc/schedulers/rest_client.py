"""Talking to slurmrestd: the token, the API version, and HTTP with timeouts, bounded retries and
one clear error per failure.

Retries: a request that may be repeated without harm (GET, DELETE) is retried a few times when the
connection fails. A submit (POST) never is: once it may have reached the server, sending it again
could make a second job, so a connection that breaks after sending is reported as "outcome
unknown" and left to the user to check.
"""
from __future__ import annotations

import base64
import getpass
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import requests
import urllib3

from stardock_hpc import errors, proc
from stardock_hpc.errors import ExternalError, UsageError
from stardock_hpc.schedulers import rest_versions
from stardock_hpc.schedulers.rest_versions import ApiVersion
from stardock_hpc.slurm.values import CONTROLLER_DOWN

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
SUBMIT_READ_TIMEOUT = 60.0
ATTEMPTS = 3                 # for requests that may be repeated
BACKOFF = 0.5                # seconds, doubled after each failed attempt
REFRESH_MARGIN = 60.0        # get a new token when the current one expires within this many seconds
_DISCOVERED: Dict[str, List[str]] = {}   # base URL -> versions offered (one /openapi per process)


class RestError(ExternalError):
    """slurmrestd answered, but not with what was asked for."""


class Unreachable(RestError):
    """No connection could be made: the request was not sent."""


class OutcomeUnknown(RestError, errors.OutcomeUnknown):
    """The connection broke after the request was sent: it may or may not have taken effect."""


class TokenRejected(RestError):
    """slurmrestd (or the slurmctld/slurmdbd behind it) refused the token."""


def jwt_claims(token: str) -> Dict[str, Any]:
    """The claims of a JWT (unverified: only to read its expiry and user); {} when not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


@dataclass
class Token:
    value: str
    source: str                  # "$SLURM_JWT" or "`scontrol token`"
    user: Optional[str]          # the JWT's user (claim "sun"), if it says
    expires: Optional[float]     # epoch seconds (claim "exp"), if it says

    @classmethod
    def parse(cls, value: str, source: str) -> Token:
        claims = jwt_claims(value)
        exp = claims.get("exp")
        return cls(value, source, claims.get("sun") if isinstance(claims.get("sun"), str) else None,
                   float(exp) if isinstance(exp, (int, float)) else None)

    def expires_within(self, seconds: float) -> bool:
        return self.expires is not None and self.expires - time.time() < seconds


class TokenSource:
    """The user's JWT from $SLURM_JWT or `scontrol token` (site config scheduler.rest_token), got
    again from scontrol before it expires."""

    def __init__(self, mode: str = "auto", environ: Optional[Mapping[str, str]] = None,
                 run: Callable[..., proc.Result] = proc.run) -> None:
        self.mode = mode
        self.environ = os.environ if environ is None else environ
        self.run = run
        self._token: Optional[Token] = None

    def get(self) -> Token:
        if self._token is not None and not self._token.expires_within(REFRESH_MARGIN):
            return self._token
        self._token = self._fetch()
        return self._token

    def _fetch(self) -> Token:
        env_value = self.environ.get("SLURM_JWT", "").strip()
        if self.mode in ("auto", "env") and env_value:
            token = Token.parse(env_value, "$SLURM_JWT")
            if not token.expires_within(0):
                return token
            if self.mode == "env":  # auto: an expired $SLURM_JWT gives way to a new token from scontrol
                raise UsageError(f"$SLURM_JWT expired at {time.ctime(token.expires or 0)}",
                                 hint="get a new one: export $(scontrol token)")
        if self.mode == "env":
            raise UsageError("no token for slurmrestd: $SLURM_JWT is not set (the site config says "
                             "scheduler.rest_token: env)", hint="export $(scontrol token)")
        # the site's default lifespan: a longer one asked for may be over the site's limit
        out = self.run(["scontrol", "token"], check=False, timeout=30)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("SLURM_JWT=")), "")
        if not out.ok or not line:
            why = out.tail(1) or f"exit {out.returncode}"
            env_state = "expired" if env_value else "not set"
            if any(sign in out.stderr for sign in CONTROLLER_DOWN):  # not a configuration problem
                raise ExternalError(f"no token for slurmrestd: $SLURM_JWT is {env_state}, and `scontrol token` "
                                    f"could not reach slurmctld: {why}",
                                    hint="try again when slurmctld answers, or set SLURM_JWT")
            raise UsageError(f"no token for slurmrestd: $SLURM_JWT is {env_state} and `scontrol token` failed: {why}",
                             hint="set SLURM_JWT, or ask the admins to enable AuthAltTypes=auth/jwt")
        return Token.parse(line.split("=", 1)[1].strip(), "`scontrol token`")


def error_list(data: Any) -> List[Tuple[Optional[int], str]]:
    """slurmrestd's errors as (code, text); the versions name the code differently."""
    out: List[Tuple[Optional[int], str]] = []
    for err in (data.get("errors") or []) if isinstance(data, dict) else []:
        if not isinstance(err, dict):
            continue
        code = next((err[k] for k in ("error_number", "error_code", "errno") if isinstance(err.get(k), int)), None)
        words = [str(err[k]) for k in ("error", "description") if err.get(k)]
        out.append((code, ": ".join(dict.fromkeys(words)) or "(no message)"))
    return out


def describe_errors(errors: List[Tuple[Optional[int], str]]) -> str:
    return "; ".join(f"{text} (error {code})" if code is not None else text for code, text in errors)


def _not_sent(exc: requests.RequestException) -> bool:
    """True when the request never left: no connection could be made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError))


class RestClient:
    def __init__(self, url: str, api: str = "auto", tokens: Optional[TokenSource] = None,
                 session: Optional[requests.Session] = None) -> None:
        self.url = url.rstrip("/")
        self.api = api
        self.tokens = tokens or TokenSource()
        self.session = session or requests.Session()
        self._version: Optional[ApiVersion] = None
        self.version_source = ""

    # --- the API version -------------------------------------------------------------------------
    @property
    def version(self) -> ApiVersion:
        if self._version is None:
            offers = [] if self.api != "auto" else self._offers()
            try:
                self._version, self.version_source = rest_versions.choose(offers, self.api)
            except ValueError as exc:
                raise RestError(f"slurmrestd at {self.url}: {exc}") from None
        return self._version

    def _offers(self) -> List[str]:
        if self.url not in _DISCOVERED:
            status, data = self.call("GET", "/openapi", check_token=False)
            if status == 404:
                status, data = self.call("GET", "/openapi/v3", check_token=False)
            paths = data.get("paths") if isinstance(data, dict) else None
            if status != 200 or not isinstance(paths, dict):
                raise RestError(f"slurmrestd at {self.url} did not describe its API (GET /openapi: HTTP {status})",
                                hint="set scheduler.rest_api in the site config to skip the discovery")
            _DISCOVERED[self.url] = rest_versions.offered(paths)
        return _DISCOVERED[self.url]

    # --- HTTP ------------------------------------------------------------------------------------
    def headers(self) -> Dict[str, str]:
        token = self.tokens.get()
        user = token.user or getpass.getuser()
        return {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token.value}

    def call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None,
             check_token: bool = True) -> Tuple[int, Any]:
        """(HTTP status, decoded JSON). GET and DELETE are retried on connection failures; POST
        never is. Raises Unreachable, OutcomeUnknown, TokenRejected or RestError."""
        repeatable = method in ("GET", "DELETE")
        attempts = ATTEMPTS if repeatable else 1
        timeout = (CONNECT_TIMEOUT, READ_TIMEOUT if repeatable else SUBMIT_READ_TIMEOUT)
        delay = BACKOFF
        last: Optional[requests.RequestException] = None
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(method, self.url + path, json=body, headers=self.headers(),
                                                timeout=timeout)
                break
            except requests.RequestException as exc:
                last = exc
                if not repeatable and not _not_sent(exc):
                    raise OutcomeUnknown(
                        f"the connection to slurmrestd at {self.url} broke after the request ({method} {path}) "
                        f"was sent: {_why(exc)}; it may or may not have taken effect") from None
                if attempt < attempts:
                    time.sleep(delay)
                    delay *= 2
        else:
            assert last is not None
            tries = f" ({attempts} attempts)" if attempts > 1 else ""
            raise Unreachable(f"cannot reach slurmrestd at {self.url}{tries}: {_why(last)}",
                              hint="is slurmrestd running? (scheduler.rest_url in the site config)") from None
        if response.status_code == 401:
            raise TokenRejected(f"slurmrestd at {self.url} refused the request: no usable token (HTTP 401)",
                                hint="set SLURM_JWT, or check scheduler.rest_token in the site config")
        try:
            data = response.json()
        except ValueError:
            raise RestError(f"slurmrestd at {self.url} answered {method} {path} with HTTP {response.status_code} "
                            f"and no JSON: {response.text[:200]!r}") from None
        if check_token:
            self._check_token(error_list(data))
        return response.status_code, data

    def _check_token(self, errors: List[Tuple[Optional[int], str]]) -> None:
        """slurmrestd 22.05 answers a bad token with HTTP 500 (or 200 with an error) and codes that
        other failures share: when they appear, a ping with the same token decides."""
        if not any(code in rest_versions.TOKEN_ERRORS for code, _ in errors):
            return
        status, data = self.call("GET", self.version.ping_path(), check_token=False)
        ping_errors = error_list(data)
        if status != 200 and ping_errors and all(c in rest_versions.TOKEN_ERRORS for c, _ in ping_errors):
            token = self.tokens.get()
            user = f" for user {token.user}" if token.user else ""
            raise TokenRejected(
                f"slurmrestd at {self.url} rejected the token{user} from {token.source} "
                f"(the controller answered: {describe_errors(errors)})",
                hint="the token may be expired, for another user, or signed with another key: "
                     "get a new one with `scontrol token`, or unset SLURM_JWT")


def _why(exc: requests.RequestException) -> str:
    if _not_sent(exc):
        return "connection refused" if "refused" in str(exc).lower() else "no connection"
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    return "the connection was closed without an answer" if "closed" in str(exc).lower() or \
        "aborted" in str(exc).lower() else type(exc).__name__
