"""Marks of running containers: what a later job may remove, and what it must leave."""
from __future__ import annotations

import os

from stardock_hpc.jobs import node
from stardock_hpc.jobs.runmarks import Orphan, RunMarks


def test_only_marks_of_dead_wrappers_are_orphans(tmp_path):
    marks = RunMarks(tmp_path, "node 1")
    marks.mark("stardock-7-100", 100, "podman", tmp_path / "stardock-job-7-abc")
    marks.mark("stardock-8-200", 200, "apptainer")
    (marks.dir / "stray").write_text("not a mark\n")
    (marks.dir / ".stardock-9-300.x.part").write_text("300 podman\n")
    (marks.dir / "old-format").write_text("400 podman\n")  # a mark written before temporary dirs were named
    assert marks.orphans(lambda pid: pid in (200, 400)) == [
        Orphan("stardock-7-100", "podman", tmp_path / "stardock-job-7-abc")]
    marks.unmark("stardock-7-100")
    marks.unmark("stardock-7-100")  # twice: two jobs may clean the same orphan
    assert marks.orphans(lambda pid: False) == [Orphan("old-format", "podman", None),
                                                Orphan("stardock-8-200", "apptainer", None)]


def test_no_marks_directory_means_no_orphans(tmp_path):
    assert RunMarks(tmp_path / "never-made", "n").orphans(lambda pid: False) == []


def test_a_dead_wrappers_temporary_directory_goes_and_nothing_else_a_mark_names(tmp_path):
    own = tmp_path / "stardock-job-7-abc"
    (own / "rootfs").mkdir(parents=True)
    (own / "script").write_text("#!/bin/sh\n")
    node.remove_own_tmpdir(own)
    assert not own.exists()
    precious = tmp_path / "data"  # a mark (written by the user, or planted) naming something else
    precious.mkdir()
    node.remove_own_tmpdir(precious)
    target = tmp_path / "stardock-job-elsewhere"
    target.mkdir()
    link = tmp_path / "stardock-job-8-link"
    os.symlink(target, link)  # never through a link
    node.remove_own_tmpdir(link)
    assert precious.exists() and target.exists() and link.is_symlink()


def test_a_temporary_directory_with_read_only_parts_is_removed_whole(tmp_path):
    """The step stand-ins' bin/ is 0500: a plain rmtree left every job's directory on the node."""
    work = tmp_path / "stardock-job-9-x"
    (work / "bin").mkdir(parents=True)
    (work / "bin" / "srun").write_text("#!/bin/sh\n")
    (work / "bin" / "srun").chmod(0o500)
    (work / "bin").chmod(0o500)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("")
    os.symlink(outside, work / "link")
    node.remove_tree(work)
    assert not work.exists() and (outside / "keep").exists()
