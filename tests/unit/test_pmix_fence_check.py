"""stardock doctor on Slurm's PMIx fences: only the ring collective is a barrier on every step (the
tree completes on each node alone when TreeWidth exceeds the step's node count; the testbed proves
the consequence in tests/integration/test_steps.py::test_a_pmix_fence_holds_every_rank_until_the_last_enters)."""
from __future__ import annotations

from stardock_hpc.diagnostics import pmix_fence_check


def test_the_ring_collective_is_ok():
    status, name, detail = pmix_fence_check("ring", "50")
    assert (status, name) == ("ok", "PMIx fences") and "barrier" in detail


def test_the_default_and_the_tree_are_warned_about_with_the_fix():
    for fence, shown in (("(null)", "unset (mixed)"), ("", "unset (mixed)"), ("mixed", "mixed"), ("tree", "tree")):
        status, _name, detail = pmix_fence_check(fence, "50")
        assert status == "warn", fence
        assert f"PMIxCollFence is {shown}:" in detail and "TreeWidth (50)" in detail, detail
        assert "set PMIxCollFence=ring in mpi.conf" in detail, detail
