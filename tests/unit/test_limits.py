"""The site's policy limits for container jobs, checked before submission."""
from __future__ import annotations

import pytest

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.limits import check_limits, mem_mb, minutes
from stardock_hpc.site import Limits
from stardock_hpc.slurm.options import parse_options


@pytest.mark.parametrize("text, mb", [("500", 500), ("500M", 500), ("4G", 4096), ("1T", 1048576), ("2048K", 2)])
def test_memory_sizes(text, mb):
    assert mem_mb(text) == mb


@pytest.mark.parametrize("text, mins", [("30", 30), ("30:30", 30.5), ("2:00:00", 120), ("1-12", 2160),
                                        ("1-00:30", 1470), ("1-00:00:30", 1440.5), ("UNLIMITED", float("inf"))])
def test_time_limits(text, mins):
    assert minutes(text) == mins


LIMITS = Limits(mem="8G", cpus=4, time="1-00:00:00")


def opts(*tokens):
    return parse_options(list(tokens), "test")


def test_within_limits_passes_and_the_last_option_counts():
    check_limits(opts("--mem=16G", "--mem=8G", "-c", "4", "--time=24:00:00"), LIMITS, "site.yaml")
    check_limits(opts("--mem-per-cpu=2G", "-c", "4"), LIMITS, "site.yaml")


@pytest.mark.parametrize("tokens, message", [
    (("--mem=9G",), "--mem=9G is more memory than this site allows for container jobs (8G, policy.limits.mem"),
    (("--mem-per-cpu=3G", "-c", "3"), "--mem-per-cpu=3G x 3 is more memory"),
    (("-c", "5"), "--cpus-per-task=5 is more than this site allows"),
    (("--time=1-00:01",), "--time=1-00:01 is longer than this site allows"),
    (("--time=UNLIMITED",), "is longer than"),
])
def test_beyond_limits_is_refused_with_the_option_and_the_limit(tokens, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("+", r"\+")):
        check_limits(opts(*tokens), LIMITS, "site.yaml")
