"""--input and --deliver in Slurm jobs on the testbed's nodes (issue 17, items 1 and 2): inputs
served over HTTP from the login side's address on the nodes' network (one pinned by its digest,
one named in a #STARDOCK line) fetched by the node's wrapper before the container starts and seen
read-only at /data/input, while the container still has no network; a wrong digest and a 404 fail
the job before its container runs; outputs delivered to a directory on the scratch volume and by
HTTP PUT with matching digests, a failing destination retried and reported by `stardock status`."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import uuid
from pathlib import Path

import pytest
from clitools import ENGINES, remove, shared_dir, stardock, stardock_json, write_spec
from httpfiles import HttpFiles

from slurmtools import wait_job

pytestmark = [pytest.mark.slurm]
# unique to this run, so that the first job on a node downloads it (the download cache is by digest)
FITS = (b"SIMPLE  =                    T / a FITS file " + uuid.uuid4().hex.encode()).ljust(2880)


def controller_address() -> str:
    """The login side's address on the nodes' network (slurm.conf's SlurmctldHost=name(addr))."""
    text = Path(os.environ["SLURM_CONF"]).read_text()
    m = re.search(r"^SlurmctldHost=[^(\s]*\(([0-9.]+)\)", text, re.M)
    return m.group(1) if m else "127.0.0.1"


@pytest.fixture(scope="module")
def server():
    s = HttpFiles(controller_address())
    s.files.update({"/m51.fits": FITS, "/cat.txt": b"M51 13.2 47.2\n"})
    yield s
    s.close()


@pytest.fixture(scope="module")
def work():
    path = shared_dir("stardock-staging-")
    write_spec(path, "name: staging-test\n")
    yield path
    remove(path)


def submit(work: Path, name: str, body: str, *options: str, engine: str = "podman") -> str:
    script = work / f"{name}.sh"
    script.write_text("#!/bin/bash\n" + body)
    proc = stardock("sbatch", "--parsable", "--env", "stardock.yaml", "--engine", engine, "-t", "5",
                    f"--output={name}-%j.out", f"--error={name}-%j.err", *options, str(script), cwd=work)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def finished(work: Path, name: str, job: str) -> tuple:
    rows = wait_job(job, timeout=300)
    return rows[job], (work / f"{name}-{job}.out").read_text(), (work / f"{name}-{job}.err").read_text()


@pytest.mark.parametrize("engine", ENGINES)
def test_inputs_are_fetched_before_the_container_and_seen_read_only(work, server, engine):
    data = FITS[:-32] + engine.encode().ljust(32)  # each engine's first job downloads its own
    server.files[f"/m51-{engine}.fits"] = data
    sha = hashlib.sha256(data).hexdigest()
    host, port = server.url.split("//")[1].split(":")
    body = (f"#STARDOCK --input {server.url}/cat.txt=catalog.txt\n"
            "ls /data/input | tr '\\n' ' '; echo\n"
            "cat /data/input/catalog.txt; sha256sum /data/input/m51.fits\n"
            "touch /data/input/new 2>/dev/null && echo input=writable || echo input=read-only\n"
            f"(exec 3<>/dev/tcp/{host}/{port}) 2>/dev/null && echo net=yes || echo net=no\n")
    job = submit(work, f"inputs-{engine}", body, "-w", "node1", "--input",
                 f"{server.url}/m51-{engine}.fits#sha256={sha}=m51.fits", engine=engine)
    row, out, err = finished(work, f"inputs-{engine}", job)
    assert row["State"] == "COMPLETED", out + err
    lines = out.splitlines()
    assert lines[0].split() == ["catalog.txt", "m51.fits"], out
    assert "M51 13.2 47.2" in lines and f"{sha}  /data/input/m51.fits" in lines, out
    assert "input=read-only" in lines and "net=no" in lines, out  # the container still has no network
    assert re.search(r"stardock: input m51\.fits: 2880 bytes from http", err), err
    status = stardock_json("status", job)[0]
    # the #STARDOCK line's first, as its options count as given before the command line's
    assert [(i["name"], i["sha256"]) for i in status["inputs"]] == \
        [("catalog.txt", hashlib.sha256(b"M51 13.2 47.2\n").hexdigest()), ("m51.fits", sha)]
    # again on that node: the pinned input from the user's download cache there, not the server
    hits = server.hits[f"/m51-{engine}.fits"]
    again = submit(work, f"again-{engine}", "sha256sum /data/input/m51.fits\n", "-w", "node1", "--input",
                   f"{server.url}/m51-{engine}.fits#sha256={sha}=m51.fits", engine=engine)
    row, out, err = finished(work, f"again-{engine}", again)
    assert row["State"] == "COMPLETED" and f"{sha}  /data/input/m51.fits" in out, out + err
    assert "input m51.fits: 2880 bytes from the download cache" in err, err
    assert server.hits[f"/m51-{engine}.fits"] == hits


@pytest.mark.podman
@pytest.mark.parametrize("case", ["digest", "404"])
def test_a_bad_input_fails_the_job_before_its_container_starts(work, server, case):
    url = f"{server.url}/m51.fits#sha256={'0' * 64}" if case == "digest" else f"{server.url}/missing.fits"
    marker = f"ran-{case}-{uuid.uuid4().hex[:8]}"
    job = submit(work, f"bad-{case}", f'touch "$STARDOCK_OUTPUT/{marker}"\n', "--input", url)
    row, out, err = finished(work, f"bad-{case}", job)
    assert row["State"] == "FAILED", out + err
    said = "its sha256 is" if case == "digest" else "the server answered 404"
    assert said in err and "the job's container was not started" in err, err
    status = stardock_json("status", job)[0]
    assert said in status["error"]
    assert not (Path(status["output"]) / marker).exists()


@pytest.mark.podman
def test_outputs_are_delivered_to_a_volume_and_by_put_and_a_failure_is_reported(work, server):
    scratch = Path(os.environ.get("STARDOCK_TESTBED", "/var/tmp/stardock-testbed")) / "volumes" / "scratch" / \
        os.environ.get("USER", "stardock")
    sub = f"deliver-{uuid.uuid4().hex[:8]}"
    (scratch / sub).mkdir(parents=True)
    server.fail["/up/broken"] = [500] * 20
    try:
        job = submit(work, "deliver", 'echo "M51 13.2" > "$STARDOCK_OUTPUT/catalog.txt"\nexit 3\n',
                     "--deliver", f"scratch/{sub}", "--deliver", f"{server.url}/up/result.tar.gz",
                     "--deliver", f"{server.url}/up/broken")
        row, out, err = finished(work, "deliver", job)
        assert row["State"] == "FAILED" and row["ExitCode"].startswith("3:"), out + err  # delivered anyway
        label = job
        archive = scratch / sub / f"{label}-output.tar.gz"
        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        assert (scratch / sub / f"{label}-output.tar.gz.sha256").read_text().split()[0] == sha
        with tarfile.open(archive) as tar:
            assert tar.extractfile(f"{label}/catalog.txt").read() == b"M51 13.2\n"
        body, _digest, header = server.put["/up/result.tar.gz"]
        assert hashlib.sha256(body).hexdigest() == sha == header
        deliveries = stardock_json("status", job)[0]["deliveries"]
        assert [d["ok"] for d in deliveries] == [True, True, False], json.dumps(deliveries)
        assert deliveries[2]["attempts"] == 4 and "500" in deliveries[2]["error"]
        assert server.hits["/up/broken"] == 4 and "trying again" in err
        text = stardock("status", job).stdout
        assert f"NOT delivered: {deliveries[2]['error']}" in text and f"delivered to {archive}" in text, text
    finally:
        remove(scratch / sub)
