"""Shared helpers of the testbed scripts: paths, logging, running programs, PID files.

The testbed runs with Debian's own /usr/bin/python3 and the standard library only, so that a
fresh machine can bring it up before any virtual environment exists.
"""
from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

STATE = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed"))
REPO = Path(__file__).resolve().parents[2]

TEST_USER = "stardock"        # the scientist the tests act as
OTHER_USER = "stardock2"      # a second scientist (shared-cache tests)
# The integration tests run in lanes, side by side, each as a scientist of its own with a second
# scientist of its own (the attacker of its attack tests): what one lane's tests make and compare
# (jobs, entries, engine state, records) is never another lane's.
LANES = ((TEST_USER, OTHER_USER), ("stardock3", "stardock4"))
SCIENTISTS = tuple(user for lane in LANES for user in lane)
REST_USER = "slurmrest"       # slurmrestd refuses to run as root
SLURM_USER = "slurm"          # created by Debian's slurm packages
CLUSTER = "stardock"
MARIADB_PORT = 3307
REST_PORT = 6820
LOG = STATE / "log"
RUN = STATE / "run"
ETC = STATE / "etc"


class TestbedError(Exception):
    """A step of the testbed failed; the message says which and why."""


def say(msg: str) -> None:
    print(f"testbed: {msg}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    capture: bool = False,
    env: Optional[Mapping[str, str]] = None,
    user: Optional[str] = None,
    cwd: Optional[Path] = None,
    timeout: Optional[float] = None,
    input: Optional[str] = None,
) -> subprocess.CompletedProcess:
    """Run argv (never through a shell), optionally as another user via runuser."""
    argv = [str(a) for a in argv]
    if user is not None and user != "root":
        # runuser drops the environment it is not told to keep; pass env explicitly.
        full_env = dict(user_env(user))
        full_env.update(env or {})
        argv = ["runuser", "-u", user, "--", "env", "-i"] + [f"{k}={v}" for k, v in full_env.items()] + argv
        env = None
        if cwd is None:
            cwd = Path("/")
    merged = None
    if env is not None:
        merged = dict(os.environ)
        merged.update(env)
    try:
        proc = subprocess.run(
            argv,
            check=False,
            text=True,
            capture_output=capture,
            env=merged,
            cwd=cwd,
            timeout=timeout,
            input=input,
        )
    except FileNotFoundError as exc:
        raise TestbedError(f"cannot run {argv[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"{' '.join(argv)} did not finish within {timeout}s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip()[-2000:] if capture else ""
        raise TestbedError(f"{' '.join(argv)} exited {proc.returncode}" + (f": {detail}" if detail else ""))
    return proc


def user_env(user: str) -> dict:
    """A clean login-like environment for an unprivileged user, plus the testbed's variables."""
    pw = pwd.getpwnam(user)
    env = {
        "HOME": pw.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "PATH": f"{STATE / 'venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG": "C.UTF-8",
        "XDG_RUNTIME_DIR": str(runtime_dir(user)),
    }
    env.update(testbed_vars())
    return env


def runtime_dir(user: str) -> Path:
    """Without systemd-logind nobody makes /run/user/UID; the testbed makes it (0700, owned)."""
    return Path("/run/user") / str(pwd.getpwnam(user).pw_uid)


def testbed_vars() -> dict:
    return {
        "STARDOCK_TESTBED": str(STATE),
        "SLURM_CONF": str(ETC / "slurm.conf"),
        "STARDOCK_SITE_CONFIG": str(ETC / "site.yaml"),
        "STARDOCK_TEST_USER": TEST_USER,
        "STARDOCK_OTHER_USER": OTHER_USER,
        "STARDOCK_REST_URL": f"http://127.0.0.1:{REST_PORT}",
        "STARDOCK_BASE_ARCHIVE": str(STATE / "images" / "debian-bookworm.oci.tar"),
    }


def write_if_changed(path: Path, text: str, mode: int = 0o644, owner: Optional[str] = None) -> bool:
    """Write text atomically unless the file already holds it; True when something changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    changed = not path.exists() or path.read_text() != text
    if changed:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        if owner:
            pw = pwd.getpwnam(owner)
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        os.replace(tmp, path)
    else:
        if (path.stat().st_mode & 0o7777) != mode:
            os.chmod(path, mode)
        if owner:
            pw = pwd.getpwnam(owner)
            if path.stat().st_uid != pw.pw_uid:
                os.chown(path, pw.pw_uid, pw.pw_gid)
    return changed


# --- daemons tracked by PID file -------------------------------------------------------------

def pid_alive(pidfile: Path, exe: str) -> Optional[int]:
    """The PID in pidfile if that process is alive and really runs `exe` (checked via /proc)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        real = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    # Debian installs some daemons behind alternatives symlinks (slurmctld -> slurmctld-wlm);
    # a binary replaced by a package upgrade shows as "path (deleted)".
    if real.replace(" (deleted)", "") != os.path.realpath(exe):
        return None
    return pid


def stop_pidfile(pidfile: Path, exe: str, name: str, timeout: float = 15.0) -> bool:
    pid = pid_alive(pidfile, exe)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    say(f"stopping {name} (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_alive(pidfile, exe) is None:
            break
        time.sleep(0.1)
    else:
        say(f"{name} did not stop on SIGTERM; sending SIGKILL")
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return True


def wait_for(what: str, probe, timeout: float = 30.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception as exc:  # noqa: BLE001 - the probe's failure is the answer "not yet"
            last = exc
        time.sleep(interval)
    raise TestbedError(f"{what} did not come up within {timeout:.0f}s" + (f" ({last})" if last else ""))
