"""The option tables stardock judges Slurm's commands by (slurm/srun.py, slurm/steppolicy.py) are
the installed binaries' own, and stardock reads a command line exactly as srun's getopt_long does:
a token read as a value here but as an option by srun would pass unjudged (issue 23, item 2).

A small LD_PRELOAD library prints what each command hands getopt_long (its optstring and long
options) and every option getopt_long then returns; srun runs against a copy of the cluster's
configuration whose controller cannot be reached, so nothing is ever submitted."""
from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from clitools import remove, shared_dir

from stardock_hpc.errors import UsageError
from stardock_hpc.slurm import getopt
from stardock_hpc.slurm.srun import SRUN
from stardock_hpc.slurm.steppolicy import CLIENTS

pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc for the LD_PRELOAD shim")]
SHIM = r"""#define _GNU_SOURCE
#include <dlfcn.h>
#include <getopt.h>
#include <stdio.h>
typedef int (*real_t)(int, char *const[], const char *, const struct option *, int *);
static char *const *seen;
int getopt_long(int argc, char *const argv[], const char *optstring, const struct option *longopts, int *index) {
    if (!seen) {
        fprintf(stderr, "TABLE %s\n", optstring);
        for (const struct option *o = longopts; o && o->name; o++)
            fprintf(stderr, "LONG %s %d %d\n", o->name, o->has_arg, o->val);
    }
    if (argv != seen) { seen = argv; fprintf(stderr, "PARSE\n"); }
    int r = ((real_t)dlsym(RTLD_NEXT, "getopt_long"))(argc, argv, optstring, longopts, index);
    if (r == -1) fprintf(stderr, "END %d\n", optind);
    else if (r == '?' || r == ':') fprintf(stderr, "ERROR\n");
    else fprintf(stderr, "OPT %d %s\n", r, optarg ? optarg : "<none>");
    return r;
}
"""


@pytest.fixture(scope="module")
def shim():
    work = shared_dir("stardock-getopt-")
    (work / "shim.c").write_text(SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(work / "shim.so"), str(work / "shim.c"), "-ldl"], check=True)
    conf = Path(os.environ["SLURM_CONF"]).read_text()
    conf = re.sub(r"(?m)^SlurmctldHost=.*$", "SlurmctldHost=nowhere(127.0.0.1)", conf)
    conf = re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=9", conf)
    (work / "slurm.conf").write_text(conf)
    yield work
    remove(work)


def traced(shim: Path, command: str, args: list) -> str:
    env = {"PATH": os.environ["PATH"], "SLURM_CONF": str(shim / "slurm.conf"), "LD_PRELOAD": str(shim / "shim.so")}
    try:
        return subprocess.run([command, *args], env=env, capture_output=True, text=True, timeout=5,
                              stdin=subprocess.DEVNULL).stderr
    except subprocess.TimeoutExpired as exc:  # a command that keeps retrying the controller
        out = exc.stderr or b""
        return out.decode() if isinstance(out, bytes) else out


@pytest.mark.parametrize("table", [SRUN, *(c.table for c in CLIENTS.values())], ids=lambda t: t.command)
def test_the_tables_are_the_binaries_own(shim, table):
    lines = traced(shim, table.command, ["--version"]).splitlines()
    assert f"TABLE {table.optstring}" in lines
    longs = [tuple(line.split()[1:]) for line in lines if line.startswith("LONG ")]
    assert [(n, int(a), int(v)) for n, a, v in longs] == list(table.longs)


def first_parse(trace: str):
    """What the command's first getopt_long pass read: options (val, value), and where it ended."""
    opts, end = [], None
    started = False
    for line in trace.splitlines():
        if line == "PARSE":
            if started:
                break
            started = True
        elif line.startswith("OPT "):
            _opt, val, value = line.split(" ", 2)
            opts.append((int(val), None if value == "<none>" else value))
        elif line.startswith("END "):
            end = int(line.split()[1]) - 1  # argv[0] counted
            break
        elif line == "ERROR":
            return None, "error"
    return opts, end


def val_of(table: getopt.Table, name: str) -> int:
    return next((v for n, _a, v in table.longs if n == name), ord(name[0]))


def test_srun_command_lines_are_read_as_srun_reads_them(shim):
    """Random command lines of srun's spellings (abbreviations, bundles, '=' or the next word,
    '--', values that look like options): stardock's reading and srun's agree on every one."""
    words = ["prog", "x", "-", "--", ":", "-x", "=", "2", "a=b", "--=x", "-:"]
    for name, _arity, _val in SRUN.longs:
        words += [f"--{name}", f"--{name}=v", f"--{name[:max(1, len(name) // 2)]}", f"--{name[:3]}=v"]
    letters = [c for c in SRUN.optstring if c.isalpha()]
    rng = random.Random(23)
    words += ["-" + "".join(rng.choice(letters + ["2", "x"]) for _ in range(rng.randint(1, 4))) for _ in range(80)]
    compared = 0
    for _ in range(250):
        args = [rng.choice(words) for _ in range(rng.randint(1, 6))]
        if any(w.startswith(("--he", "--us", "--vers")) or re.fullmatch(r"-[a-zA-Z2]*[hV][a-zA-Z2]*", w)
               for w in args):
            continue  # srun would print its help and stop
        theirs = first_parse(traced(shim, "srun", args))
        try:
            options, _operands, stop = getopt.parse(SRUN, args)
            ours = ([(val_of(SRUN, o.name), o.value) for o in options], stop)
        except UsageError:
            ours = (None, "error")
        if theirs[1] is None:  # srun stopped on a bad value before the end: what it read must agree
            assert ours[1] == "error" or ours[0][:len(theirs[0])] == theirs[0], args
            continue
        assert ours == theirs, args
        compared += 1
    assert compared > 120
