"""The wrapper's own runtime directory never carries Podman state across a reboot."""
from __future__ import annotations

import time
from pathlib import Path

from stardock_hpc.jobs import node


def boot(tmp_path, monkeypatch, ident):
    boot_id = tmp_path / "boot_id"
    boot_id.write_text(ident + "\n")
    monkeypatch.setattr(node, "BOOT_ID", boot_id)


def test_a_directory_from_an_earlier_boot_is_emptied(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    (runtime / "libpod" / "tmp").mkdir(parents=True)
    (runtime / "libpod" / "tmp" / "pause.pid").write_text("4242\n")
    (runtime / node.BOOT_STAMP).write_text("earlier\n")
    boot(tmp_path, monkeypatch, "this")
    node.forget_earlier_boots(runtime)
    assert sorted(p.name for p in runtime.iterdir()) == sorted([node.BOOT_STAMP, node.LOCK])
    assert (runtime / node.BOOT_STAMP).read_text() == "this\n"


def test_a_directory_without_a_stamp_is_emptied_once(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "alive").write_text("")
    boot(tmp_path, monkeypatch, "this")
    node.forget_earlier_boots(runtime)
    assert not (runtime / "alive").exists()
    (runtime / "alive").write_text("")  # this boot's Podman state
    node.forget_earlier_boots(runtime)
    assert (runtime / "alive").exists(), "state of the current boot must be kept"


def pause_state(runtime, pid=None, marker=True):
    tmp = runtime / "libpod" / "tmp"
    tmp.mkdir(parents=True)
    if marker:
        (tmp / "alive").write_text("")
    if pid is not None:
        (tmp / "pause.pid").write_text(f"{pid}\n")
    return tmp


def test_the_marker_of_a_pause_process_killed_with_its_job_is_forgotten(tmp_path):
    """Slurm kills the pause process with the job that started it; the next job on the node
    must not find Podman's "alive" marker without it ("invalid internal status"), nor a pause.pid
    naming a dead process, or a live one that is no pause process ("cannot re-exec process to join
    the existing user namespace")."""
    import os
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()
    for pid, marker in ((None, True), (dead.pid, True), (dead.pid, False), (os.getpid(), True)):
        runtime = tmp_path / f"rt-{pid}-{marker}"
        tmp = pause_state(runtime, pid, marker)
        node.forget_dead_pause_process(runtime)
        assert not (tmp / "alive").exists() and not (tmp / "pause.pid").exists()


def test_a_live_pause_process_is_left_alone(tmp_path):
    import shutil
    import subprocess
    catatonit = tmp_path / "catatonit"  # a process named as Podman's pause process is
    shutil.copy("/bin/sleep", catatonit)
    pause = subprocess.Popen([str(catatonit), "30"])
    try:
        for _ in range(100):  # the child may still be the forked Python for a moment
            if Path(f"/proc/{pause.pid}/comm").read_text().strip() == "catatonit":
                break
            time.sleep(0.05)
        tmp = pause_state(tmp_path / "rt", pause.pid)
        node.forget_dead_pause_process(tmp_path / "rt")
        assert (tmp / "alive").exists() and (tmp / "pause.pid").exists()
    finally:
        pause.kill()
        pause.wait()
