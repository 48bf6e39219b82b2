"""--input and --deliver (jobs/staging.py) against a real HTTP server on this machine's loopback:
what a URL may be, downloads with their digest, retries with backoff, the size cap, the download
cache, file URLs that are links, and deliveries to a directory and by PUT. In a Slurm job on the
testbed's nodes: tests/integration/test_staging.py."""
from __future__ import annotations

import base64
import hashlib
import os
import tarfile
from typing import List

import pytest
from httpfiles import HttpFiles

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.staging import (
    Delivery,
    JobInput,
    StagingError,
    deliver_outputs,
    fetch_inputs,
    parse_delivery,
    parse_input,
    parse_inputs,
)
from stardock_hpc.site import InputsPolicy

POLICY = InputsPolicy()
HEX = "ab" * 32


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    s = HttpFiles("127.0.0.1")
    yield s
    s.close()


@pytest.mark.parametrize("text, url, name, sha", [
    ("https://h.org/d/m51.fits", "https://h.org/d/m51.fits", "m51.fits", None),
    ("https://h.org/d/m51.fits=galaxy.fits", "https://h.org/d/m51.fits", "galaxy.fits", None),
    (f"https://h.org/x.fits#sha256={HEX}", "https://h.org/x.fits", "x.fits", HEX),
    (f"https://h.org/x.fits#sha256={HEX.upper()}=y.fits", "https://h.org/x.fits", "y.fits", HEX),
    ("https://h.org/get?id=5", "https://h.org/get?id=5", "get", None),  # the query's '=', not a name
    ("https://h.org/get?id=5=cat.fits", "https://h.org/get?id=5", "cat.fits", None),
    ("file:///srv/data/cat%20a.txt=cat.txt", "file:///srv/data/cat%20a.txt", "cat.txt", None),
])
def test_input_urls_names_and_digests(text, url, name, sha):
    if url is None:
        with pytest.raises(UsageError, match="add =NAME"):
            parse_input(text, POLICY)
        return
    assert parse_input(text, POLICY) == JobInput(url, name, sha)


@pytest.mark.parametrize("text, message", [
    ("ftp://h.org/x", "scheme 'ftp' is not allowed"),
    ("/srv/x", r"scheme '\(none\)' is not allowed"),
    ("https://h.org/x#part", "only fragment allowed"),
    ("https://h.org/x#sha256=abc", "only fragment allowed"),
    ("file://otherhost/x", "absolute path on the nodes"),
    ("https:///x", "names no host"),
    ("https://h.org/", "cannot name the file"),
    ("https://h.org/..", "cannot name the file"),
    ("https://h.org/x=..", "cannot name the file"),
    ("https://h.org/x=.hidden", "cannot name the file"),
    ("https://h.org/a b", "spaces or control"),
])
def test_bad_inputs_are_refused_clearly(text, message):
    with pytest.raises(UsageError, match=message):
        parse_input(text, POLICY)


def test_site_policy_limits_schemes_and_hosts():
    policy = InputsPolicy(schemes=("https",), hosts=("data.example.org", "*.archive.org"))
    assert parse_input("https://data.example.org/x", policy).name == "x"
    assert parse_input("https://a.b.archive.org/x", policy).name == "x"
    for text, message in (("http://data.example.org/x", "scheme 'http'"), ("https://evil.org/x", "host 'evil.org'"),
                          ("https://archive.org.evil.net/x", "not allowed")):
        with pytest.raises(UsageError, match=message):
            parse_input(text, policy)
    with pytest.raises(UsageError, match="two inputs named 'x'"):
        parse_inputs(["https://data.example.org/x", "https://data.example.org/d/x"], policy)


def test_deliver_destinations():
    assert parse_delivery("https://h.org/up/out.tar.gz", lambda t: ("", "")).url == "https://h.org/up/out.tar.gz"
    assert parse_delivery("scratch/results", lambda t: ("/srv/scratch", "results")) == \
        Delivery("scratch/results", None, "/srv/scratch", "results")
    for bad in ("ftp://h.org/x", "https://h.org/x#f", "file:///tmp/x"):
        with pytest.raises(UsageError):
            parse_delivery(bad, lambda t: ("", ""))


def test_inputs_fetched_with_digest_retries_and_the_cache(server, tmp_path):
    data, other = b"SIMPLE  =                    T" * 100, b"a catalogue\n"
    server.files.update({"/m51.fits": data, "/cat.txt": other})
    server.fail["/cat.txt"] = [503, 502]  # two server errors, then the file
    logs: List[str] = []
    slept: List[float] = []
    sha = hashlib.sha256(data).hexdigest()
    inputs = [JobInput(f"{server.url}/m51.fits", "m51.fits", sha), JobInput(f"{server.url}/cat.txt", "cat.txt")]
    dest, cache = tmp_path / "in", tmp_path / "cache"
    dest.mkdir()
    done = fetch_inputs(inputs, dest, cache, 1 << 20, 3, logs.append, slept.append)
    assert (dest / "m51.fits").read_bytes() == data and (dest / "cat.txt").read_bytes() == other
    assert [d["source"] for d in done] == ["download", "download"] and done[1]["attempts"] == 3
    assert slept == [1.0, 2.0] and any("503" in line and "trying again" in line for line in logs)
    assert (cache / sha).read_bytes() == data and oct((dest / "m51.fits").stat().st_mode)[-3:] == "400"
    # a second job: the pinned input from the cache, the server not asked
    hits = server.hits["/m51.fits"]
    dest2 = tmp_path / "in2"
    dest2.mkdir()
    again = fetch_inputs(inputs[:1], dest2, cache, 1 << 20, 3, logs.append, slept.append)
    assert again[0]["source"] == "cache" and server.hits["/m51.fits"] == hits
    assert (dest2 / "m51.fits").read_bytes() == data
    # a cached copy changed behind our back is not used
    os.chmod(cache / sha, 0o600)
    (cache / sha).write_bytes(b"tampered")
    dest3 = tmp_path / "in3"
    dest3.mkdir()
    assert fetch_inputs(inputs[:1], dest3, cache, 1 << 20, 3, logs.append)[0]["source"] == "download"


@pytest.mark.parametrize("case, message", [
    ("404", "answered 404"),
    ("digest", "its sha256 is"),
    ("large", "more than the site allows"),
    ("down", "gave up after 3 attempts"),
])
def test_a_failed_input_is_one_clear_error_and_leaves_no_file(server, tmp_path, case, message):
    server.files["/x"] = b"x" * 5000
    url = f"{server.url}/missing" if case == "404" else f"{server.url}/x"
    if case == "down":
        server.fail["/x"] = [503] * 5
    item = JobInput(url, "x", HEX if case == "digest" else None)
    calls: List[float] = []
    with pytest.raises(StagingError, match=message):
        fetch_inputs([item], tmp_path, None, 1000 if case == "large" else 1 << 20, 2, lambda _m: None, calls.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert len(calls) == (2 if case == "down" else 0)  # a 404 or a too-large file is not tried again


def test_file_inputs_never_follow_a_link(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("data\n")
    (tmp_path / "link.txt").symlink_to(real)
    dest = tmp_path / "in"
    dest.mkdir()
    done = fetch_inputs([JobInput(f"file://{real}", "r.txt")], dest, None, 1 << 20, 0, lambda _m: None)
    assert done[0]["bytes"] == 5 and (dest / "r.txt").read_text() == "data\n"
    with pytest.raises(StagingError, match="cannot read"):
        fetch_inputs([JobInput(f"file://{tmp_path}/link.txt", "l.txt")], dest, None, 1 << 20, 0, lambda _m: None)
    with pytest.raises(StagingError, match="not a regular file"):
        fetch_inputs([JobInput(f"file://{tmp_path}", "d")], dest, None, 1 << 20, 0, lambda _m: None)


def test_outputs_delivered_to_a_directory_and_by_put_with_their_digest(server, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "catalog.txt").write_text("M51 13.2\n")
    (output / "escape").symlink_to("/etc/passwd")  # packed as a link, never followed
    volume = tmp_path / "volume"
    (volume / "results").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    server.fail["/up/bad"] = [500] * 10
    deliveries = [Delivery("scratch/results", root=str(volume), sub="results"),
                  Delivery(f"{server.url}/up/out.tar.gz", url=f"{server.url}/up/out.tar.gz"),
                  Delivery(f"{server.url}/up/bad", url=f"{server.url}/up/bad")]
    logs: List[str] = []
    results = deliver_outputs(deliveries, output, work, "42", 2, logs.append, lambda _s: None)
    archive = volume / "results" / "42-output.tar.gz"
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert [r["ok"] for r in results] == [True, True, False]
    assert results[0]["where"] == str(archive) and results[0]["sha256"] == sha
    assert (volume / "results" / "42-output.tar.gz.sha256").read_text() == f"{sha}  42-output.tar.gz\n"
    with tarfile.open(archive) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert names["42/catalog.txt"].isfile() and names["42/escape"].issym()
    body, digest, hexdigest = server.put["/up/out.tar.gz"]
    assert hashlib.sha256(body).hexdigest() == sha == hexdigest
    assert digest == "sha-256=" + base64.b64encode(bytes.fromhex(sha)).decode()
    assert results[2]["attempts"] == 3 and "500" in results[2]["error"]
    assert any("trying again" in line for line in logs)


def test_a_delivery_never_follows_a_link_in_the_volume(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    volume = tmp_path / "volume"
    volume.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (volume / "results").symlink_to(elsewhere)  # planted after submission
    work = tmp_path / "work"
    work.mkdir()
    results = deliver_outputs([Delivery("v/results", root=str(volume), sub="results")], output, work, "7", 1,
                              lambda _m: None, lambda _s: None)
    assert not results[0]["ok"] and list(elsewhere.iterdir()) == []


def test_a_redirect_goes_only_where_the_site_lets_jobs_fetch_from(server, tmp_path):
    server.files["/real.fits"] = b"real"
    server.redirect["/moved"] = f"{server.url}/real.fits"
    server.redirect["/away"] = "http://elsewhere.invalid/x.fits"
    server.redirect["/ftp"] = "ftp://127.0.0.1/x.fits"
    get = [JobInput(f"{server.url}/moved", "a.fits")]
    allowed = (("http",), ("127.0.0.1",))
    assert fetch_inputs(get, tmp_path, None, 1 << 20, 0, lambda _m: None, allowed=allowed)[0]["bytes"] == 4
    for path in ("/away", "/ftp"):
        with pytest.raises(StagingError, match="where the site does not let jobs fetch from"):
            fetch_inputs([JobInput(f"{server.url}{path}", "b.fits")], tmp_path, None, 1 << 20, 3, lambda _m: None,
                         allowed=allowed)
    assert server.hits["/away"] == 1  # refused, not retried


def test_a_long_download_says_how_far_it_got(server, tmp_path):
    from stardock_hpc.jobs import staging

    server.files["/big"] = b"x" * (3 << 20)
    ticks = iter(range(0, 100_000, 11))  # each look at the clock: 11 s later
    logs: List[str] = []
    staging._download(JobInput(f"{server.url}/big", "big"), tmp_path / "big", 1 << 30, (("http",), ()),
                      logs.append, clock=lambda: float(next(ticks)))
    assert logs and logs[-1] == "input big: 3 MiB of 3 MiB so far" and len(logs) >= 2
