"""URLs as stardock shows them (urls.py): user info, query and fragment never shown, whatever the
URL; scheme, host, port and path kept; the user info of a URL turned into HTTP Basic credentials
for its transfer (percent-decoded)."""
from __future__ import annotations

import base64
import string
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stardock_hpc.urls import host_allowed, redact_url, redact_urls_in, scrub, transfer_target

# secrets are drawn from characters that a host or a path of the generated URLs never holds
SECRET = st.text(alphabet=string.ascii_uppercase + "!$&'()+,;=:@/?#%~ é", min_size=4,
                 max_size=24).map(lambda s: "S3" + s)
HOST = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,6}){0,2}", fullmatch=True)
PATH = st.from_regex(r"(/[a-z0-9._-]{1,8}){0,4}", fullmatch=True)
NOSETTINGS = settings(max_examples=400, deadline=None, database=None)


@st.composite
def urls(draw):
    scheme = draw(st.sampled_from(["http", "https", "HTTPS", "ftp", "s3"]))
    host = draw(HOST)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    user = draw(st.one_of(st.none(), SECRET))
    password = draw(st.one_of(st.none(), SECRET))
    query = draw(st.one_of(st.none(), st.lists(st.tuples(st.from_regex(r"[A-Za-z-]{1,12}", fullmatch=True),
                                                         SECRET), min_size=1, max_size=3)))
    fragment = draw(st.one_of(st.none(), SECRET))
    path = draw(PATH)
    secrets = []
    userinfo = ""
    if user is not None:
        userinfo = quote(user, safe="")
        secrets.append(user)
        if password is not None:
            userinfo += ":" + quote(password, safe="")
            secrets.append(password)
        userinfo += "@"
    url = f"{scheme}://{userinfo}{host}" + (f":{port}" if port else "") + path
    if query:
        url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
        secrets += [v for _k, v in query]
    if fragment is not None:
        url += "#" + quote(fragment, safe="")
        secrets.append(fragment)
    return url, secrets, (scheme, host, port, path)


@NOSETTINGS
@given(urls())
def test_a_redacted_url_shows_where_it_goes_and_no_secret(case):
    url, secrets, (scheme, host, port, path) = case
    shown = redact_url(url)
    for secret in secrets:
        assert secret not in shown and quote(secret, safe="") not in shown, (url, shown)
        assert secret[2:] not in shown[len(scheme) + 3:]  # not even the secret's tail
    assert shown.startswith(f"{scheme}://") and host in shown and path in shown
    if port:
        assert f":{port}" in shown
    assert redact_url(shown) == shown  # idempotent: shown twice, shown the same
    # the same inside a message, as an option is typed
    assert redact_urls_in(f"--deliver={url} failed") == f"--deliver={shown} failed"


@NOSETTINGS
@given(st.text(alphabet=st.characters(max_codepoint=0x7f) | st.sampled_from("é€\u202e"), max_size=120))
def test_redaction_never_fails_and_leaves_urllib_nothing_but_the_marker(text):
    """Whatever the text, what urllib would read as its user info, query or fragment is the
    marker (or nothing): a URL shown never carries a credential, however it was written."""
    shown = redact_url(text)
    assert redact_url(shown) == shown
    try:
        parts = urlsplit(shown)
    except ValueError:
        return
    assert parts.username in (None, "***") and parts.password is None, (text, shown)
    assert parts.query in ("", "***") and parts.fragment in ("", "***"), (text, shown)


@pytest.mark.parametrize("url, shown", [
    ("https://user:pw@data.example.org/a/m51.fits?token=abc#frag", "https://***@data.example.org/a/m51.fits?***#***"),
    ("http://u@h:8080/x", "http://***@h:8080/x"),
    ("http://h/x?", "http://h/x?"),
    ("http://[::1]:80/x?a=b", "http://[::1]:80/x?***"),
    ("https://h/up?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA", "https://h/up?***"),
    ("http://user:p:w@h/", "http://***@h/"),
    ("http://a@b@h/", "http://***@h/"),
    ("http://user:pass/x", "http://***/x"),     # an unencoded '/' in a password: the authority goes whole
    ("http:/\t/u:p@h/\n", "http://***@h/"),     # urllib drops tabs and newlines: so does the redaction
    ("scratch/results", "scratch/results"),
    ("file:///srv/x?y", "file:///srv/x?***"),
])
def test_redaction_examples(url, shown):
    assert redact_url(url) == shown


def test_credentials_become_basic_auth_for_the_urls_own_origin():
    target = transfer_target("https://us%40er:p%3Ass%20w@Data.Example.org:8443/x?sig=1")
    assert target.url == "https://Data.Example.org:8443/x?sig=1"
    assert base64.b64decode(target.auth.split()[1]).decode() == "us@er:p:ss w"
    assert target.same_origin("https://data.example.org:8443/elsewhere")
    assert not target.same_origin("https://other.org:8443/x") and not target.same_origin("http://data.example.org:8443/")
    plain = transfer_target("https://h.org/x")
    assert plain.auth is None and plain.url == "https://h.org/x" and plain.same_origin("https://h.org:443/y")
    assert base64.b64decode(transfer_target("http://only@h/").auth.split()[1]) == b"only:"


def test_scrub_takes_every_secret_part_out_of_a_message():
    url = "http://alice:Pa%24%24word@h/x?token=T0KEN-123&sig=S1GN"
    text = f"cannot fetch {url}: bad token T0KEN-123, signature S1GN, password Pa$$word, login alice:Pa%24%24word"
    out = scrub(text, [url])
    for secret in ("T0KEN-123", "S1GN", "Pa$$word", "Pa%24%24word"):
        assert secret not in out, out
    assert "http://***@h/x?***" in out


def test_host_lists():
    assert host_allowed("a.org", ()) and not host_allowed("a.org", (), empty_allows_all=False)
    assert host_allowed("x.a.org", ("*.a.org",)) and not host_allowed("a.org.evil", ("*.a.org",))
    assert host_allowed("anything", ("*",), empty_allows_all=False)
    assert host_allowed("A.ORG", ("a.org",)) and not host_allowed("b.org", ("a.org",))
