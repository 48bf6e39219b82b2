"""What code in a job's container may ask of the host through Slurm's commands (issue 23, item 2):
srun's options by an allow-list in every spelling getopt_long takes (abbreviations, `=` or the
next word, short bundles, the components of a heterogeneous step), the variables that stand for
them, files resolved in the container's own view, --export and --chdir kept in the container;
scontrol's commands and the other commands' options and variables. Each case is what the host
would run for the request (StepServer._command), or the refusal the job's log shows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stardock_hpc.errors import StardockError, UsageError
from stardock_hpc.jobs import stepview
from stardock_hpc.jobs.launch import Launch
from stardock_hpc.jobs.mounts import VolumeMount
from stardock_hpc.jobs.steps import Step, StepServer, open_streams, task_env
from stardock_hpc.slurm import getopt
from stardock_hpc.slurm.srun import SRUN, components, expand, exported, pattern_problem
from stardock_hpc.slurm.steppolicy import CLIENTS, IN_CONTAINER, PASS, SRUN_OPTIONS

JOB = "4242"
BASELINE = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": JOB, "SLURM_NTASKS": "2", "SLURM_CONF": "/etc/slurm/slurm.conf",
            "SLURM_EXPORT_ENV": "ALL", "HOME": "/home/victim"}


@pytest.fixture
def place(tmp_path):
    for d in ("rpc", "steps", "out", "ro", "rw", "home"):
        (tmp_path / d).mkdir()
    return tmp_path


@pytest.fixture
def server(place, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(BASELINE))
    mounts = [VolumeMount(place / "ro", "", "/data/ref", True), VolumeMount(place / "rw", "", "/data/scratch", False)]
    launch = Launch(engine="podman", entry="/e", artifact="/e/a", key="k" * 64, name="n", tag="t", mounts=mounts,
                    outputs="/o", records="/r", mount_root="/data", network=False, script="#!/bin/sh\n",
                    script_name="s")
    srv = StepServer(place / "rpc", place / "steps", launch, place / "out", JOB, python="/py",
                     wrapper=Path("/w/stardock-node"))
    yield srv
    srv.stop()


def ask(server, *args, env=None, cwd="/data/output"):
    """What the host runs for args asked from the container (whose environment is the job's own
    plus env), the host's environment, and the step files it wrote."""
    made = []
    command = server._command(list(args), {**BASELINE, **(env or {})}, cwd, made)
    return command, [Step.from_json(p.read_text()) for p in made if p.name.endswith(".json")], made


def refused(server, *args, env=None, cwd="/data/output") -> str:
    with pytest.raises(StardockError) as info:
        ask(server, *args, env=env, cwd=cwd)
    assert list((server.steps).iterdir()) == []  # nothing left behind
    return str(info.value)


# --- srun's options ----------------------------------------------------------------------------

def test_every_option_of_srun_is_judged():
    assert set(getopt.long_names(SRUN).values()) == set(SRUN_OPTIONS)


@pytest.mark.parametrize("args, named", [
    (["--prolog=/home/victim/evil", "true"], "--prolog"),
    (["--prolog", "/home/victim/evil", "true"], "--prolog"),
    (["--prol=/x", "true"], "--prolog"),
    (["--epilog=/x", "true"], "--epilog"),
    (["--ep", "/x", "true"], "--epilog"),
    (["--task-prolog=/x", "true"], "--task-prolog"),
    (["--task-e=/x", "true"], "--task-epilog"),
    (["--bcast=/tmp/x", "true"], "--bcast"),
    (["--bcast", "true"], "--bcast"),
    (["--send-libs", "true"], "--send-libs"),
    (["--container=/home/victim/bundle", "true"], "--container"),
    (["--uid=0", "true"], "--uid"),
    (["--gid", "0", "true"], "--gid"),
    (["--x11", "true"], "--x11"),
    (["--bb=stage_in", "true"], "--bb"),
    (["--bbf=/x", "true"], "--bbf"),
    (["--reboot", "true"], "--reboot"),
    (["--no-allocate", "true"], "--no-allocate"),
    (["-Z", "true"], "--no-allocate"),
    (["-lZ", "true"], "--no-allocate"),
    (["-lMother", "true"], "--clusters"),
    (["-M", "other", "true"], "--clusters"),
    (["--cluster=x", "true"], "--cluster"),
    (["--pty", "bash"], "--pty"),
    (["--profile=task", "true"], "--profile"),
    (["--begin=now", "true"], "--begin"),
    (["--mpi=../../home/victim/x", "true"], "--mpi"),
    (["--jobid=1", "true"], "--jobid"),
    (["-n1", "true", ":", "--prolog=/x", "true"], "--prolog"),       # the next component of the step
    (["-n1", "--", "true", ":", "--task-epilog=/x", "true"], "--task-epilog"),
])
def test_options_that_act_outside_the_container_are_refused_in_every_spelling(server, args, named):
    message = refused(server, "srun", *args)
    assert named in message and "is refused: it" in message, message


@pytest.mark.parametrize("args", [["--pro=/x", "true"], ["--ta=/x", "true"], ["-Y", "true"], ["--bogus", "x"]])
def test_what_srun_itself_would_not_read_is_refused_too(server, args):
    with pytest.raises(UsageError):
        ask(server, "srun", *args)


def test_options_that_shape_a_step_pass_as_written(server):
    args = ["-lN2", "-n", "4", "--ntasks-per-node=2", "-c1", "--mem=1G", "--mpi=pmix", "--exact", "--overlap",
            "--distribution=block", "--cpu-bind=cores", "--gres=gpu:1", "-t", "5", "-p", "debug", "--label",
            "--signal=USR1@30", "-K1", "--jobid", JOB, "-w", "node[1-2]", "--exclude=node3", "-v", "-Q", "hostname"]
    command, [step], _ = ask(server, "srun", *args)
    assert command.argv == ["srun", "-l", "-N2", "-n", "4", "--ntasks-per-node=2", "-c1", "--mem=1G", "--mpi=pmix",
                            "--exact", "--overlap", "--distribution=block", "--cpu-bind=cores", "--gres=gpu:1",
                            "-t", "5", "-p", "debug", "--label", "--signal=USR1@30", "-K1", "--jobid", JOB,
                            "-w", "node[1-2]", "--exclude=node3", "-v", "-Q", "/py", "/w/stardock-node", "--task",
                            command.argv[-3], "--", "hostname"]
    assert step.cwd == "/data/output" and step.stdout is None


def test_a_heterogeneous_step_gets_the_wrapper_in_front_of_every_program(server):
    command, steps, [first, second] = ask(server, "srun", "-n1", "prog", "a", ":", "-n2", "--export=NONE", "other")
    assert command.argv == ["srun", "-n1", "/py", "/w/stardock-node", "--task", str(first), "--", "prog", "a", ":",
                            "-n2", "/py", "/w/stardock-node", "--task", str(second), "--", "other"]
    assert "PATH" in steps[0].env and "PATH" not in steps[1].env


# --- files in the container's view ---------------------------------------------------------------

def test_output_and_error_are_opened_by_the_tasks_in_the_containers_view(server):
    command, [step], _ = ask(server, "srun", "--output=out-%t.txt", "-n2", "hostname", cwd="/data/output/sub")
    assert not any(a.startswith(("--output", "-o")) for a in command.argv)
    assert (step.stdout, step.stderr) == ("/data/output/sub/out-%t.txt", "/data/output/sub/out-%t.txt")
    _, [step], _ = ask(server, "srun", "-o", "/data/scratch/o-%j.%2t", "-e", "/data/output/e-%N", "x")
    assert (step.stdout, step.stderr, step.stdin) == ("/data/scratch/o-%j.%2t", "/data/output/e-%N", None)
    _, [step], _ = ask(server, "srun", "-i", "/data/ref/in.txt", "--open-mode=append", "x")
    assert (step.stdin, step.open_mode) == ("/data/ref/in.txt", "append")


@pytest.mark.parametrize("value", ["none", "all", "NONE", "3", "/dev/null"])
def test_srun_io_modes_pass_as_they_are(server, value):
    command, [step], _ = ask(server, "srun", f"--output={value}", "x")
    assert f"--output={value}" in command.argv and step.stdout is None


@pytest.mark.parametrize("args, why", [
    (["--output=/home/victim/x", "true"], "which the node does not see"),
    (["-o", "/tmp/x", "true"], "which the node does not see"),
    (["-o/opt/app/log", "true"], "which the node does not see"),
    (["-lo", "/var/tmp/stardock-testbed/shared/x", "true"], "which the node does not see"),
    (["--out=../../x", "true"], "which the node does not see"),
    (["--error=/data/ref/x", "true"], "read-only volume"),
    (["--error=/data/output", "true"], "the directory /data/output itself"),
    (["--input=/etc/shadow", "true"], "which the node does not see"),
    (["--output=/data/output/%q", "true"], "not one of srun's patterns"),
    (["--output=/data/output/a\\%t", "true"], "backslash"),
    (["--nodefile=/home/victim/nodes", "true"], "which the node does not see"),
    (["-w", "/etc/hosts", "true"], "which the node does not see"),
    (["--exclude=./missing", "true"], "cannot read"),
    (["--multi-prog", "/etc/passwd"], "which the node does not see"),
])
def test_files_outside_the_shared_view_are_refused(server, args, why):
    message = refused(server, "srun", *args)
    assert why in message, message


def test_a_node_list_file_is_read_in_the_view_and_copied(server, place):
    (place / "ro" / "nodes").write_text("node1\nnode2\n")
    command, _steps, made = ask(server, "srun", "-w", "/data/ref/nodes", "-F", "../ref/nodes", "hostname")
    copies = [a.split("=", 1)[1] for a in command.argv if a.startswith(("--nodelist=", "--nodefile="))]
    assert len(copies) == 2 and all(Path(c).read_text() == "node1\nnode2\n" for c in copies)
    assert all(Path(c) in made and Path(c).parent == server.steps for c in copies)


def test_a_link_the_container_planted_is_never_followed(server, place):
    secret = place / "home" / "secret"
    secret.write_text("the victim's key\n")
    (place / "out" / "conf").symlink_to(secret)
    (place / "out" / "dir").symlink_to(place / "home")
    for args in (["--multi-prog", "conf"], ["--multi-prog", "dir/secret"], ["-w", "./conf", "x"]):
        message = refused(server, "srun", *args)
        assert "links are not followed" in message and "victim's key" not in message, message


def test_chdir_is_the_tasks_directory_in_the_container(server):
    command, [step], _ = ask(server, "srun", "--chdir=sub", "pwd", cwd="/data/output")
    assert step.cwd == "/data/output/sub" and not any(a.startswith("--chdir") or a == "-D" for a in command.argv)
    _, [step], _ = ask(server, "srun", "-D", "/opt/app", "pwd")
    assert step.cwd == "/opt/app"
    _, [step], _ = ask(server, "srun", "pwd", env={"SLURM_WORKING_DIR": "/srv"})
    assert step.cwd == "/srv"


# --- the environment -----------------------------------------------------------------------------

def test_export_sets_the_tasks_environment_in_the_container_never_the_hosts(server):
    env = {"FOO": "mine", "LD_PRELOAD": "/data/output/evil.so", "STARDOCK_OUTPUT": "/data/output"}
    command, [step], _ = ask(server, "srun", "--export=ALL,FOO=bar,BAR=baz,PYTHONPATH=/data/output", "true", env=env)
    assert not any(a.startswith("--export") for a in command.argv)
    assert command.env["SLURM_EXPORT_ENV"] == "ALL" and "SRUN_EXPORT_ENV" not in command.env
    for name in ("LD_PRELOAD", "PYTHONPATH", "FOO", "BAR"):
        assert name not in command.env
    assert (step.env["FOO"], step.env["BAR"], step.env["PYTHONPATH"]) == ("mine", "baz", "/data/output")
    _, [step], _ = ask(server, "srun", "--exp=LD_PRELOAD=/x,FOO", "true", env=env)
    assert step.env == {"LD_PRELOAD": "/x", "FOO": "mine", "STARDOCK_OUTPUT": "/data/output",
                        **{k: v for k, v in BASELINE.items() if k.startswith("SLURM_")}}
    command, [step], _ = ask(server, "srun", "true", env={**env, "SRUN_EXPORT_ENV": "NONE"})
    assert "FOO" not in step.env and "PATH" not in step.env and step.env["STARDOCK_OUTPUT"] == "/data/output"
    assert command.env["SLURM_EXPORT_ENV"] == "ALL" and "SRUN_EXPORT_ENV" not in command.env


@pytest.mark.parametrize("value, env, expected", [
    (None, {"A": "1"}, {"A": "1"}),
    ("ALL", {"A": "1"}, {"A": "1"}),
    ("NONE", {"A": "1", "SLURM_X": "2"}, {"SLURM_X": "2"}),
    ("A,B=2", {"A": "1", "C": "3", "SLURM_X": "x"}, {"A": "1", "B": "2", "SLURM_X": "x"}),
    ("ALL,A=9,B=2", {"A": "1"}, {"A": "1", "B": "2"}),
    ('A="x,y",B', {"B": "b"}, {"A": '"x,y"', "B": "b"}),
])
def test_export_reads_as_srun_documents(value, env, expected):
    assert exported(value, env) == expected


def test_only_what_the_container_changed_is_judged_and_only_srun_options_reach_the_host(server):
    env = {"SLURM_NTASKS": "3", "SLURM_MPI_TYPE": "pmix", "PMI_TIME": "500", "SLURM_JWT": "stolen",
           "SLURM_MYTHING": "x", "LD_PRELOAD": "/data/output/x.so", "PYTHONPATH": "/data/output",
           "SLURM_JOB_NODELIST": "node9"}
    command, [step], _ = ask(server, "srun", "true", env=env)
    assert (command.env["SLURM_NTASKS"], command.env["SLURM_MPI_TYPE"], command.env["PMI_TIME"]) == ("3", "pmix", "500")
    for name in ("SLURM_JWT", "SLURM_MYTHING", "LD_PRELOAD", "PYTHONPATH"):
        assert name not in command.env, name
    assert command.env["SLURM_CONF"] == BASELINE["SLURM_CONF"]  # the job's own, unchanged
    assert "SLURM_JOB_NODELIST" not in command.env
    assert step.env["SLURM_MYTHING"] == "x" and step.env["LD_PRELOAD"] == "/data/output/x.so"


@pytest.mark.parametrize("name, value", [
    ("SLURM_CONF", "/data/output/slurm.conf"),
    ("SLURM_CONF_SERVER", "evil:6817"),
    ("SLURM_WORKING_CLUSTER", "evil:10.0.0.1:6817:9728:102"),
    ("SLURM_PROLOG", "/x"), ("SLURM_EPILOG", "/x"), ("SLURM_TASK_PROLOG", "/x"), ("SLURM_TASK_EPILOG", "/x"),
    ("SRUN_PROLOG", "/x"),
    ("SLURM_BCAST", "/x"), ("SRUN_CONTAINER", "/x"), ("SLURM_CONTAINER", "/x"), ("SLURM_CLUSTERS", "other"),
    ("SLURM_BURST_BUFFER", "x"), ("SLURM_PROFILE", "all"),
    ("SLURM_JOB_ID", "1"), ("SLURM_JOBID", "1"),
    ("SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_image", "x"),
    ("SLURM_STDOUTMODE", "/home/victim/x"), ("SLURM_STDERRMODE", "/tmp/e"), ("SLURM_STDINMODE", "/etc/shadow"),
    ("SLURM_HOSTFILE", "/etc/hosts"),
    ("SLURM_MPI_TYPE", "../x"),
])
def test_variables_that_act_outside_the_container_are_refused(server, name, value):
    message = refused(server, "srun", "true", env={name: value})
    assert f"${name}" in message and "is refused" in message, message


def test_io_variables_are_taken_like_their_options(server, place):
    (place / "out" / "hosts").write_text("node1\n")
    command, [step], _ = ask(server, "srun", "true", env={"SLURM_STDOUTMODE": "o-%t", "SLURM_HOSTFILE": "hosts"})
    assert step.stdout == "/data/output/o-%t" and "SLURM_STDOUTMODE" not in command.env
    assert Path(command.env["SLURM_HOSTFILE"]).read_text() == "node1\n"
    _, [step], _ = ask(server, "srun", "-o", "cli", "true", env={"SLURM_STDOUTMODE": "env"})
    assert step.stdout == "/data/output/cli"  # the command line wins, as with srun
    command, [step], _ = ask(server, "srun", "true", env={"SLURM_STDERRMODE": "none"})
    assert "--error=none" in command.argv and step.stderr is None


def test_a_variable_the_job_itself_had_is_not_the_containers(server):
    command, _, _ = ask(server, "srun", "true", env={"SLURM_CONF": BASELINE["SLURM_CONF"]})
    assert command.env["SLURM_CONF"] == BASELINE["SLURM_CONF"]


# --- the other commands --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["show", "job", JOB], ["-o", "show", "job"], ["show", "-d", "jobs"], ["sho", "step"], ["show", "hostnames"],
    ["show", "hostnames", "node[1-3]"], ["SHOW", "Partition"], ["show", "job=4242"], ["listpids"],
    ["hold", JOB], ["release", JOB], ["requeue", JOB], ["notify", JOB, "hi"], ["-h"], ["--version"],
    ["update", f"JobId={JOB}", "TimeLimit=5"], ["update", f"job={JOB}", "comment=x", "Partition=debug"],
    ["update", "StepId=1.0", "TimeLimit=3"],
    ["wait_job", JOB], ["ping"], ["version"], ["errnumstr", "2001"],
])
def test_scontrol_reads_facts_and_acts_on_jobs(server, args):
    command, _, _ = ask(server, "scontrol", *args)
    assert command.argv == ["scontrol", *args] and command.cwd == server.quiet_dir


@pytest.mark.parametrize("args, why", [
    (["write", "batch_script", JOB, "/home/victim/x"], "writes files"),
    (["WRITE", "config"], "writes files"),
    (["wri", "batch_script", JOB], "it could be 'write'"),
    (["-o", "write", "batch_script", JOB], "writes files"),
    (["token"], "token (JWT)"),
    (["tok", "lifespan=99999"], "token (JWT)"),
    ([], "standard input"),
    (["-o"], "standard input"),
    (["-u", "0", "show", "job"], "another user"),
    (["--ui=0", "show", "job"], "another user"),
    (["sh", "job"], "it could be 'shutdown'"),
    (["reconfigure"], "administrator"),
    (["create", "res", "x"], "administrator"),
    (["quit"], "interactive mode"),
    (["show", "hostlist", "/home/victim/.ssh/id_rsa"], "file"),
    (["show", "hostlistsorted=/etc/shadow"], "file"),
    (["show", "bbstat", "a"], "dwstat"),
    (["show", "dw"], "dwstat"),
    (["update", f"JobId={JOB}", "StdOut=/home/victim/x"], "host path"),
    (["update", f"JobId={JOB}", "std=/x"], "could be"),
    (["update", f"JobId={JOB}", "WorkDir=/home/victim"], "host path"),
    (["update", f"JobId={JOB}", "BurstBuffer=x"], "burst buffer"),
    (["update", "NodeName=node1", "State=DOWN"], "not a field"),
    (["update", "PartitionName=debug", "MaxTime=1"], "not a field"),
    (["update", f"JobId={JOB}", "NodeName=node1"], "not a field"),
    (["update", "ReservationName=r", "Partition=debug"], "only jobs"),
    (["update", f"JobId={JOB}", "Bogus=1"], "not a field"),
])
def test_scontrol_refuses_what_writes_files_mints_tokens_administers_or_reads_stdin(server, args, why):
    message = refused(server, "scontrol", *args)
    assert why in message and "is refused" in message, message


def test_the_other_commands_take_their_options_and_their_own_variables(server):
    command, _, _ = ask(server, "squeue", "-h", "-j", JOB, "-o", "%i", env={
        "SQUEUE_FORMAT": "%i %t", "LD_PRELOAD": "/data/output/x.so", "SLURM_MYTHING": "x"})
    assert command.argv == ["squeue", "-h", "-j", JOB, "-o", "%i"] and command.env["SQUEUE_FORMAT"] == "%i %t"
    assert "LD_PRELOAD" not in command.env and "SLURM_MYTHING" not in command.env
    for args in (["sacct", "-X", "-j", JOB], ["sinfo", "-N"], ["sstat", "-j", f"{JOB}.0"], ["scancel", JOB]):
        assert ask(server, *args)[0].argv == args
    assert "SACCT_FORMAT" in ask(server, "sacct", env={"SACCT_FORMAT": "JobID"})[0].env


@pytest.mark.parametrize("command, args, why", [
    ("sacct", ["-f", "/var/log/slurm/jobcomp"], "file of the node"),
    ("sacct", ["--fil=/x"], "file of the node"),
    ("sacct", ["-Xf/x"], "file of the node"),
    ("sacct", ["--env-vars", "-j", "1"], "credentials"),
    ("sacct", ["-Bj", "1"], "credentials"),
    ("sacct", ["--batch", "-j", "1"], "credentials"),
    ("squeue", [], "another configuration"),
    ("sinfo", [], "another configuration"),
    ("scancel", [JOB], "another configuration"),
])
def test_the_other_commands_refuse_host_files_and_another_configuration(server, command, args, why):
    env = {"SLURM_CONF": "/data/output/slurm.conf"} if "configuration" in why else None
    message = refused(server, command, *args, env=env)
    assert why in message, message


def test_every_option_of_the_other_commands_is_in_their_table():
    for name, client in CLIENTS.items():
        assert set(client.refused) <= set(getopt.long_names(client.table).values()), name


# --- the parsing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, parsed, program", [
    ("-lN2 prog", [("label", None), ("nodes", "2")], ["prog"]),
    ("-kx prog", [("no-kill", "x")], ["prog"]),                    # -k takes an optional value
    ("-K prog", [("kill-on-bad-exit", None)], ["prog"]),
    ("--exclusive user", [("exclusive", None)], ["user"]),         # an optional value only with '='
    ("--overlap prog", [("overlap", None)], ["prog"]),
    ("--cpu_bind=none x", [("cpu-bind", "none")], ["x"]),          # aliases
    ("--pack-group=1 x", [("het-group", "1")], ["x"]),
    ("--tasks-per-node 2 x", [("ntasks-per-node", "2")], ["x"]),
    ("--bb=x prog", [("bb", "x")], ["prog"]),                      # an exact name wins over --bbf
    ("-o -x prog", [("output", "-x")], ["prog"]),                  # a required value is the next word
    ("-o : prog", [("output", ":")], ["prog"]),
    ("-F/x -r1 -b now prog", [("nodefile", "/x"), ("relative", "1"), ("begin", "now")], ["prog"]),
])
def test_srun_options_are_read_as_srun_reads_them(args, parsed, program):
    [component] = components(args.split())
    assert [(o.name, o.value) for o in component.options] == parsed and component.program == program


@pytest.mark.parametrize("pattern, problem", [
    ("out-%t.txt", None), ("%%j-%5j-%A_%a-%J-%N-%n-%s-%u-%x", None), ("%q", "%q"), ("x%", "%"), ("a\\b", "backslash"),
])
def test_filename_patterns(pattern, problem):
    found = pattern_problem(pattern)
    assert (found is None) if problem is None else (problem in found)


def test_patterns_expand_as_srun_does():
    values = {"A": "128", "a": "3", "J": "128.0", "j": "128", "N": "node1", "n": "0", "s": "0", "t": "5", "u": "me",
              "x": "name"}
    assert expand("job%4j-%2t-%N-%%-%3N.out", values) == "job0128-05-node1-%-node1.out"


# --- the tasks' side ---------------------------------------------------------------------------------

def _step(place, **streams) -> Step:
    launch = Launch(engine="podman", entry="/e", artifact="/e/a", key="k" * 64, name="n", tag="t",
                    mounts=[VolumeMount(place / "ro", "", "/data/ref", True)], outputs="/o", records="/r",
                    mount_root="/data", network=False, script="", script_name="s")
    return Step(launch, {}, "/data/output", str(place / "out"), JOB, **streams)


TASK = {"SLURM_JOB_ID": JOB, "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0",
        "SLURMD_NODENAME": "node1"}


def test_a_task_opens_its_files_in_the_view(place):
    places = stepview.view(_step(place).launch, str(place / "out"))
    fd = stepview.open_task_file(places, "/data/output/o-%j-%t-%N.txt", TASK, True, True)
    os.write(fd, b"hello\n")
    os.close(fd)
    assert (place / "out" / f"o-{JOB}-1-node1.txt").read_text() == "hello\n"
    assert oct(os.stat(place / "out" / f"o-{JOB}-1-node1.txt").st_mode & 0o777) == "0o600"
    (place / "ro" / "in").write_text("data")
    fd = stepview.open_task_file(places, "/data/ref/in", TASK, False, False)
    assert os.read(fd, 10) == b"data"
    os.close(fd)
    with pytest.raises(StardockError):
        stepview.open_task_file(places, "/data/ref/out", TASK, True, True)


@pytest.mark.parametrize("plant", ["file", "dir", "fifo", "name"])
def test_a_task_never_follows_what_the_container_planted(place, plant):
    victim = place / "home" / ".bashrc"
    victim.write_text("precious\n")
    pattern = "/data/output/out.txt"
    if plant == "file":
        (place / "out" / "out.txt").symlink_to(victim)
    elif plant == "dir":
        (place / "out" / "d").symlink_to(place / "home")
        pattern = "/data/output/d/.bashrc"
    elif plant == "fifo":
        os.mkfifo(place / "out" / "out.txt")
    else:
        pattern = "/data/output/%x"
    places = stepview.view(_step(place).launch, str(place / "out"))
    with pytest.raises(StardockError):
        stepview.open_task_file(places, pattern, {**TASK, "SLURM_JOB_NAME": "../home/.bashrc"}, True, True)
    assert victim.read_text() == "precious\n"


def test_open_streams_sends_errors_to_the_output_file_unless_told(place, monkeypatch):
    dup = []
    monkeypatch.setattr(os, "dup2", lambda fd, to: dup.append((os.readlink(f"/proc/self/fd/{fd}"), to)))
    open_streams(_step(place, stdout="/data/output/o-%t", stderr="/data/output/o-%t"), TASK)
    assert dup == [(str(place / "out" / "o-1"), 1), (str(place / "out" / "o-1"), 2)]


@pytest.mark.parametrize("pattern, environ, truncates", [
    ("/o/x-%t", {"SLURM_PROCID": "3"}, True),
    ("/o/x", {"SLURM_PROCID": "0"}, True),
    ("/o/x", {"SLURM_PROCID": "1"}, False),
    ("/o/x-%N", {"SLURM_PROCID": "4", "SLURM_LOCALID": "0"}, True),
    ("/o/x-%n", {"SLURM_PROCID": "4", "SLURM_LOCALID": "1"}, False),
])
def test_each_file_is_emptied_once_by_its_first_task(pattern, environ, truncates):
    assert stepview.truncates(pattern, environ, None) is truncates
    assert stepview.truncates(pattern, environ, "append") is False


def test_task_env_keeps_a_slurm_variable_only_the_script_set():
    env = task_env({"SLURM_MYTHING": "x", "SLURM_PROCID": "0", "PMI_RANK": "9"}, {"SLURM_PROCID": "2"})
    assert env == {"SLURM_MYTHING": "x", "SLURM_PROCID": "2"}


def test_every_in_container_option_is_handled():
    assert {n for n, v in SRUN_OPTIONS.items() if v == IN_CONTAINER} == {
        "chdir", "error", "exclude", "export", "input", "jobid", "multi-prog", "nodefile", "nodelist", "open-mode",
        "output"}
    assert PASS in SRUN_OPTIONS.values()


def test_a_tasks_streams_land_in_its_files(place):
    """The wrapper's own standard streams become the files (what the container then inherits)."""
    step = _step(place, stdout="/data/output/o-%t", stderr="/data/output/o-%t")
    (place / "out" / "o-1").write_text("stale\n")
    code = ("import json, os, sys; from stardock_hpc.jobs.steps import Step, open_streams; "
            "open_streams(Step.from_json(sys.argv[1]), json.loads(sys.argv[2])); "
            "os.write(1, b'out\\n'); os.write(2, b'err\\n')")
    proc = subprocess.run([sys.executable, "-c", code, step.to_json(), json.dumps({**TASK, "SLURM_PROCID": "1"})],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0 and proc.stdout == proc.stderr == "", proc.stderr
    assert (place / "out" / "o-1").read_text() == "out\nerr\n"  # emptied first: the file is this task's own
