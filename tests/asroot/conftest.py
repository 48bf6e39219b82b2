"""Tests that must run as root: root's side of the shared cache (`stardock images init`, root's
prune over what users planted). `slurm/testbed/testbed test` runs this directory as root; as
anybody else they skip."""
import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="root's side of the shared cache: run as root (slurm/testbed/testbed test)")
        for item in items:
            if "tests/asroot/" in str(item.fspath):
                item.add_marker(skip)
