"""The container's environment: handed to its first process by descriptor (jobs/binds.py), set
there literally, with nothing of the image run before it; the credentials of the session stay out
(jobs/node.py container_env, schedulers/job_env.py). The preflight runs here in this machine's
bash 5.2, the bash of Debian 12 (the only base family), as the container runs it."""
from __future__ import annotations

import os
import subprocess
import time
from typing import Dict, Mapping, Optional, Sequence

import pytest

from stardock_hpc.engines.base import Mount
from stardock_hpc.jobs.binds import (
    PREFLIGHT,
    SHELL_OWN,
    SILENT,
    Handover,
    checked_command,
    hold_path,
    image_defaults,
    passable,
)
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.jobs.node import container_env
from stardock_hpc.schedulers.job_env import SESSION_CREDENTIALS, without_session_credentials

# What the image gives the container's first process (the engine sets it before our preflight)
IMAGE = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
HOSTILE = {
    "QUOTES": "it's \"double\" 'single'",
    "EXPANSIONS": "$HOME ${PATH} `id` $(id) $((1+1)) !! ~ *",
    "NEWLINES": "line1\nline2\n\n",
    "SPACES": "  two  spaces \t tab  ",
    "NON_ASCII": "ünïcödé ☃ 日本",
    "NON_UTF8": os.fsdecode(b"raw \xff\xfe bytes"),
    "EMPTY": "",
    "EQUALS": "a=b=c",
    "DASH": "-n",
    "BACKSLASH": "\\n \\ \\\\",
    # names the preflight's own code uses: the job's values win
    "fd": "7", "environment": "x", "stardock_env": "y", "IFS": ",", "HOME": "/tmp",
}


def run_preflight(env: Mapping[str, str], command: Sequence[str], image: Optional[Mapping[str, str]] = None,
                  held=(), extra=()) -> subprocess.CompletedProcess:
    handover = Handover(list(held), extra)
    try:
        argv = checked_command(handover.mounts, handover.add_environment(env), command)
        return subprocess.run(argv, capture_output=True, pass_fds=handover.pass_fds, preexec_fn=handover.in_child,
                              env=dict(IMAGE if image is None else image), timeout=60)
    finally:
        handover.close()


def environ_of(out: bytes) -> Dict[str, str]:
    return dict(os.fsdecode(r).split("=", 1) for r in out.split(b"\0") if r)


def test_hostile_values_and_names_arrive_exactly():
    proc = run_preflight(HOSTILE, ["/usr/bin/env", "-0"])
    assert proc.returncode == 0, proc.stderr
    got = environ_of(proc.stdout)
    assert {k: got.get(k) for k in HOSTILE} == HOSTILE
    assert got["PATH"] == IMAGE["PATH"] and got["LANG"] == IMAGE["LANG"]  # the image's, where the job sets none


def test_the_images_startup_hooks_run_neither_in_the_preflight_nor_in_a_bash_job(tmp_path):
    """An image (built by someone the site trusts) sets BASH_ENV, ENV, shell options that make bash
    source or trace code, and functions named like the builtins the preflight uses: none of it runs
    before the job, and a bash job script does not source the startup file either."""
    hook = tmp_path / "hook.sh"
    hook.write_text(f'echo "sourced by $0" >> {tmp_path}/ran\n')
    image = {**IMAGE, "BASH_ENV": str(hook), "ENV": str(hook), "SHELLOPTS": "xtrace:nounset",
             "BASHOPTS": "extdebug", "PS4": f"$(echo traced >> {tmp_path}/ran)", "TMOUT": "0.0001",
             "POSIXLY_CORRECT": "y",
             **{f"BASH_FUNC_{f}%%": f"() {{ echo hijacked {f} >> {tmp_path}/ran; }}"
                for f in ("mapfile", "command", "printf", "unset", "read", "test", "[")}}
    job = tmp_path / "job.sh"
    job.write_text('#!/bin/bash\nprintf "%s|" "${BASH_ENV-unset}" "${ENV-unset}" "$VALUE"\n'
                   '[[ ":$SHELLOPTS:" == *:xtrace:* ]] && echo " traced"\n')
    job.chmod(0o755)
    proc = run_preflight({"VALUE": "set", "UID": "0"}, [str(job)], image=image)
    assert not (tmp_path / "ran").exists(), (tmp_path / "ran").read_text()
    assert proc.stdout == b"unset|unset|set|", proc.stderr
    # in POSIX mode too, a name bash will not set is said (without its value) and the job runs
    assert b"UID was not set" in proc.stderr


def test_startup_files_the_job_names_are_its_own(tmp_path):
    hook = tmp_path / "mine.sh"
    hook.write_text("NAMED=sourced\n")
    job = tmp_path / "job.sh"
    job.write_text('#!/bin/bash\necho "$BASH_ENV $NAMED"\n')
    job.chmod(0o755)
    proc = run_preflight({"BASH_ENV": str(hook)}, [str(job)], image={**IMAGE, "BASH_ENV": "/image/hook"})
    assert proc.stdout.decode() == f"{hook} sourced\n", proc.stderr


def test_the_images_startup_files_never_come_with_its_variables():
    assert image_defaults(["PATH=/opt/bin", "BASH_ENV=/h", "ENV=/h", "A=x=y", "junk"]) == {"PATH": "/opt/bin",
                                                                                             "A": "x=y"}


def test_names_bash_sets_itself_are_measured_and_refused():
    """SHELL_OWN is what bash does not pass on as given; every other name in the list does."""
    ordinary = ["PWD", "OLDPWD", "IFS", "PATH", "BASH_ENV", "ENV", "TMOUT", "POSIXLY_CORRECT", "BASH_ARGV0",
                "HOSTNAME", "HOSTTYPE", "OSTYPE", "MACHTYPE", "BASH", "BASH_VERSION", "PS1", "PS4", "CDPATH",
                "GLOBIGNORE", "BASH_XTRACEFD", "HISTFILE", "COLUMNS", "LINES", "OPTERR", "OPTARG", "MAILCHECK",
                "BASH_REMATCH", "COMP_WORDS", "BASH_EXECUTION_STRING", "BASH_LOADABLES_PATH", "LANG", "LC_ALL"]
    names = sorted(SHELL_OWN) + ordinary
    proc = run_preflight({n: "stardock-value" for n in names}, ["/usr/bin/env", "-0"])
    got = environ_of(proc.stdout)
    arrived = {n for n in names if got.get(n) == "stardock-value"}
    assert arrived == set(ordinary)
    ok, refused = passable({**{n: "v" for n in names}, "A.B": "1", "BASH_FUNC_f%%": "() { :; }", "1X": "",
                            "NUL": "a\0b", "FINE": "v"})
    assert set(ok) == {*ordinary, "FINE"}
    assert set(refused) == SHELL_OWN - SILENT | {"A.B", "BASH_FUNC_f%%", "1X", "NUL"}


def test_a_large_environment_arrives_whole():
    env = {f"V{i}": f"{i}-" + "x" * 200 for i in range(4000)}
    env["BIG"] = "y" * 120_000  # one variable near the kernel's limit for one string (128 KiB)
    started = time.monotonic()
    proc = run_preflight(env, ["/usr/bin/env", "-0"])
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-500:]
    got = environ_of(proc.stdout)
    assert {k: got.get(k) for k in env} == env
    assert took < 5, f"{took:.1f}s for a {sum(map(len, env.values())) >> 10} KiB environment"


def test_an_extra_descriptor_keeps_its_number_and_the_environment_its_own(tmp_path):
    """A task's PMI_FD is passed after the held binds and named in its variable; the environment
    comes last and is closed, like the held ones, before the job runs."""
    (tmp_path / "d").mkdir()
    held = [hold_path(tmp_path / "d", str(tmp_path / "d"), True, "t")]
    r, w = os.pipe()
    os.write(w, b"from the pmi socket")
    os.close(w)
    handover = Handover(held, extra=[r])
    os.close(r)
    try:
        [pmi] = handover.extra_fds
        fd = handover.add_environment({"PMI_FD": str(pmi)})
        assert (pmi, fd) == (4, 5) and handover.pass_fds == (3, 4, 5)
        argv = checked_command(handover.mounts, fd, ["bash", "-c", 'cat <&"$PMI_FD"; echo; ls /proc/self/fd'])
        proc = subprocess.run(argv, capture_output=True, text=True, pass_fds=handover.pass_fds,
                              preexec_fn=handover.in_child, env=IMAGE)
    finally:
        handover.close()
    assert proc.stdout.startswith("from the pmi socket\n"), proc.stderr
    fds = proc.stdout.splitlines()[1:]  # ls's own: 0-2, its directory, and what it inherited
    assert "4" in fds and "5" not in fds, fds


def test_no_environment_no_job():
    argv = ["bash", "-p", "-c", PREFLIGHT, "pre", "9", "--", "echo", "RAN"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=IMAGE)
    assert proc.returncode == 126 and "RAN" not in proc.stdout
    assert "environment did not reach the container" in proc.stderr


def test_a_swapped_bind_is_refused_before_the_environment_is_read(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    held = [hold_path(tmp_path / "a", "/x", True, "t")]
    handover = Handover(held)
    try:
        fd = handover.add_environment({"SECRET": "s"})
        argv = checked_command([Mount(tmp_path / "b", str(tmp_path / "b"), True)], fd, ["echo", "RAN"])
        proc = subprocess.run(argv, capture_output=True, text=True, pass_fds=handover.pass_fds,
                              preexec_fn=handover.in_child, env=IMAGE)
    finally:
        handover.close()
    assert proc.returncode == 126 and "is not what was checked" in proc.stderr


# --- the session's credentials ------------------------------------------------------------------

def _launch(**kw) -> Launch:
    return Launch(engine="podman", entry="/e", artifact="/e/a", key="k" * 64, name="n", tag="t", mounts=[],
                  outputs="/o", records="/r", mount_root="/data", network=False, script="#!/bin/sh\n",
                  script_name="s", **kw)


def test_the_slurm_token_of_the_session_enters_no_container_unless_named():
    environ = {"SLURM_JWT": "eyJ.token.sig", "SLURM_JOB_ID": "7", "DOCKER_PASSWORD": "pw"}
    assert "SLURM_JWT" in SESSION_CREDENTIALS
    env = container_env(_launch(), environ, "u", "/data/output")
    assert "SLURM_JWT" not in env and env["SLURM_JOB_ID"] == "7" and "DOCKER_PASSWORD" not in env
    for named in ({"pass_env": ["SLURM_JWT"]}, {"export_env": ["SLURM_JWT"]}):
        assert container_env(_launch(**named), environ, "u", "/data/output")["SLURM_JWT"] == "eyJ.token.sig"


def test_without_session_credentials_keeps_what_is_named():
    env = {"SLURM_JWT": "t", "SLURM_JOB_NAME": "j", "API_KEY": "k"}
    assert without_session_credentials(env, []) == {"SLURM_JOB_NAME": "j", "API_KEY": "k"}
    assert without_session_credentials(env, ["SLURM_JWT"]) == env


@pytest.mark.parametrize("backend", ["rest", "pyslurm"])
def test_a_rest_or_pyslurm_job_environment_lacks_the_token_unless_named(backend, tmp_path):
    from stardock_hpc.schedulers.base import Submission
    from stardock_hpc.schedulers.pyslurm_backend import submit_attributes
    from stardock_hpc.schedulers.rest import job_description
    from stardock_hpc.slurm.options import Option

    def environment(options, named=()):
        sub = Submission("#!/bin/sh\ntrue\n", options, [], tmp_path, {"SLURM_JWT": "tok", "KEEP": "k"}, "job.sh",
                         named=tuple(named))
        fields = job_description(sub)["job"] if backend == "rest" else submit_attributes(sub)
        return fields["environment"]
    plain = environment([])
    assert "SLURM_JWT" not in plain and plain["KEEP"] == "k"
    assert environment([], named=["SLURM_JWT"])["SLURM_JWT"] == "tok"  # --pass-env SLURM_JWT
    explicit = [Option("export", "ALL,SLURM_JWT=other", ("--export=ALL,SLURM_JWT=other",))]
    assert environment(explicit, named=["SLURM_JWT"])["SLURM_JWT"] == "other"


def test_sbatch_gets_export_values_in_its_environment_not_on_its_command_line(tmp_path, monkeypatch):
    """sbatch reads $SBATCH_EXPORT just below its command line: the same job, nothing in `ps`."""
    from stardock_hpc.schedulers.base import Submission
    from stardock_hpc.schedulers.sbatch import SbatchScheduler
    from stardock_hpc.slurm.options import Option

    fake = tmp_path / "sbatch"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\nprintf "%s" "$SBATCH_EXPORT" > '
                    f'{tmp_path}/export\necho 42\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    options = [Option("export", "ALL,A=first", ("--export=ALL,A=first",)),
               Option("time", "5", ("-t", "5")), Option("export", "ALL,TOKEN=s3cr3t", ("--export", "ALL,TOKEN=s3cr3t"))]
    submitted = SbatchScheduler().submit(Submission("#!/bin/sh\ntrue\n", options, ["arg"], tmp_path,
                                                    dict(os.environ), "job.sh"))
    argv = (tmp_path / "argv").read_text().splitlines()
    assert submitted.job_id == "42" and argv[:3] == ["--parsable", "-t", "5"] and argv[-1] == "arg"
    assert not [a for a in argv if "s3cr3t" in a or "first" in a or a.startswith("--export")]
    assert (tmp_path / "export").read_text() == "ALL,TOKEN=s3cr3t"  # the last one, as sbatch takes it
