"""Issue 9, as root: root's `stardock images prune` over links and files another user planted,
and root's `stardock images init` taking over layout directories a user made.

The attacker is the second test user, planting with `runuser`; root runs stardock from the
testbed's venv on a private cache (root's, 1777, like a site's) with a private site file.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

OTHER = os.environ.get("STARDOCK_OTHER_USER", "stardock2")
LAYOUT = ("entries", "tmp", "locks", "used", "inuse")


def stardock(*args: str, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stardock_hpc", *args, "--site", str(site)],
                          capture_output=True, text=True, timeout=120, cwd="/")


def attacker(code: str, **values) -> None:
    prelude = "import hashlib, json, os, sys\nV = json.loads(sys.argv[1])\n"
    proc = subprocess.run(["runuser", "-u", OTHER, "--", "/usr/bin/python3", "-c", prelude + textwrap.dedent(code),
                           json.dumps(values)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def meta(key: str, name: str, data: str) -> dict:
    return {"key": key, "engine": "podman", "name": name, "artifact": "image.oci.tar", "created": 0, "size": 1,
            "artifact_sha256": hashlib.sha256(data.encode()).hexdigest(),
            "image_tag": f"localhost/stardock/{name}:{key[:16]}"}


@pytest.fixture
def cache(tmp_path_factory):
    top = Path(tempfile.mkdtemp(prefix="stardock-asroot-", dir="/tmp"))
    top.chmod(0o755)
    root = top / "cache"
    root.mkdir()
    root.chmod(0o1777)
    site = top / "site.yaml"
    site.write_text(f"cache: {root}\n")
    yield top, root, site
    shutil.rmtree(top, ignore_errors=True)


def test_roots_prune_follows_no_link_and_touches_nothing_outside_the_cache(cache):
    top, root, site = cache
    for name in LAYOUT:  # as the site's admin (or the testbed) makes them
        (root / name).mkdir()
        (root / name).chmod(0o1777)
    uid = pwd.getpwnam(OTHER).pw_uid
    shm = top / "shm"  # root's and 1777, as /dev/shm and /tmp are
    shm.mkdir()
    shm.chmod(0o1777)
    (shm / "keep").write_text("keep\n")
    secret = top / "secret"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    k1, k2, k3 = "1" * 64, "2" * 64, "3" * 64
    attacker("""
def plant(d, m, data, artifact=True):
    os.makedirs(d, exist_ok=True)
    if artifact:
        open(os.path.join(d, "image.oci.tar"), "w").write(data)
    json.dump(m, open(os.path.join(d, "meta.json"), "w"))
e, t = os.path.join(V["root"], "entries"), os.path.join(V["root"], "tmp")
plant(V["shm"], V["m1"], "x", artifact=False)
os.symlink(V["shm"], os.path.join(e, V["k1"] + "-u0"))                 # root's (trusted) 1777 directory
os.symlink(V["root"], os.path.join(e, V["k3"] + "-u0"))                # the cache root itself
mine = os.path.join(e, V["k2"] + "-u" + str(os.getuid()))                # a valid entry of the attacker's,
plant(mine, V["m2"], "x", artifact=False)                                # whose artifact and a subdirectory
os.symlink(V["secret"], os.path.join(mine, "image.oci.tar"))             # lead outside the cache
os.symlink(V["shm"], os.path.join(mine, "sub"))
os.chmod(mine, 0o555)
for name, target in (("old", V["shm"]), ("dir", None)):
    path = os.path.join(t, V["k2"] + "-u" + str(os.getuid()) + "." + name)
    if target:
        os.symlink(target, path)
    else:
        os.mkdir(path)
        os.symlink(V["secret"], os.path.join(path, "link"))
        os.symlink(V["shm"], os.path.join(path, "dirlink"))
    os.utime(path, (0, 0), follow_symlinks=False)
os.symlink(V["shm"], os.path.join(V["root"], "inuse", V["k2"] + "-u" + str(os.getuid())))
os.symlink(V["secret"], os.path.join(V["root"], "used", V["k2"] + "-u" + str(os.getuid()) + ".u0"))
""", root=str(root), shm=str(shm), secret=str(secret), k1=k1, k2=k2, k3=k3,
             m1=meta(k1, "one", "x"), m2=meta(k2, "two", "x"))
    secret_stat = secret.stat()
    (root / "meta.json").write_text(json.dumps(meta(k3, "three", "x")))  # what the root link would show
    proc = stardock("images", "prune", "--older-than", "0", site=site)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert (shm.stat().st_mode & 0o7777) == 0o1777 and shm.stat().st_uid == 0
    assert sorted(p.name for p in shm.iterdir()) == ["keep", "meta.json"]
    assert (root.stat().st_mode & 0o7777) == 0o1777
    assert secret.read_text() == "secret\n" and secret.stat().st_mode == secret_stat.st_mode
    assert secret.stat().st_mtime_ns == secret_stat.st_mtime_ns
    for name in LAYOUT:
        st = (root / name).lstat()
        assert st.st_uid == 0 and (st.st_mode & 0o7777) == 0o1777, name
    # the attacker's real entry and the real leftover directory went (root prunes anybody's);
    # the links were not followed, and are not entries
    left = sorted(p.name for p in (root / "entries").iterdir())
    assert left == [f"{k1}-u0", f"{k3}-u0"], left
    assert not (root / "tmp" / f"{k2}-u{uid}.dir").exists()


def test_roots_init_takes_over_layout_directories_a_user_made(cache):
    top, root, site = cache
    attacker("""
for name in ("entries", "locks"):
    os.mkdir(os.path.join(V["root"], name))
    os.chmod(os.path.join(V["root"], name), 0o777)
os.symlink("/dev/shm", os.path.join(V["root"], "tmp"))
""", root=str(root))
    refused = stardock("images", "init", site=site)
    assert refused.returncode == 1 and "symbolic link" in refused.stderr, refused.stderr
    assert (Path("/dev/shm").stat().st_mode & 0o7777) == 0o1777
    os.unlink(root / "tmp")  # the admin moves it aside, as the message says
    init = stardock("images", "init", site=site)
    assert init.returncode == 0 and f"took over {root / 'entries'} from {OTHER}" in init.stdout, init.stdout
    for name in LAYOUT:
        st = (root / name).lstat()
        assert st.st_uid == 0 and (st.st_mode & 0o7777) == 0o1777, name
    check = stardock("site", "check", site=site)
    assert "ok    cache layout" in check.stdout, check.stdout
