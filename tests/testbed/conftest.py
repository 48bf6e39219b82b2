"""Tests of the testbed itself: they start and stop daemons, so they run as root.

`slurm/testbed/testbed test` runs this directory as root before the rest as the test user.
"""
import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="testbed self-tests start and stop daemons: root only")
        for item in items:
            if "tests/testbed/" in str(item.fspath):
                item.add_marker(skip)
