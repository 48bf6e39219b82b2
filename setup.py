"""stardock-hpc packaging.

definitions/, wrappers/ and the slurm/ job-script skeleton live at the top of the tree (data, not
code) and are shipped inside the package as stardock_hpc/_data/<dir>; stardock_hpc.resources
finds them in either place. The testbed (slurm/testbed/) is a developer tool and is not shipped.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "stardock_hpc" / "__init__.py").read_text()).group(1)

DATA = {
    "stardock_hpc._data.definitions": ("definitions", ["*.yaml", "*.md", "bases/*.yaml"]),
    "stardock_hpc._data.wrappers": ("wrappers", ["*"]),
    "stardock_hpc._data.slurm": ("slurm", ["*.tmpl", "*.md"]),
}

setup(
    name="stardock-hpc",
    version=VERSION,
    description="Ship the software to the data: container environments from one YAML file, "
                "built unprivileged and run as Slurm batch jobs",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.9",
    packages=[*find_packages(include=["stardock_hpc", "stardock_hpc.*"]), *DATA],
    package_dir={"stardock_hpc": "stardock_hpc", **{pkg: src for pkg, (src, _) in DATA.items()}},
    package_data={"stardock_hpc": ["py.typed"], **{pkg: globs for pkg, (_, globs) in DATA.items()}},
    install_requires=["click>=8.0", "PyYAML>=5.4", "spython>=0.3", "requests>=2.25"],
    extras_require={
        # Slurm 22.05 needs pyslurm's 22.5 line, built against libslurm-dev (not on PyPI).
        "pyslurm": ["pyslurm>=22.5,<22.6"],
        "test": ["pytest>=7", "pytest-timeout>=2.1", "jsonschema>=4", "ruff>=0.5", "hypothesis>=6", "mypy>=1.10",
                 "types-PyYAML", "types-requests",
                 # a notebook run through `stardock notebook`'s tunnel, as JupyterLab's kernel protocol
                 "nbclient>=0.10", "nbformat>=5.9", "jupyter_server>=2.14", "pillow>=10"],
    },
    entry_points={"console_scripts": ["stardock = stardock_hpc.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Environment :: Console",
        "Topic :: Scientific/Engineering :: Astronomy",
        "Topic :: System :: Distributed Computing",
    ],
)
