"""`stardock notebook` on the testbed (issue 18): JupyterLab in the user's environment as a Slurm
job. One notebook job for the module (an environment with astropy; stardock adds jupyterlab),
the archive volume mounted read-only:
  * a notebook run with nbclient through the tunnel and the token: its cell reads the archive's
    FITS image with astropy and writes its result into the job's output directory; the kernel
    runs in the job's cgroup;
  * the other test user cannot connect: not to the login node's socket, not to the server's
    socket on the node, not through a step of the job;
  * headless Chromium opens JupyterLab through the tunnel; its screenshot shows the lab;
  * `stop` leaves nothing: no job, no forwarder, no socket, no container, no job directory.

The tunnel is the ssh command `stardock notebook` prints, run as printed: the testbed's sshd is
the login node's (slurm/testbed/tbssh.py), and the test user's ssh config sends ssh there."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest
from clitools import ENGINES, OTHER, remove, shared_dir, stardock, stardock_json, write_spec

from stardock_hpc.jobs.records import RecordStore
from stardock_hpc.jobs.report import user_records
from stardock_hpc.site import load_site

from slurmtools import node_containers, sh, wait_job

pytestmark = [pytest.mark.slurm]

FITS = "/data/archive/m51/m51-r.fits"


@pytest.fixture(scope="module", params=ENGINES)
def notebook(request) -> Iterator[Dict]:
    work = shared_dir("stardock-notebook-")
    write_spec(work, "name: notebook-test\napps: [astropy]\n")
    info = stardock_json("notebook", "--env", str(work / "stardock.yaml"), "--engine", request.param,
                         "--mount", "archive/m51", "--time=20", "--wait", "600", "--port", str(free_port()), cwd=work)
    try:
        assert info["ready"] is True and info["state"] == "RUNNING", info
        yield {**info, "engine": request.param}
    finally:
        stardock("notebook", "stop", info["job"])
        remove(work)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tunnel(notebook) -> Iterator[int]:
    """The tunnel as printed, run as the user runs it on their own computer (the testbed's sshd is
    the login node's; the user's ssh config sends ssh there); its local port."""
    argv = shlex.split(notebook["tunnel"])
    assert argv[:3] == ["ssh", "-N", "-L"] and argv[3] == f"{notebook['port']}:{notebook['login_socket']}", argv
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", notebook["port"])) == 0:
                break
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1] if proc.poll() else "slow"
        time.sleep(0.2)
    yield notebook["port"]
    proc.terminate()
    proc.wait(10)


def fits_mean(path: str) -> float:
    """The mean of the archive's image, read here without astropy (a BITPIX -32 image)."""
    data = Path(path).read_bytes()
    header = data[:2880]
    cards = [header[i:i + 80].decode() for i in range(0, 2880, 80)]
    size = [int(c.split("=")[1]) for c in cards if c.startswith(("NAXIS1", "NAXIS2"))]
    values = struct.unpack(f">{size[0] * size[1]}f", data[2880:2880 + 4 * size[0] * size[1]])
    return sum(values) / len(values)


def test_the_jupyterlab_app_passes_its_smoke_command_in_the_notebooks_image(notebook, tmp_path):
    from stardock_hpc.catalog import load_catalog

    key = stardock_json("status", notebook["job"])[0]["image"]
    smoke = load_catalog().app("jupyterlab").smoke
    out = shared_dir("stardock-notebook-smoke-")
    try:
        job = stardock("sbatch", "--parsable", "--image", key, "--time=5", f"--output={out}/smoke.out", "--wrap",
                       smoke)
        assert job.returncode == 0, job.stderr
        rows = wait_job(job.stdout.strip(), timeout=300)
        text = (out / "smoke.out").read_text()
        assert rows[job.stdout.strip()]["State"] == "COMPLETED", text
        assert "4.6.6" in text and "ipykernel" in text, text
    finally:
        remove(out)


def test_a_notebook_run_through_the_tunnel_reads_the_archive_and_writes_its_output(notebook, tunnel):
    import nbformat
    from jupyter_server.gateway import managers
    from jupyter_server.gateway.gateway_client import GatewayClient
    from nbclient import NotebookClient

    token = notebook["token"]
    GatewayClient.clear_instance()
    GatewayClient.instance(url=f"http://localhost:{tunnel}", auth_token=token)
    # The gateway client authenticates its HTTP requests but not its kernel websocket: the token
    # goes in that header too (the browser's lab sends its own).
    plain = managers.websocket.create_connection
    managers.websocket.create_connection = lambda url, **kw: plain(url, header=[f"Authorization: token {token}"],
                                                                   **kw)
    cell = (
        "from astropy.io import fits\n"
        "import json, os, socket\n"
        f"data = fits.getdata({FITS!r})\n"
        "result = {'shape': list(data.shape), 'mean': float(data.mean()),\n"
        "          'object': fits.getheader(" + repr(FITS) + ")['OBJECT'], 'host': socket.gethostname(),\n"
        "          'cgroup': open('/proc/self/cgroup').read()}\n"
        "listening = set()\n"  # the TCP sockets listening in the server's network, and whose they are
        "for table in ('/proc/net/tcp', '/proc/net/tcp6'):\n"
        "    for line in open(table).read().splitlines()[1:]:\n"
        "        if line.split()[3] == '0A':\n"
        "            listening.add('socket:[%s]' % line.split()[9])\n"
        "result['tcp_listeners'] = []\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        links = [os.readlink(f'/proc/{pid}/fd/{fd}') for fd in os.listdir(f'/proc/{pid}/fd')]\n"
        "    except OSError:\n"
        "        continue\n"
        "    result['tcp_listeners'] += [(pid, link) for link in links if link in listening]\n"
        "result['archive_options'] = [line.split()[5].split(',') for line in open('/proc/self/mountinfo')\n"
        "                              if line.split()[4] == '/data/archive/m51']\n"
        "json.dump(result, open('/data/output/result.json', 'w'))\n"
        "print('done', result['shape'])\n"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    try:
        NotebookClient(nb, km=managers.GatewayKernelManager(kernel_name="python3"), timeout=180).execute()
    finally:
        managers.websocket.create_connection = plain
        GatewayClient.clear_instance()
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert printed == "done [256, 256]\n", nb.cells[0].outputs
    record = stardock_json("status", notebook["job"])[0]
    result = json.loads((Path(record["output"]) / "result.json").read_text())
    assert result["shape"] == [256, 256] and result["object"] == "M51 (synthetic)"
    assert result["archive_options"] and all("ro" in options for options in result["archive_options"])
    host_archive = Path(os.environ["STARDOCK_TESTBED"]) / "volumes" / "archive" / "m51" / "m51-r.fits"
    assert abs(result["mean"] - fits_mean(str(host_archive))) < 1e-3
    # the kernel ran in the job, in its cgroup (accounting, --mem)
    assert f"job_{notebook['job']}/" in result["cgroup"], result["cgroup"]
    # neither the server nor its kernel listens on a TCP port (a socket and the ipc transport)
    assert result["tcp_listeners"] == []


def as_other(*argv: str, **kw) -> subprocess.CompletedProcess:
    return sh(["sudo", "-n", "-u", OTHER, "--", "env", f"SLURM_CONF={os.environ['SLURM_CONF']}", *argv], **kw)


CONNECT = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\n"
           "    print('connected')\nexcept OSError as exc:\n    print('refused', exc.errno)\n")


def test_the_other_user_cannot_connect(notebook):
    import sys

    # the login node's end: a socket in a directory only the user can enter
    login = as_other(sys.executable, "-c", CONNECT, notebook["login_socket"])
    assert login.stdout.strip() == "refused 13", login.stdout + login.stderr  # EACCES
    # the server's socket on the node, tried by a job of the other user's there
    node_socket = run_record(notebook["job"])["notebook_socket"]
    there = as_other("srun", "-w", notebook["node"], "-N1", "-n1", "-t", "2", sys.executable, "-c", CONNECT,
                     node_socket)
    assert there.stdout.strip() == "refused 13", there.stdout + there.stderr
    # the token on the node: not in any command line another user can read (the engines put the
    # container's environment on theirs); the server's is there to see
    seen = as_other("srun", "-w", notebook["node"], "-N1", "-n1", "-t", "2", "sh", "-c",
                    "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null")
    assert "--sock-mode=0600" in seen.stdout and notebook["token"] not in seen.stdout
    # a step of the notebook's job: Slurm says no
    step = as_other("srun", f"--jobid={notebook['job']}", "--overlap", "-N1", "-n1", "true")
    assert step.returncode != 0 and "denied" in step.stderr.lower(), step.stderr


def records() -> RecordStore:
    return user_records(load_site(None))


def run_record(job: str) -> Dict:
    return records().runs(job)[""]


def test_chromium_opens_jupyterlab_through_the_tunnel(notebook, tunnel, tmp_path):
    from PIL import Image

    chromium = shutil.which("chromium")
    assert chromium, "the testbed installs Debian's chromium"
    url = f"http://localhost:{tunnel}/lab?token={notebook['token']}"
    flags = [chromium, "--headless=new", "--disable-gpu", "--no-first-run", "--window-size=1280,900",
             "--virtual-time-budget=20000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = sh([*flags, "--dump-dom", url], timeout=120)
    assert "jp-LabShell" in dom.stdout and "jp-Launcher" in dom.stdout, dom.stdout[-2000:] + dom.stderr[-2000:]
    shot = tmp_path / "lab.png"
    sh([*flags, f"--screenshot={shot}", url], timeout=120)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 900)
    colours = {pixel: n for n, pixel in image.getcolors(maxcolors=1 << 24)}
    # the lab's brand blue (its "+" launcher button, the open tab) and the Jupyter orange (its logo,
    # the launcher's Notebook icon) are there; a blank page or an error page has neither
    blue = sum(n for (r, g, b), n in colours.items() if abs(r - 25) < 20 and abs(g - 118) < 20 and abs(b - 210) < 20)
    orange = sum(n for (r, g, b), n in colours.items() if abs(r - 243) < 25 and abs(g - 119) < 25 and abs(b - 38) < 25)
    assert blue > 500 and orange > 100, (blue, orange)
    assert image.getpixel((60, 52))[2] > 150  # the blue "+" of the file browser, top left


def test_stop_leaves_nothing_behind(notebook):
    job, node = notebook["job"], notebook["node"]
    listed = stardock_json("notebook", "list")
    assert [row["job"] for row in listed] == [job] and listed[0]["reachable_here"] is True
    forwarder = notebook["forwarder"]
    node_socket = run_record(job)["notebook_socket"]
    out = stardock("notebook", "stop", job)
    assert out.returncode == 0 and f"stopped notebook job {job}" in out.stdout, out.stderr
    rows = wait_job(job, timeout=120)
    assert rows[job]["State"].startswith("CANCELLED"), rows
    assert not Path(notebook["login_socket"]).exists()
    assert not Path(f"/proc/{forwarder}").exists() or b"stardock_hpc.jobs.relay" not in \
        Path(f"/proc/{forwarder}/cmdline").read_bytes()
    for _ in range(30):  # the wrapper cleans up after Slurm's signal
        left = sh(["srun", "-w", node, "-N1", "-n1", "-t", "2", "sh", "-c",
                   f"ls -d {os.path.dirname(os.path.dirname(node_socket))} 2>/dev/null; true"])
        if not left.stdout.strip():
            break
        time.sleep(1)
    assert not left.stdout.strip(), left.stdout
    if notebook["engine"] == "podman":
        assert not [c for c in node_containers(node) if c.startswith(f"stardock-{job}-")]
    assert stardock_json("notebook", "list") == []
    assert not (records().root / job / "notebook.json").exists()
