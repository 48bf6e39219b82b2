"""Install what the testbed needs from Debian, skipping what is present.

Apptainer is not in bookworm; sid's package needs a newer glibc. We unpack sid's apptainer and
libc6 (never dpkg -i them), keep sid's glibc in a private directory and point apptainer's two
binaries at it with patchelf. This is a testbed-only workaround (see TESTBED.md).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tbcommon import STATE, TestbedError, run, say

APT_PACKAGES = [
    # Slurm 22.05 with accounting and REST
    "slurm-wlm", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "slurmrestd",
    "slurm-wlm-jwt-plugin", "libslurm-dev", "munge", "mariadb-server",
    # rootless Podman
    "podman", "runc", "uidmap", "slirp4netns", "fuse-overlayfs", "catatonit",
    # Apptainer's runtime dependencies from bookworm
    "squashfs-tools", "squashfuse", "fuse2fs", "containernetworking-plugins", "patchelf",
    # base images and the test user's Python
    "debootstrap", "zstd", "python3-venv", "python3-pip", "ca-certificates", "sudo",
    # the compute nodes (network namespaces, veth pairs, a bridge)
    "iproute2",
    # Slurm's mpi/pmix plugin opens libpmix.so (the -dev package's link); bare MPI on the nodes
    # for the benches' baselines (the same Debian OpenMPI the catalog's openmpi app installs)
    "libpmix-dev", "openmpi-bin", "libopenmpi-dev", "python3-mpi4py",
    # a scientist's own C program built on the login node (tests/integration/test_deps.py)
    "gcc", "libc6-dev", "libcfitsio-dev", "wcslib-dev",
    # a scientist's browser on JupyterLab through the notebook's tunnel (tests/integration/test_notebook.py)
    "chromium", "fonts-dejavu-core",
    # the login node's sshd and the user's ssh: the notebook's tunnel, as printed (tbssh.py)
    "openssh-server", "openssh-client",
]

APPTAINER_GLIBC = Path("/opt/stardock-testbed-glibc")  # sid's glibc, for apptainer only
APPTAINER_LIBDIR = "usr/lib/x86_64-linux-gnu/apptainer"


def missing_packages(packages: list[str]) -> list[str]:
    proc = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
               check=False, capture=True)
    installed = {line.split()[0] for line in proc.stdout.splitlines()
                 if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def install_apt() -> bool:
    missing = missing_packages(APT_PACKAGES)
    if not missing:
        return False
    say(f"installing from Debian: {' '.join(missing)}")
    # Debian's maintainer scripts would start system-wide munge/mariadb/slurm services; the
    # testbed runs its own instances, so forbid service starts during the install.
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\n# stardock testbed: no service starts during install\nexit 101\n")
        policy.chmod(0o755)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "update", "-q"], env=env)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    still = missing_packages(APT_PACKAGES)
    if still:
        raise TestbedError(f"apt-get did not install: {' '.join(still)}")
    return True


def apptainer_works() -> bool:
    if not shutil.which("apptainer"):
        return False
    return run(["apptainer", "--version"], check=False, capture=True).returncode == 0


def install_apptainer() -> bool:
    if apptainer_works():
        return False
    say("installing apptainer from Debian sid (unpacked, with a private glibc)")
    work = STATE / "apt-sid"
    for sub in ("lists/partial", "archives/partial", "etc"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    sources = work / "etc" / "sources.list"
    sources.write_text("deb http://deb.debian.org/debian sid main\n")
    opts = [
        "-o", f"Dir::Etc::sourcelist={sources}",
        "-o", "Dir::Etc::sourceparts=-",
        "-o", f"Dir::State::Lists={work / 'lists'}",
        "-o", f"Dir::Cache::Archives={work / 'archives'}",
        "-o", "APT::Get::List-Cleanup=0",
    ]
    run(["apt-get", *opts, "update", "-q"])
    with tempfile.TemporaryDirectory(prefix="apptainer-", dir=STATE) as tmp:
        tmpdir = Path(tmp)
        os.chmod(tmpdir, 0o755)  # apt's download sandbox user must be able to write here
        run(["chown", "_apt", str(tmpdir)], check=False)
        run(["apt-get", *opts, "download", "apptainer", "libc6"], cwd=tmpdir)
        debs = {p.name.split("_")[0]: p for p in tmpdir.glob("*.deb")}
        if set(debs) != {"apptainer", "libc6"}:
            raise TestbedError(f"expected apptainer and libc6 .debs from sid, got {sorted(debs)}")
        pkg, libc = tmpdir / "apptainer", tmpdir / "libc6"
        run(["dpkg-deb", "-x", debs["apptainer"], pkg])
        run(["dpkg-deb", "-x", debs["libc6"], libc])
        # sid's glibc into a private directory (never over the system's)
        if APPTAINER_GLIBC.exists():
            shutil.rmtree(APPTAINER_GLIBC)
        shutil.copytree(libc / "usr/lib/x86_64-linux-gnu", APPTAINER_GLIBC, symlinks=True)
        # apptainer's files to their usual places
        for rel in ("usr/bin/apptainer", APPTAINER_LIBDIR, "etc/apptainer", "var/lib/apptainer",
                    "usr/libexec/apptainer", "usr/share/apptainer"):
            src = pkg / rel
            if not src.exists():
                continue
            dest = Path("/") / rel
            if src.is_dir():
                shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
    interp = APPTAINER_GLIBC / "ld-linux-x86-64.so.2"
    if not interp.exists():
        raise TestbedError(f"sid's libc6 has no {interp.name}")
    for binary in (Path("/usr/bin/apptainer"), Path("/") / APPTAINER_LIBDIR / "bin" / "starter"):
        run(["patchelf", "--set-interpreter", interp,
             "--set-rpath", f"{APPTAINER_GLIBC}:/lib/x86_64-linux-gnu", binary])
    if not apptainer_works():
        raise TestbedError("apptainer was unpacked but `apptainer --version` fails")
    return True


def install() -> bool:
    STATE.mkdir(parents=True, exist_ok=True)
    os.chmod(STATE, 0o755)
    changed = install_apt()
    changed |= install_apptainer()
    return changed
