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
ENV = {"A": "it's $(id) `x`\nnext", "B": ""}


def test_podman_run_is_rootless_daemonless_and_isolated():
    argv = PodmanEngine().run_argv(ImageRef("podman", "localhost/stardock/x:k"), ["python3", "run.py"],
                                   MOUNTS, ENV, "/data/output", RunOptions(uid=1001, gid=1001))
    assert argv[:3] == ["podman", "run", "--rm"]
    assert "--pull=never" in argv and "--network=none" in argv and "--userns=keep-id" in argv
    assert "--user=1001:1001" in argv and "--init" in argv
    assert "--security-opt=no-new-privileges" in argv
    assert ["--volume", "/srv/archive/m51:/data/archive/m51:ro"] == argv[argv.index("--volume"):][:2]
    assert "/scratch/u/job 1:/data/output:rw" in argv
    assert ["--env", "A"] == argv[argv.index("--env"):][:2]  # its value: from podman's environment
    assert argv[-3:] == ["localhost/stardock/x:k", "python3", "run.py"]


def test_podman_gets_the_containers_values_in_its_environment_not_on_its_command_line():
    """Everybody on the node reads command lines (`ps`); only the user reads a process's environment."""
    env = {**ENV, "SECRET": "s3cr3t", "HOME": "/tmp", "LD_PRELOAD": "/x.so", "http_proxy": "http://p:3128",
           "A*": "podman would read a pattern"}
    engine = PodmanEngine()
    argv = engine.run_argv(ImageRef("podman", "i"), ["true"], [], env, None, RunOptions())
    assert not [a for a in argv if "s3cr3t" in a or "$(id)" in a]
    assert engine.run_environ(env) == {"A": ENV["A"], "SECRET": "s3cr3t"}
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    # what podman itself would read from its environment (its home, the loader, its proxies) stays
    # here, and an empty value (nothing to hide)
    assert envs == ["A", "B=", "SECRET", "HOME=/tmp", "LD_PRELOAD=/x.so", "http_proxy=http://p:3128",
                    "A*=podman would read a pattern"]


def test_podman_passes_the_held_descriptors_and_limits_the_containers_processes():
    argv = PodmanEngine().run_argv(ImageRef("podman", "i"), ["true"], MOUNTS, {}, None,
                                   RunOptions(preserve_fds=3, pids=512))
    assert "--preserve-fds=3" in argv and "--ulimit=nproc=512:512" in argv
    assert PodmanEngine().spawn_rlimits(RunOptions(pids=512)) == {}  # podman and conmon are not limited
    plain = PodmanEngine().run_argv(ImageRef("podman", "i"), ["true"], [], {}, None, RunOptions())
    assert not any(a.startswith(("--preserve-fds", "--ulimit")) for a in plain)


def test_apptainer_sees_only_the_jobs_processes_and_is_limited_on_its_own_process():
    argv = ApptainerEngine().run_argv(ImageRef("apptainer", "/c/x.sif"), ["true"], [], {}, None,
                                      RunOptions(preserve_fds=2, pids=512))
    assert "--pid" in argv[:argv.index("/c/x.sif")]
    assert ApptainerEngine().spawn_rlimits(RunOptions(pids=512)) == {resource.RLIMIT_NPROC: (512, 512)}
    assert ApptainerEngine().spawn_rlimits(RunOptions()) == {}


def test_podman_network_follows_policy():
    argv = PodmanEngine().run_argv(ImageRef("podman", "i"), ["true"], [], {}, None, RunOptions(network=True))
    assert "--network=slirp4netns" in argv and "--network=none" not in argv


def test_apptainer_passes_env_through_env1_not_its_shell():
    argv = ApptainerEngine().run_argv(ImageRef("apptainer", "/c/x.sif"), ["python3", "run.py"],
                                      MOUNTS, ENV, "/data/output", RunOptions())
    assert argv[:3] == ["apptainer", "--silent", "exec"]
    assert "--cleanenv" in argv and "--contain" in argv and "--no-home" in argv
    assert ["--net", "--network=none"] == argv[argv.index("--net"):][:2]
    assert ["--bind", "/srv/archive/m51:/data/archive/m51:ro"] == argv[argv.index("--bind"):][:2]
    assert "/scratch/u/job 1:/data/output:rw" in argv
    assert not any(a.startswith("APPTAINERENV_") for a in argv)
    tail = argv[argv.index("/c/x.sif"):]
    assert tail == ["/c/x.sif", "/usr/bin/env", "A=it's $(id) `x`\nnext", "B=", "python3", "run.py"]


def test_apptainer_default_command_is_the_runscript():
    argv = ApptainerEngine().run_argv(ImageRef("apptainer", "/c/x.sif"), [], [], {}, None, RunOptions())
    assert argv[-2:] == ["/usr/bin/env", RUNSCRIPT]


def test_apptainer_command_with_equals_sign_is_not_taken_for_a_variable():
    argv = ApptainerEngine().run_argv(ImageRef("apptainer", "/c/x.sif"), ["a=b", "x"], [], {}, None, RunOptions())
    assert argv[argv.index("/usr/bin/env") + 1:] == ["/bin/sh", "-c", 'exec "$@"', "sh", "a=b", "x"]


def test_unknown_engine_is_a_usage_error():
    with pytest.raises(UsageError, match="engines: podman, apptainer"):
        get_engine("docker")



def test_podman_runs_a_mounted_squashfs_with_the_images_own_environment_first():
    image = ImageRef("podman", "localhost/stardock/x:k", squashfs="/cache/e/image.sqfs", rootfs="/tmp/j/rootfs",
                     env=("PATH=/opt/bin:/usr/bin", "A=from-image"))
    argv = PodmanEngine().run_argv(image, ["python3", "run.py"], MOUNTS, ENV, "/data/output", RunOptions())
    assert argv[-4:] == ["--rootfs", "/tmp/j/rootfs:O", "python3", "run.py"]
    assert "localhost/stardock/x:k" not in argv  # nothing of the store: the mounted root file system
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    # Podman takes the last of a name: the job's own values win over the image's
    assert envs.index("PATH=/opt/bin:/usr/bin") == 0 and envs.index("A=from-image") < envs.index("A")


def test_podman_runs_a_mounted_squashfs_in_the_namespaces_of_its_mount():
    image = ImageRef("podman", "x", squashfs="/cache/e/image.sqfs", rootfs="/tmp/j/rootfs", holder=4242)
    argv = PodmanEngine().run_argv(image, ["true"], MOUNTS, ENV, None, RunOptions())
    start = argv.index("podman")
    assert argv[:start] == ["nsenter", "--target=4242", "--user", "--mount", "--preserve-credentials", "--", "env",
                            "_CONTAINERS_USERNS_CONFIGURED=done", f"_CONTAINERS_ROOTLESS_UID={os.getuid()}",
                            f"_CONTAINERS_ROOTLESS_GID={os.getgid()}"]
    assert argv[start + 1] == "run" and argv[-3:] == ["--rootfs", "/tmp/j/rootfs:O", "true"]


def test_podman_offers_its_squashfs_run_form_and_falls_back_to_the_archive(tmp_path):
    from stardock_hpc.cache.entries import Entry

    meta = {"engine": "podman", "run_form": "image.sqfs", "image_config": {"Env": ["PATH=/usr/bin"]}}
    entry = Entry("k" * 64, tmp_path / "e", 1001, meta)
    image = PodmanEngine().image_for_entry(entry, "localhost/stardock/x:k")
    assert image.squashfs == str(tmp_path / "e" / "image.sqfs") and image.env == ("PATH=/usr/bin",)
    assert image.rootfs is None  # mounted for each run, by the node (jobs/node.py)
