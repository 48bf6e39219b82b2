"""--input and --deliver (jobs/staging.py) against a real HTTP server on this machine's loopback:
what a URL may be, downloads with their digest, retries with backoff, the size cap, the download
cache, file URLs that are links, and deliveries to a directory and by PUT. In a Slurm job on the
testbed's nodes: tests/integration/test_staging.py."""
from __future__ import annotations

import base64
import hashlib
import os
import tarfile
from pathlib import Path
from typing import List
from urllib.parse import quote

import pytest
from httpfiles import HttpFiles

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.deliveries import deliver_outputs
from stardock_hpc.jobs.staging import (
    Delivery,
    JobInput,
    StagingError,
    fetch_inputs,
    parse_delivery,
    parse_input,
    parse_inputs,
)
from stardock_hpc.site import DeliveriesPolicy, InputsPolicy

POLICY = InputsPolicy(schemes=("http", "https", "file"))   # a site that lets jobs read the nodes' files
TO_ANY = DeliveriesPolicy(hosts=("*",))
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
    assert parse_delivery("https://h.org/up/out.tar.gz", lambda t: ("", ""), TO_ANY).url == \
        "https://h.org/up/out.tar.gz"
    assert parse_delivery("scratch/results", lambda t: ("/srv/scratch", "results"), TO_ANY) == \
        Delivery("scratch/results", None, "/srv/scratch", "results")
    for bad in ("ftp://h.org/x", "https://h.org/x#f", "file:///tmp/x", "file:/tmp/x", "http:x"):
        with pytest.raises(UsageError):
            parse_delivery(bad, lambda t: ("", ""), TO_ANY)


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
    done = fetch_inputs(inputs, dest, cache, 1 << 20, 3, logs.append, slept.append, cache_max=1 << 20)
    assert (dest / "m51.fits").read_bytes() == data and (dest / "cat.txt").read_bytes() == other
    assert [d["source"] for d in done] == ["download", "download"] and done[1]["attempts"] == 3
    assert slept == [1.0, 2.0] and any("503" in line and "trying again" in line for line in logs)
    assert (cache / sha).read_bytes() == data and oct((dest / "m51.fits").stat().st_mode)[-3:] == "400"
    # a second job: the pinned input from the cache, the server not asked
    hits = server.hits["/m51.fits"]
    dest2 = tmp_path / "in2"
    dest2.mkdir()
    again = fetch_inputs(inputs[:1], dest2, cache, 1 << 20, 3, logs.append, slept.append, cache_max=1 << 20)
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
    files = (("file",), ())
    done = fetch_inputs([JobInput(f"file://{real}", "r.txt")], dest, None, 1 << 20, 0, lambda _m: None, allowed=files)
    assert done[0]["bytes"] == 5 and (dest / "r.txt").read_text() == "data\n"
    with pytest.raises(StagingError, match="cannot read"):
        fetch_inputs([JobInput(f"file://{tmp_path}/link.txt", "l.txt")], dest, None, 1 << 20, 0, lambda _m: None,
                     allowed=files)
    with pytest.raises(StagingError, match="not a regular file"):
        fetch_inputs([JobInput(f"file://{tmp_path}", "d")], dest, None, 1 << 20, 0, lambda _m: None, allowed=files)


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
    results = deliver_outputs(deliveries, output, work, "42", 2, logs.append, lambda _s: None,
                              allowed=(("http",), ("127.0.0.1",)))
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
        with pytest.raises(StagingError, match="where the site does not let jobs go"):
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


# --- credentials in URLs (issue 23, item 5) ----------------------------------------------------
TOKEN, PASSWORD, SIGNATURE = "T0KEN-7f3a9c", "pa:ss w@rd", "S1GNATURE-d41d8"


@pytest.fixture
def other_host(monkeypatch):
    """A second server on another loopback address: another origin."""
    s = HttpFiles("127.0.0.2")
    yield s
    s.close()


def no_secret(*texts: object) -> None:
    for text in texts:
        for secret in (TOKEN, PASSWORD, quote(PASSWORD, safe=""), SIGNATURE, "alice"):
            assert secret not in str(text), text


def test_user_info_is_sent_as_basic_auth_and_no_url_shows_a_secret(server, tmp_path):
    server.files[f"/m51.fits?token={TOKEN}"] = b"FITS"
    server.need_auth[f"/m51.fits?token={TOKEN}"] = f"alice:{PASSWORD}"
    url = f"http://alice:{quote(PASSWORD, safe='')}@{server.url[7:]}/m51.fits?token={TOKEN}"
    item = parse_input(url, POLICY)
    assert item.url == url and item.name == "m51.fits"
    logs: List[str] = []
    done = fetch_inputs([item], tmp_path, None, 1 << 20, 0, logs.append)
    assert (tmp_path / "m51.fits").read_bytes() == b"FITS"
    assert server.auth[f"/m51.fits?token={TOKEN}"] == [
        "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()]
    assert done[0]["url"] == f"http://***@{server.url[7:]}/m51.fits?***"
    no_secret(done, logs)


@pytest.mark.parametrize("case", ["wrong-password", "server-error", "unreachable", "not-found"])
def test_a_failing_transfer_says_why_without_the_secret(server, tmp_path, case):
    path = f"/x?token={TOKEN}"
    server.files[path] = b"x"
    if case == "wrong-password":
        server.need_auth[path] = "alice:right"
    if case == "server-error":
        server.fail[path] = [503] * 5
    address = server.url[7:] if case != "unreachable" else "127.0.0.1:9"
    url = f"http://alice:{quote(PASSWORD, safe='')}@{address}{'/nothing' if case == 'not-found' else ''}{path}"
    logs: List[str] = []
    with pytest.raises(StagingError) as err:
        fetch_inputs([JobInput(url, "x")], tmp_path, None, 1 << 20, 2, logs.append, lambda _s: None)
    assert {"wrong-password": "401", "server-error": "503", "unreachable": "cannot reach",
            "not-found": "404"}[case] in str(err.value)
    no_secret(err.value, logs)


def test_a_redirect_keeps_the_credentials_on_their_origin_only(server, other_host, tmp_path):
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    server.files["/here.fits"] = b"here"
    other_host.files["/there.fits"] = b"there"
    server.redirect["/same"] = f"{server.url}/here.fits"
    server.redirect["/away"] = f"{other_host.url}/there.fits"
    allowed = (("http",), ("127.0.0.1", "127.0.0.2"))
    creds = f"alice:{quote(PASSWORD, safe='')}@"
    for path, name in (("/same", "a"), ("/away", "b")):
        fetch_inputs([JobInput(f"http://{creds}{server.url[7:]}{path}", name)], tmp_path, None, 1 << 20, 0,
                     lambda _m: None, allowed=allowed)
    assert server.auth["/same"] == [basic] and server.auth["/here.fits"] == [basic]
    assert server.auth["/away"] == [basic] and other_host.auth["/there.fits"] == [None]
    assert (tmp_path / "b").read_bytes() == b"there"


def test_deliveries_put_with_basic_auth_and_log_no_signature(server, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "x.txt").write_text("x\n")
    path = f"/up/out.tar.gz?X-Amz-Signature={SIGNATURE}"
    server.need_auth[path] = f"alice:{PASSWORD}"
    server.fail[path] = [503]
    url = f"http://alice:{quote(PASSWORD, safe='')}@{server.url[7:]}{path}"
    delivery = parse_delivery(url, lambda t: ("", ""), DeliveriesPolicy(hosts=("127.0.0.1",)))
    assert delivery.url == url and delivery.dest == f"http://***@{server.url[7:]}/up/out.tar.gz?***"
    logs: List[str] = []
    results = deliver_outputs([delivery], output, tmp_path, "9", 2, logs.append, lambda _s: None,
                              allowed=(("http",), ("127.0.0.1",)))
    assert results[0]["ok"] and results[0]["attempts"] == 2, results
    assert path in server.put and any("trying again" in line for line in logs)
    no_secret(results, logs)


@pytest.mark.parametrize("text, fragment", [
    (f"https://alice:{PASSWORD.replace(' ', '%20')}@h.org/x?token={TOKEN}#frag", "only fragment allowed"),
    (f"ftp://alice:x@h.org/x?token={TOKEN}", "scheme 'ftp'"),
    (f"https://alice@/x?token={TOKEN}", "names no host"),
    (f"https://alice:x@h.org:port/x?token={TOKEN}", "not a URL"),
])
def test_an_input_refused_at_submission_shows_no_secret(text, fragment):
    with pytest.raises(UsageError, match=fragment) as err:
        parse_input(text, POLICY)
    no_secret(err.value)


# --- policy: file inputs and where deliveries go --------------------------------------------------
def test_file_inputs_are_off_unless_the_site_lists_them():
    with pytest.raises(UsageError, match=r"scheme 'file' is not allowed here; allowed: http, https "
                                         r"\(site config: policy.inputs.schemes\)"):
        parse_input("file:///home/victim/.ssh/id_rsa", InputsPolicy())
    assert parse_input("file:///srv/x", InputsPolicy(schemes=("file",))).name == "x"


@pytest.mark.parametrize("policy, url, fragment", [
    (DeliveriesPolicy(), "https://evil.example.org/drop", r"host 'evil.example.org' is not allowed here; allowed: "
                                                         r"none \(site config: policy.deliveries.hosts\)"),
    (DeliveriesPolicy(hosts=("*.archive.org",)), "https://evil.org/x", "allowed: \\*.archive.org"),
    (DeliveriesPolicy(schemes=("https",), hosts=("*",)), "http://h.org/x", "scheme 'http' is not allowed"),
])
def test_deliveries_go_only_where_the_site_says(policy, url, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_delivery(url, lambda t: ("", ""), policy)


def test_the_node_checks_the_policy_again(server, tmp_path):
    """A launch that names a URL the policy it carries does not allow (edited, or from another
    stardock) is refused on the node before anything is fetched or sent."""
    server.files["/x"] = b"x"
    with pytest.raises(StagingError, match="does not let jobs fetch from there"):
        fetch_inputs([JobInput(f"{server.url}/x", "x")], tmp_path, None, 1 << 20, 0, lambda _m: None,
                     allowed=(("https",), ()))
    with pytest.raises(StagingError, match="does not let jobs fetch from there"):
        fetch_inputs([JobInput("file:///etc/hostname", "h")], tmp_path, None, 1 << 20, 0, lambda _m: None)
    assert server.hits.get("/x") is None and not (tmp_path / "h").exists()
    output = tmp_path / "out"
    output.mkdir()
    results = deliver_outputs([Delivery("d", url=f"{server.url}/up")], output, tmp_path, "1", 0, lambda _m: None)
    assert not results[0]["ok"] and "policy.deliveries" in results[0]["error"] and "/up" not in server.put


def test_stardock_lines_are_checked_exactly_as_the_command_line(tmp_path):
    """The same --input and --deliver refused the same way, typed or in a #STARDOCK line of a
    script someone else wrote."""
    from stardock_hpc.jobs.request import apply_directives, parse_command_line
    from stardock_hpc.jobs.submit import staged
    from stardock_hpc.site import Site

    site = Site()
    for option in (["--input", "file:///home/victim/.ssh/id_rsa=key"],
                   ["--deliver", "https://attacker.example.org/drop"],
                   ["--input", f"https://h.org/x?token={TOKEN}#nope"]):
        plain, directed = tmp_path / "plain.sh", tmp_path / "directed.sh"
        plain.write_text("#!/bin/bash\ntrue\n")
        directed.write_text(f"#!/bin/bash\n#STARDOCK {' '.join(option)}\ntrue\n")
        errors = []
        for argv in ([*option, str(plain)], [str(directed)]):
            req = apply_directives(parse_command_line(argv, tmp_path))
            with pytest.raises(UsageError) as err:
                staged(req, site, "nobody", [])
            errors.append(err.value.message)
            no_secret(err.value)
        assert errors[0] == errors[1], errors


# --- deliveries to a volume: private, and no name another user can take first -----------------
def test_a_delivery_to_a_volume_is_private_and_its_names_cannot_be_taken_first(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "result.txt").write_text("r\n")
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o777)
    volume.chmod(0o1777)
    work = tmp_path / "work"
    work.mkdir()
    # the temporary names the old code used, taken first: every attempt failed
    for name in ("5-output.tar.gz", "5-output.tar.gz.sha256"):
        (volume / f".{name}.{os.getpid()}.part").mkdir()
    old = os.umask(0)
    try:
        results = deliver_outputs([Delivery("v", root=str(volume))], output, work, "5", 0, lambda _m: None)
    finally:
        os.umask(old)
    assert results[0]["ok"], results
    archive = volume / "5-output.tar.gz"
    assert results[0]["where"] == str(archive)
    for path in (archive, volume / "5-output.tar.gz.sha256"):
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in volume.iterdir() if p.name.endswith(".part") and p.is_file()]


@pytest.mark.root  # the other user's file is made with chown
def test_a_final_name_another_user_made_first_is_left_alone(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    volume = tmp_path / "volume"
    volume.mkdir()
    planted = volume / "6-output.tar.gz"
    planted.write_text("the other user's\n")
    os.chown(planted, 12345, 12345)  # as the other user would have made it
    work = tmp_path / "work"
    work.mkdir()
    results = deliver_outputs([Delivery("v", root=str(volume))], output, work, "6", 0, lambda _m: None)
    assert results[0]["ok"], results
    where = Path(results[0]["where"])
    assert where != planted and where.parent == volume and where.name.startswith("6-output.")
    assert planted.read_text() == "the other user's\n"
    assert (volume / f"{where.name}.sha256").read_text().split() == [results[0]["sha256"], where.name]


def test_a_pin_in_a_stardock_line_is_kept_as_on_the_command_line(tmp_path):
    """bash keeps a '#' inside a word: `URL#sha256=HEX` typed keeps its pin, and so must the same
    words in a #STARDOCK line (they were cut at the '#', the pin dropped without a word)."""
    from stardock_hpc.jobs.request import apply_directives, parse_command_line
    from stardock_hpc.jobs.submit import staged
    from stardock_hpc.site import Site

    option = ["--input", f"https://h.org/m51.fits#sha256={HEX}=m.fits"]
    plain, directed = tmp_path / "plain.sh", tmp_path / "directed.sh"
    plain.write_text("#!/bin/bash\ntrue\n")
    directed.write_text(f"#!/bin/bash\n#STARDOCK {' '.join(option)}  # a pinned input\ntrue\n")
    found = [staged(apply_directives(parse_command_line(argv, tmp_path)), Site(), "nobody", [])[0]
             for argv in ([*option, str(plain)], [str(directed)])]
    assert found[0] == found[1] == [{"url": "https://h.org/m51.fits", "name": "m.fits", "sha256": HEX}]
