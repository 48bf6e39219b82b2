"""The wrapper's own runtime directory never carries Podman state across a reboot."""
from __future__ import annotations

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
