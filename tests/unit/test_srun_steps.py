"""srun from inside a job's container: srun's options told from its program, the step file a task
reads, the wrapper put in front of the program, and what makes a task join the node's network."""
from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from stardock_hpc.engines.apptainer import ApptainerEngine
from stardock_hpc.engines.base import ImageRef, RunOptions
from stardock_hpc.engines.podman import PodmanEngine
from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.jobs.binds import Handover, hold_path
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.jobs.node import shares_node_network
from stardock_hpc.jobs.shell import parse_exec_args
from stardock_hpc.jobs.steps import Step, StepServer, multi_prog_file, task_env
from stardock_hpc.slurm.srun import components


def split(args):
    """The one component's options (as written), program and whether it is --multi-prog."""
    [component] = components(args)
    return [t for o in component.options for t in o.tokens], component.program, component.multi_prog

PREFIX = ["/usr/bin/python3", "/w/stardock-node", "--task", "/r/42.1.step.json"]


def _launch(**kw) -> Launch:
    return Launch(engine="podman", entry="/e", artifact="/e/a", key="k" * 64, name="n", tag="t", mounts=[],
                  outputs="/o", records="/r", mount_root="/data", network=False, script="#!/bin/sh\n",
                  script_name="s", **kw)


@pytest.mark.parametrize("args, options, program", [
    ("-N3 -n6 hostname", ["-N3", "-n6"], ["hostname"]),
    ("-N 3 --ntasks 6 --mpi=pmix prog a -b", ["-N", "3", "--ntasks", "6", "--mpi=pmix"], ["prog", "a", "-b"]),
    ("-lN3 prog", ["-l", "-N3"], ["prog"]),
    ("-lN 3 prog", ["-l", "-N", "3"], ["prog"]),
    ("--ntasks-per-n=2 prog", ["--ntasks-per-n=2"], ["prog"]),
    ("--ntasks-per-n 2 prog", ["--ntasks-per-n", "2"], ["prog"]),
    ("--label prog", ["--label"], ["prog"]),
    ("--exclusive prog", ["--exclusive"], ["prog"]),
    ("--exclusive=user prog", ["--exclusive=user"], ["prog"]),
    ("-K prog", ["-K"], ["prog"]),
    ("-K1 prog", ["-K1"], ["prog"]),
    ("-- prog --x", [], ["prog", "--x"]),
    ("--version", ["--version"], []),
])
def test_split_tells_srun_options_from_the_program(args, options, program):
    assert split(args.split()) == (options, program, False)


def test_multi_prog_takes_the_configuration_file_as_the_program():
    got = split(["-n2", "--multi-prog", "conf.txt"])
    assert got == (["-n2", "--multi-prog"], ["conf.txt"], True)
    assert split(["--multi", "conf.txt"])[2]


def test_an_ambiguous_abbreviation_names_the_candidates():
    with pytest.raises(UsageError) as info:
        split(["--ntasks-per", "2", "prog"])
    for name in ("--ntasks-per-node", "--ntasks-per-core", "--ntasks-per-socket"):
        assert name in str(info.value)
    assert "ambiguous" in str(info.value)


@pytest.mark.parametrize("args, message", [
    (["--bogus", "prog"], "unrecognized option '--bogus'"),
    (["-N"], "requires an argument"),
    (["--nodes"], "requires an argument"),
    (["-Y", "prog"], "invalid option"),
    (["--label=yes", "prog"], "doesn't allow an argument"),
    (["-Y", "prog"], "invalid option -- 'Y'"),
])
def test_bad_srun_options_are_usage_errors(args, message):
    with pytest.raises(UsageError, match=message):
        split(args)


def test_multi_prog_file_puts_the_wrapper_before_each_program_and_keeps_the_rest():
    conf = "# ranks  program\n\n0-1 hostname\n2\techo\n3   env  X=1\n"
    assert multi_prog_file(conf, ["/p", "w"]).splitlines() == [
        "# ranks  program", "", "0-1 /p w -- hostname", "2 /p w -- echo", "3 /p w -- env  X=1"]


def test_multi_prog_file_quotes_the_prefix():
    line = multi_prog_file("0-1 hostname", ["/opt/my python/bin/python3", "/w/it's"])
    assert shlex.split(line) == ["0-1", "/opt/my python/bin/python3", "/w/it's", "--", "hostname"]
    assert line.endswith("\n")


def test_multi_prog_file_splits_a_tab_separated_line_with_arguments_at_the_tab():
    # srun splits the ranks from the program on any whitespace: the program must follow the wrapper
    assert multi_prog_file("2\tmyprog --flag x\n", ["/p"]) == "2 /p -- myprog --flag x\n"


def test_task_env_takes_slurm_and_pmi_variables_from_the_task_and_the_rest_from_the_script():
    step = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "PMI_RANK": "0", "PMIX_RANK": "0", "OMPI_X": "s",
            "PATH": "/opt/bin:/usr/bin", "HOME": "/home/u", "MYVAR": "mine"}
    host = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "PMIX_RANK": "3", "PMI_FD": "9",
            "PATH": "/usr/bin", "HOSTONLY": "x", "HOME": "/elsewhere"}
    assert task_env(step, host) == {"SLURM_JOB_ID": "7", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
                                    "PMIX_RANK": "3", "PMI_FD": "9", "PATH": "/opt/bin:/usr/bin",
                                    "HOME": "/home/u", "MYVAR": "mine", "OMPI_X": "s"}  # the user's MPI tuning stays


def test_a_step_survives_its_file():
    step = Step(_launch(node_network=True, pass_env=["A"]), {"A": "it's $(x)\n", "PATH": "/bin"}, "/data/output",
                "/scratch/u/out", "42_3")
    back = Step.from_json(step.to_json())
    assert back == step and back.launch.node_network and back.env["A"] == "it's $(x)\n"


@pytest.fixture
def server(tmp_path):
    (tmp_path / "rpc").mkdir()
    (tmp_path / "steps").mkdir()
    (tmp_path / "out").mkdir()
    srv = StepServer(tmp_path / "rpc", tmp_path / "steps", _launch(), tmp_path / "out", "42",
                     python="/usr/bin/python3", wrapper=Path("/w/stardock-node"))
    yield srv
    srv.stop()


def command(server, args, env=None, cwd="/"):
    """What the server runs for a request from the container, and the files it made for it."""
    made = []
    return server._command(args, {} if env is None else env, cwd, made), made


def test_srun_runs_the_wrapper_with_a_private_step_file(server, tmp_path):
    env = {"PATH": "/opt/bin", "SLURM_NTASKS": "2"}
    host, [step_file] = command(server, ["srun", "-N2", "hostname"], env, "/data/work")
    assert stat.S_ISFIFO(os.stat(tmp_path / "rpc" / "requests").st_mode)
    assert host.argv == ["srun", "-N2", "/usr/bin/python3", "/w/stardock-node", "--task", str(step_file), "--",
                         "hostname"]
    assert step_file.parent == tmp_path / "steps" and step_file.exists()
    assert stat.S_IMODE(os.stat(step_file).st_mode) == 0o600
    step = Step.from_json(step_file.read_text())
    assert (step.env, step.cwd, step.output, step.label) == (env, "/data/work", str(tmp_path / "out"), "42")
    assert step.launch == server.launch
    host2, [step_file2] = command(server, ["srun", "true"], env, "/")
    assert step_file2 != step_file and str(step_file2) in host2.argv


def test_other_commands_pass_through_or_are_refused(server, tmp_path):
    assert command(server, ["scontrol", "show", "hostnames"])[0].argv == ["scontrol", "show", "hostnames"]
    assert command(server, ["srun", "--version"])[0].argv == ["srun", "--version"]
    with pytest.raises(StardockError, match="output directory"):
        command(server, ["sbcast", "a", "b"])
    with pytest.raises(StardockError):
        command(server, ["sbatch", "x"])
    assert list((tmp_path / "steps").iterdir()) == []


def test_a_multi_prog_file_is_read_on_the_host_and_rewritten(server, tmp_path):
    (tmp_path / "out" / "conf").write_text("0-1 hostname\n")
    host, [step_file, conf] = command(server, ["srun", "-n2", "--multi-prog", "conf"], {}, "/data/output")
    assert host.argv == ["srun", "-n2", "--multi-prog", str(conf)]
    assert conf != tmp_path / "out" / "conf" and conf.parent == tmp_path / "steps"
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    assert shlex.split(conf.read_text()) == ["0-1", "/usr/bin/python3", "/w/stardock-node", "--task",
                                             str(step_file), "--", "hostname"]
    with pytest.raises(StardockError, match="which the node does not see"):
        command(server, ["srun", "--multi-prog", "/opt/conf"], {}, "/data/output")
    with pytest.raises(StardockError, match="which the node does not see"):
        command(server, ["srun", "--multi-prog", "../conf"], {}, "/data/output")


@pytest.mark.parametrize("options, network", [
    (RunOptions(host_network=True), "--network=host"),
    (RunOptions(host_network=True, network=True), "--network=host"),
    (RunOptions(network=True), "--network=slirp4netns"),
    (RunOptions(), "--network=none"),
])
def test_podman_network(options, network):
    argv = PodmanEngine().run_argv(ImageRef("podman", "img"), ["true"], [], None, options)
    assert [a for a in argv if a.startswith("--network")] == [network]


def test_apptainer_uses_the_node_network_only_when_allowed():
    def argv(options):
        return ApptainerEngine().run_argv(ImageRef("apptainer", "/c/image.sif"), ["true"], [], None, options)
    host = argv(RunOptions(host_network=True))
    assert "--net" not in host and "--network=none" not in host
    isolated = argv(RunOptions())
    assert "--net" in isolated and "--network=none" in isolated
    assert isolated.index("--net") < isolated.index("/c/image.sif")


def test_a_step_task_shares_the_nodes_pid_namespace_with_both_engines():
    """Open MPI's shared memory tells peers apart by PID: tasks each in a PID namespace of their
    own are all PID 6 there. The batch script keeps its own (and Podman's --init, which needs it)."""
    image = ImageRef("podman", "img")
    task = PodmanEngine().run_argv(image, ["true"], [], None, RunOptions(host_pid=True))
    assert "--pid=host" in task and "--init" not in task
    script = PodmanEngine().run_argv(image, ["true"], [], None, RunOptions())
    assert "--init" in script and not any(a.startswith("--pid") for a in script)
    sif = ImageRef("apptainer", "/c/image.sif")
    assert "--pid" not in ApptainerEngine().run_argv(sif, ["true"], [], None, RunOptions(host_pid=True))
    assert "--pid" in ApptainerEngine().run_argv(sif, ["true"], [], None, RunOptions())


@pytest.mark.parametrize("environ, shared", [
    ({"SLURM_JOB_NUM_NODES": "3"}, True),
    ({"SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "2"}, True),
    ({"SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "1", "PMIX_RANK": "0"}, True),
    ({"PMI_FD": "5"}, True),
    ({"SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "1", "PATH": "/bin"}, False),
    ({}, False),
    ({"SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "two"}, False),
])
def test_shares_node_network(environ, shared):
    assert shares_node_network(_launch(node_network=True), environ) is shared
    assert shares_node_network(_launch(node_network=False), environ) is False


def test_parse_exec_args(tmp_path):
    parsed = parse_exec_args(["--image", "abc", "--", "echo", "hi"], tmp_path)
    assert (parsed.req.image, parsed.command, parsed.srun) == ("abc", ["echo", "hi"], [])
    parsed = parse_exec_args(["--env", "x.yaml", "--mount", "archive", "--", "true"], tmp_path)
    assert (parsed.req.spec_path, parsed.req.mounts, parsed.command) == (tmp_path / "x.yaml", ["archive"], ["true"])
    with pytest.raises(UsageError, match="'echo'"):
        parse_exec_args(["--image", "abc", "echo"], tmp_path)
    with pytest.raises(UsageError, match="after `--`"):
        parse_exec_args(["--image", "abc"], tmp_path)
    with pytest.raises(UsageError, match="'-N2'"):
        parse_exec_args(["--image", "abc", "-N2", "--", "echo"], tmp_path)


def test_handover_passes_an_extra_descriptor_after_the_held_ones(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    held = [hold_path(tmp_path / "a", "/x", True, "t"), hold_path(tmp_path / "b", "/y", True, "t")]
    r, w = os.pipe()
    handover = Handover(held, extra=[r])
    try:
        assert handover.extra_fds == (5,) and handover.pass_fds == (3, 4, 5)
        assert [m.target for m in handover.mounts] == ["/x", "/y"]
        os.write(w, b"through fd 5")
        os.close(w)
        out = subprocess.run(["bash", "-c", 'cat <&5; [ /proc/self/fd/3 -ef "$1" ] && echo " held"', "x",
                              str(tmp_path / "a")], capture_output=True, text=True, pass_fds=handover.pass_fds,
                             preexec_fn=handover.in_child)
        assert out.stdout == "through fd 5 held\n", out.stderr
    finally:
        handover.close()
        os.close(r)


@pytest.mark.parametrize("planted", ["out", "argv", "status"])
def test_a_link_planted_in_a_request_is_never_followed(server, tmp_path, planted):
    """The container makes the request directory: a link in it to a host file must not let it
    write (or read) that file through the wrapper."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    req = tmp_path / "rpc" / "r.ABCDEFGH"
    req.mkdir()
    (req / "argv").write_bytes(b"scontrol\0show\0hostnames\0")
    (req / "env").write_bytes(b"PATH=/bin\0")
    (req / "cwd").write_text("/data/output")
    for name in ("out", "err", "in", "signal", "status"):
        if name == planted:
            (req / name).symlink_to(victim)
        elif name != "argv":
            os.mkfifo(req / name)
    if planted == "argv":
        (req / "argv").unlink()
        (req / "argv").symlink_to(victim)
    if planted == "status":
        # a full request: the reader ends of the pipes must be open for the wrapper to get that far
        readers = [os.open(req / n, os.O_RDONLY | os.O_NONBLOCK) for n in ("out", "err")]
        writer = os.open(req / "in", os.O_RDWR)
        try:
            server._handle(req)
        finally:
            for fd in (*readers, writer):
                os.close(fd)
    else:
        server._handle(req)
    assert victim.read_text() == "precious\n"
