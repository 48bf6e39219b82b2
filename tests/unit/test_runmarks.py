"""Marks of running containers: what a later job may remove, and what it must leave."""
from __future__ import annotations

from stardock_hpc.jobs.runmarks import RunMarks


def test_only_marks_of_dead_wrappers_are_orphans(tmp_path):
    marks = RunMarks(tmp_path, "node 1")
    marks.mark("stardock-7-100", 100, "podman")
    marks.mark("stardock-8-200", 200, "apptainer")
    (marks.dir / "stray").write_text("not a mark\n")
    (marks.dir / ".stardock-9-300.x.part").write_text("300 podman\n")
    assert marks.orphans(lambda pid: pid == 200) == [("stardock-7-100", "podman")]
    marks.unmark("stardock-7-100")
    marks.unmark("stardock-7-100")  # twice: two jobs may clean the same orphan
    assert marks.orphans(lambda pid: False) == [("stardock-8-200", "apptainer")]


def test_no_marks_directory_means_no_orphans(tmp_path):
    assert RunMarks(tmp_path / "never-made", "n").orphans(lambda pid: False) == []
