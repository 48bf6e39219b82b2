"""run_argv is pure: the difference between the engines' command lines is tested without them."""
from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from stardock_hpc.engines import ApptainerEngine, get_engine
from stardock_hpc.engines.apptainer import RUNSCRIPT
from stardock_hpc.engines.base import ImageRef, Mount, RunOptions
from stardock_hpc.engines.podman import PodmanEngine
from stardock_hpc.errors import UsageError

MOUNTS = [Mount(Path("/srv/archive/m51"), "/data/archive/m51", readonly=True),
          Mount(Path("/scratch/u/job 1"), "/data/output", readonly=False)]


def test_podman_run_is_rootless_daemonless_and_isolated():
    argv = PodmanEngine().run_argv(ImageRef("podman", "localhost/stardock/x:k"), ["python3", "run.py"],
                                   MOUNTS, "/data/output", RunOptions(uid=1001, gid=1001))
    assert argv[:3] == ["podman", "run", "--rm"]
    assert "--pull=never" in argv and "--network=none" in argv and "--userns=keep-id" in argv
    assert "--user=1001:1001" in argv and "--init" in argv
    assert "--security-opt=no-new-privileges" in argv
    assert ["--volume", "/srv/archive/m51:/data/archive/m51:ro"] == argv[argv.index("--volume"):][:2]
    assert "/scratch/u/job 1:/data/output:rw" in argv
    assert argv[-3:] == ["localhost/stardock/x:k", "python3", "run.py"]


def test_no_engine_puts_a_variable_of_the_container_on_its_command_line():
    """Everybody on the node reads every command line (`ps`): the container's variables reach it by
    descriptor (jobs/binds.py). Podman would copy its own proxies (the login session's, with their
    passwords) into the container; Apptainer its whole environment without --cleanenv."""
    image = ImageRef("podman", "i", squashfs="/c/image.sqfs", rootfs="/tmp/r", env=("IMAGE_TOKEN=s3cr3t",))
    podman = PodmanEngine().run_argv(image, ["true"], MOUNTS, None, RunOptions())
    assert "--http-proxy=false" in podman
    assert not [a for a in podman if a.startswith(("--env", "-e")) or "s3cr3t" in a]
    apptainer = ApptainerEngine().run_argv(ImageRef("apptainer", "/c/x.sif"), ["true"], MOUNTS, None, RunOptions())
    assert "--cleanenv" in apptainer
    assert not [a for a in apptainer
                if a.startswith(("--env", "APPTAINERENV_", "SINGULARITYENV_")) or a == "/usr/bin/env"]


def test_podman_passes_the_held_descriptors_and_limits_the_containers_processes():
    argv = PodmanEngine().run_argv(ImageRef("podman", "i"), ["true"], MOUNTS, None,
                                   RunOptions(preserve_fds=3, pids=512))
    assert "--preserve-fds=3" in argv and "--ulimit=nproc=512:512" in argv
    assert PodmanEngine().spawn_rlimits(RunOptions(pids=512)) == {}  # podman and conmon are not limited
    plain = PodmanEngine().run_argv(ImageRef("podman", "i"), ["true"], [], None, RunOptions())
    assert not any(a.startswith(("--preserve-fds", "--ulimit")) for a in plain)


def test_apptainer_sees_only_the_jobs_processes_and_is_limited_on_its_own_process():
    argv = ApptainerEngine().run_argv(ImageRef("apptainer", "/c/x.sif"), ["true"], [], None,
                                      RunOptions(preserve_fds=2, pids=512))
    assert "--pid" in argv[:argv.index("/c/x.sif")]
    assert ApptainerEngine().spawn_rlimits(RunOptions(pids=512)) == {resource.RLIMIT_NPROC: (512, 512)}
    assert ApptainerEngine().spawn_rlimits(RunOptions()) == {}


def test_podman_network_follows_policy():
    argv = PodmanEngine().run_argv(ImageRef("podman", "i"), ["true"], [], None, RunOptions(network=True))
    assert "--network=slirp4netns" in argv and "--network=none" not in argv


def test_apptainer_runs_the_command_as_given_with_a_clean_environment():
    argv = ApptainerEngine().run_argv(ImageRef("apptainer", "/c/x.sif"), ["python3", "run.py"],
                                      MOUNTS, "/data/output", RunOptions())
    assert argv[:3] == ["apptainer", "--silent", "exec"]
    assert "--cleanenv" in argv and "--contain" in argv and "--no-home" in argv
    assert ["--net", "--network=none"] == argv[argv.index("--net"):][:2]
    assert ["--bind", "/srv/archive/m51:/data/archive/m51:ro"] == argv[argv.index("--bind"):][:2]
    assert "/scratch/u/job 1:/data/output:rw" in argv
    assert argv[argv.index("/c/x.sif"):] == ["/c/x.sif", "python3", "run.py"]


def test_apptainer_default_command_is_the_runscript():
    argv = ApptainerEngine().run_argv(ImageRef("apptainer", "/c/x.sif"), [], [], None, RunOptions())
    assert argv[-2:] == ["/c/x.sif", RUNSCRIPT]
    odd = ApptainerEngine().run_argv(ImageRef("apptainer", "/c/x.sif"), ["a=b", "x"], [], None, RunOptions())
    assert odd[-3:] == ["/c/x.sif", "a=b", "x"]  # a program, whatever its name


def test_unknown_engine_is_a_usage_error():
    with pytest.raises(UsageError, match="engines: podman, apptainer"):
        get_engine("docker")



def test_podman_runs_a_mounted_squashfs_without_its_store():
    image = ImageRef("podman", "localhost/stardock/x:k", squashfs="/cache/e/image.sqfs", rootfs="/tmp/j/rootfs",
                     env=("PATH=/opt/bin:/usr/bin", "A=from-image"))
    argv = PodmanEngine().run_argv(image, ["python3", "run.py"], MOUNTS, "/data/output", RunOptions())
    assert argv[-4:] == ["--rootfs", "/tmp/j/rootfs:O", "python3", "run.py"]
    assert "localhost/stardock/x:k" not in argv  # nothing of the store: the mounted root file system
    assert not [a for a in argv if "from-image" in a]  # the image's variables go with the job's (binds.py)


def test_podman_runs_a_mounted_squashfs_in_the_namespaces_of_its_mount(monkeypatch):
    """The mount is in the namespaces of the process that made it (engines/podman_userns.py):
    the run enters them through that process's own descriptors, never another process's."""
    from stardock_hpc.engines import podman_userns

    monkeypatch.setattr(podman_userns, "_held", (7, 9))
    image = ImageRef("podman", "x", squashfs="/cache/e/image.sqfs", rootfs="/tmp/j/rootfs")
    argv = PodmanEngine().run_argv(image, ["true"], MOUNTS, None, RunOptions())
    start = argv.index("podman")
    me = os.getpid()
    assert argv[:start] == ["nsenter", f"--user=/proc/{me}/fd/7", f"--mount=/proc/{me}/fd/9",
                            "--preserve-credentials", "--", "env", "_CONTAINERS_USERNS_CONFIGURED=done",
                            f"_CONTAINERS_ROOTLESS_UID={os.getuid()}", f"_CONTAINERS_ROOTLESS_GID={os.getgid()}"]
    assert argv[start + 1] == "run" and argv[-3:] == ["--rootfs", "/tmp/j/rootfs:O", "true"]


def test_podman_offers_its_squashfs_run_form_and_falls_back_to_the_archive(tmp_path):
    from stardock_hpc.cache.entries import Entry

    meta = {"engine": "podman", "run_form": "image.sqfs", "image_config": {"Env": ["PATH=/usr/bin"]}}
    entry = Entry("k" * 64, tmp_path / "e", 1001, meta)
    image = PodmanEngine().image_for_entry(entry, "localhost/stardock/x:k")
    assert image.squashfs == str(tmp_path / "e" / "image.sqfs") and image.env == ("PATH=/usr/bin",)
    assert image.rootfs is None  # mounted for each run, by the node (jobs/node.py)
