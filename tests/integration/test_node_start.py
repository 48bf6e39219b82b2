"""Starting at scale (issue 14): Podman images run in place from the cache's squashfs on any
node, nothing of a job goes into the home, the users' engine state stays node-local and bounded,
and many jobs of one image start at once across the nodes."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
from clitools import ENGINES, remove, shared_dir, stardock, stardock_json, write_spec

from slurmtools import node_podman_argv, sh, wait_job

pytestmark = [pytest.mark.slurm]
NODE_STORE = "/var/tmp/stardock-{uid}"


BUILT: list = []  # the keys this module built (never-seen images: a nonce each run)


@pytest.fixture(scope="module")
def work():
    path = shared_dir("stardock-start-")
    yield path
    remove(path)
    from stardock_hpc.cache import Cache
    from stardock_hpc.site import load_site

    site = load_site()
    cache = Cache(site.cache, site.trusted_builders)
    for entry in [e for e in cache.entries() if e.owner == os.getuid() and e.key in BUILT]:
        cache.remove(entry)


def build(work: Path, name: str, engine: str = "podman", path_env: Optional[str] = None) -> Dict:
    directory = work / name
    spec = write_spec(directory, f"name: {name}\nenv: {{GREETING: hello, NONCE: '{time.time()}'}}\n")
    extra = {"PATH": path_env} if path_env else None
    proc = stardock("build", str(spec), "--engine", engine, "--json", env=extra)
    assert proc.returncode == 0, proc.stderr
    BUILT.append(json.loads(proc.stdout)["key"])
    return json.loads(proc.stdout)


def job(work: Path, key: str, body: str, *sbatch: str) -> Tuple[str, str]:
    script = work / f"job-{time.time_ns()}.sh"
    script.write_text("#!/bin/bash\n" + body)
    proc = stardock("sbatch", "--parsable", "--image", key, "-t", "5", f"--output={script}.out", *sbatch,
                    str(script), cwd=work)
    assert proc.returncode == 0, proc.stderr
    jid = proc.stdout.strip()
    rows = wait_job(jid, timeout=600)
    out = Path(f"{script}.out").read_text()
    assert rows[jid]["State"] == "COMPLETED", out
    return jid, out


def on_node(node: str, command: str) -> str:
    out = sh(["srun", "-w", node, "-N1", "-n1", "-t", "2", "sh", "-c", command])
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def sqfs_image(work) -> Dict:
    return build(work, "start-sqfs")


@pytest.mark.podman
def test_a_podman_image_runs_in_place_from_the_caches_squashfs(work, sqfs_image):
    info = sqfs_image
    entry = Path(info["artifact"]).parent
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["run_form"] == "image.sqfs" and (entry / "image.sqfs").is_file()
    assert "GREETING=hello" in meta["image_config"]["Env"]
    _jid, out = job(work, info["key"], 'echo "$GREETING $(id -un) $(head -1 /etc/os-release)"\n', "-w", "node3")
    user = pwd.getpwuid(os.getuid()).pw_name
    assert out.splitlines()[-1] == f'hello {user} PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"', out
    # nothing of it was loaded into node3's store: the image is mounted, not stored
    listed = sh(node_podman_argv("node3", "images", "--format", "{{.Repository}}:{{.Tag}}"))
    assert listed.returncode == 0, listed.stderr
    assert meta["image_tag"] not in listed.stdout.split(), listed.stdout


def snapshot(home: Path) -> Dict[str, Tuple[int, int]]:
    found = {}
    for dirpath, dirnames, files in os.walk(home):
        for name in dirnames + files:
            path = Path(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            found[str(path.relative_to(home))] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.mark.parametrize("engine", ENGINES)
def test_a_job_writes_nothing_in_the_home_but_its_record(work, engine):
    info = build(work, f"home-{engine}", engine)
    home = Path(os.path.expanduser("~"))
    records = stardock_json("site", "show")["settings"]["records"]["value"]
    records_rel = str(Path(records.replace("{home}", str(home)).replace("{user}", pwd.getpwuid(os.getuid()).pw_name)
                           ).relative_to(home))
    before = snapshot(home)
    job(work, info["key"], 'echo ran > "$STARDOCK_OUTPUT/x"\n', "-w", "node2")
    after = snapshot(home)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert [p for p in changed if not (p == records_rel or p.startswith(records_rel + "/")
                                       or records_rel.startswith(p + "/"))] == []


@pytest.mark.podman
def test_images_without_a_squashfs_are_loaded_node_locally_and_kept_under_the_bound(work, tmp_path):
    """A site without squashfs-tools: images are loaded into the node's store, which stays under
    node_storage_max (the least recently used image no container uses goes first)."""
    bin_dir = work / "bin-without-mksquashfs"
    bin_dir.mkdir()
    for name in os.listdir("/usr/bin"):
        if name != "mksquashfs":
            (bin_dir / name).symlink_to(Path("/usr/bin", name))
    path_env = ":".join(str(bin_dir) if p in ("/usr/bin", "/bin") else p for p in os.environ["PATH"].split(":"))
    assert shutil.which("mksquashfs", path=path_env) is None and shutil.which("podman", path=path_env)
    site = work / "site-small-store.yaml"
    text = Path(os.environ["STARDOCK_SITE_CONFIG"]).read_text()
    site.write_text(text + "node_storage_max: 1M\n")
    keys = []
    for i in range(3):
        info = build(work, f"loaded-{i}", path_env=path_env)
        meta = json.loads((Path(info["artifact"]).parent / "meta.json").read_text())
        assert "run_form" not in meta
        keys.append(info["key"])
    for key in keys:
        proc = stardock("sbatch", "--parsable", "--site", str(site), "--image", key, "-w", "node2", "-t", "5",
                        "--output=/dev/null", "--wrap", "echo $GREETING", cwd=work)
        assert proc.returncode == 0, proc.stderr
        assert wait_job(proc.stdout.strip(), timeout=600)[proc.stdout.strip()]["State"] == "COMPLETED"
    used = json.loads(on_node("node2", f"cat {NODE_STORE.format(uid=os.getuid())}/used.json"))
    tags = sorted(used)
    assert len(tags) == 1 and tags[0].endswith(":" + keys[-1][:16]), used  # the others were evicted
    shutil.rmtree(bin_dir, ignore_errors=True)


@pytest.mark.podman
def test_sixteen_jobs_of_a_never_seen_image_start_at_once_on_three_nodes(work):
    info = build(work, "start-many")
    sqfs = Path(info["artifact"]).parent / "image.sqfs"
    made = sqfs.stat().st_mtime_ns
    script = work / "many.sh"
    script.write_text('#!/bin/bash\necho "$GREETING from $SLURM_JOB_NODELIST"\n')
    jobs = []
    # each node named in turn: the scheduler would go round a node other tests' jobs fill
    for i in range(16):
        node = f"node{i % 3 + 1}"
        proc = stardock("sbatch", "--parsable", "--image", info["key"], "-t", "5", "--mem=200M",
                        f"--nodelist={node}", f"--output={work}/many-%j.out", str(script), cwd=work)
        assert proc.returncode == 0, proc.stderr
        jobs.append((proc.stdout.strip(), node))
    for jid, node in jobs:
        rows = wait_job(jid, timeout=900)
        out = (work / f"many-{jid}.out").read_text()
        assert rows[jid]["State"] == "COMPLETED", out
        assert out.strip().splitlines()[-1] == f"hello from {node}", out
    assert sqfs.stat().st_mtime_ns == made  # made once, at publish; never again


@pytest.mark.podman
def test_a_run_never_depends_on_the_users_pause_process(sqfs_image, tmp_path, monkeypatch):
    """Rootless Podman's own user namespace is kept by a pause process of whichever job or step of
    the user started Podman first on the node, and Slurm ends it with that job or step. Here it is
    dying (killed, not yet reaped: a zombie, as when init reaps late), and Podman's database holds a
    container of a job whose wrapper was killed (it says running; its conmon is dead). Podman cannot
    join the pause process, tries that conmon and fails ("invalid internal status ... could not find
    any running process": the next job on the node failed so). The run mounts its squashfs and
    starts in a namespace of its own process, whatever became of the pause process; the killed
    job's container is removed from there too."""
    from stardock_hpc import proctree
    from stardock_hpc.engines import podman_userns
    from stardock_hpc.engines.base import ImageRef, RunOptions
    from stardock_hpc.engines.podman import PodmanEngine, podman
    from stardock_hpc.proc import run

    runtime, store = tmp_path / "runtime", Path(tempfile.mkdtemp(prefix="sd-store-"))  # Podman: runroot < 50 chars
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))  # this test's own pause process and database
    monkeypatch.setenv("STARDOCK_NODE_STORAGE", str(store))
    plain = ["podman", "--root", f"{store}/podman/storage", "--runroot", f"{store}/podman/run"]  # as Podman joins
    name = f"killed-{os.getpid()}"
    engine, pause, mounted = PodmanEngine(), 0, None
    ours = set(proctree.descendants(os.getpid()))
    assert proctree.set_subreaper(True)  # what Podman double-forks is ours to kill and to leave unreaped
    squashfs = str(Path(sqfs_image["artifact"]).parent / "image.sqfs")
    try:  # a job as they ran before: mounted and run in Podman's namespace (its pause process)
        (tmp_path / "old").mkdir(mode=0o700)
        run([*plain, "unshare", "squashfuse", "-o", "ro,allow_other", squashfs, str(tmp_path / "old")], timeout=120)
        started = run([*plain, "run", "-d", "--name", name, "--rootfs", f"{tmp_path / 'old'}:O", "sleep", "600"],
                      check=False, timeout=120)
        assert started.returncode == 0, started.stderr
        pids = run([*plain, "inspect", "--format", "{{.State.ConmonPid}} {{.State.Pid}}", name], timeout=60)
        pause = int((runtime / "libpod" / "tmp" / "pause.pid").read_text())
        for pid in map(int, pids.stdout.split()):  # the killed job's container: dead, its state says running
            os.kill(pid, 9)
            assert gone(pid, reap=True)
        os.kill(pause, 9)
        assert until(lambda: state_of(pause) == "Z")  # dying: dead, not yet reaped
        before = run([*plain, "ps", "-a", "--format", "{{.Names}} {{.State}}"], check=False, timeout=60)
        assert before.returncode != 0 and "could not find any running process" in before.stderr, before
        mounted = engine.mount(ImageRef("podman", "unused", squashfs=squashfs), tmp_path / "rootfs")
        options = RunOptions(uid=os.getuid(), gid=os.getgid())
        out = run(engine.run_argv(mounted, ["sh", "-c", "id -u; head -1 /etc/os-release"], [], None, options),
                  check=False, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [str(os.getuid()), 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"']
        assert engine.remove_run(name)
        assert name not in run([*podman(), "ps", "-a", "--format", "{{.Names}}"], timeout=60).stdout.split()
        assert state_of(pause) == "Z", "the pause process was neither joined nor needed"
    finally:
        if mounted is not None:
            engine.unmount(mounted)
        podman_userns.enter()  # the store's files belong to the user's subordinate ids
        run([*podman_userns.nsenter(), "rm", "-rf", str(store)], check=False, timeout=120)
        podman_userns.leave()
        for pid in set(proctree.descendants(os.getpid())) - ours:  # the pause process, conmons, squashfuses
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            gone(pid, reap=True)
        proctree.set_subreaper(False)
    assert not Path(store).exists()


def until(cond) -> bool:
    for _ in range(100):
        if cond():
            return True
        time.sleep(0.1)
    return False


def state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def gone(pid: int, reap: bool = False) -> bool:
    """Whether pid ended (reaped too: our child, or ours as a subreaper)."""
    for _ in range(100):
        if reap and state_of(pid) == "Z":
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                reap = False  # another's to reap
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.1)
    return False
