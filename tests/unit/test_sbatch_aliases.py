"""Every spelling sbatch 22.05 accepts is understood, and no other: long names and their aliases,
abbreviations (decided as glibc's getopt_long decides them), short letters, bundles of them, and
options whose value is optional.

SBATCH_22_05_8 is sbatch 22.05.8's own getopt_long table (name, has_arg, val) and optstring, as
Debian's sbatch hands them to getopt_long (captured on the testbed by an LD_PRELOAD shim around
getopt_long, running `sbatch --usage`); it is the same for the command line and for each #SBATCH
line. It agrees with src/common/slurm_opt.c of Slurm 22.05 (common_options[], filtered for sbatch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from stardock_hpc.errors import UsageError
from stardock_hpc.jobs.request import OWN, parse_command_line
from stardock_hpc.slurm.options import (
    ALIASES,
    LONG,
    NONE,
    OPTIONAL,
    REQUIRED,
    SHORT,
    SPELLINGS,
    parse_options,
    resolve_long,
    take_options,
)
from stardock_hpc.slurm.script import read_script

OPTSTRING = "+A:a:b:D:M:C:S:c:d:m:e:x:B:G:hHi:J:L:k::F:w:N:n:o:Osp:q:Qt:vVW"
SBATCH_22_05_8 = """
account 1 65 acctg-freq 1 258 array 1 97 batch 1 261 begin 1 98 bb 1 267 bbf 1 266
cluster-constraint 1 269 chdir 1 68 cluster 1 268 clusters 1 77 comment 1 270 container 1 272
context 1 273 contiguous 0 274 constraint 1 67 core-spec 1 83 cores-per-socket 1 276 cpu-freq 1 278
cpus-per-gpu 1 279 cpus-per-task 1 99 deadline 1 280 delay-boot 1 282 dependency 1 100
distribution 1 109 error 1 101 exclude 1 120 exclusive 2 286 export 1 287 export-file 1 288
extra-node-info 1 66 get-user-env 2 289 gid 1 290 gpu-bind 1 291 gpu-freq 1 292 gpus 1 71
gpus-per-node 1 294 gpus-per-socket 1 295 gpus-per-task 1 296 gres 1 297 gres-flags 1 298 help 0 104
hint 1 299 hold 0 72 ignore-pbs 0 300 input 1 105 job-name 1 74 kill-on-invalid-dep 1 303
licenses 1 76 mail-type 1 307 mail-user 1 308 mcs-label 1 309 mem 1 310 mem-bind 1 311
mem-per-cpu 1 312 mem-per-gpu 1 313 mincpus 1 315 network 1 322 nice 2 323 no-kill 2 107
no-requeue 0 325 nodefile 1 70 nodelist 1 119 nodes 1 78 ntasks 1 110 ntasks-per-core 1 327
ntasks-per-gpu 1 328 ntasks-per-node 1 329 ntasks-per-socket 1 330 ntasks-per-tres 1 331
open-mode 1 332 output 1 111 overcommit 0 79 oversubscribe 0 115 parsable 0 335 partition 1 112
power 1 336 prefer 1 337 priority 1 338 profile 1 339 propagate 2 341 qos 1 113 quiet 0 81
reboot 0 345 requeue 0 346 reservation 1 347 signal 1 350 sockets-per-node 1 352 spread-job 0 353
switches 1 356 tasks-per-node 1 329 test-only 0 359 thread-spec 1 360 threads-per-core 1 361
time 1 116 time-min 1 362 tmp 1 363 uid 1 365 use-min-nodes 0 368 verbose 0 118 version 0 86
usage 0 367 wait 0 87 wait-all-nodes 1 369 wckey 1 370 wrap 1 372
"""
HAS_ARG = {"0": NONE, "1": REQUIRED, "2": OPTIONAL}


def real_table() -> List[Tuple[str, str, int]]:
    words = SBATCH_22_05_8.split()
    return [(words[i], HAS_ARG[words[i + 1]], int(words[i + 2])) for i in range(0, len(words), 3)]


def real_shorts() -> Dict[str, str]:
    """optstring letter -> arity (":" required, "::" optional)."""
    out, chars, i = {}, OPTSTRING[1:], 0
    while i < len(chars):
        colons = len(chars[i + 1:]) - len(chars[i + 1:].lstrip(":"))
        out[chars[i]] = {0: NONE, 1: REQUIRED, 2: OPTIONAL}[colons]
        i += 1 + colons
    return out


def getopt_long(word: str) -> Tuple[str, object]:
    """glibc 2.36's process_long_option on sbatch's table: ("exact"|"abbrev", entry),
    ("ambiguous", names) or ("unknown", None)."""
    table = real_table()
    for entry in table:
        if entry[0] == word:
            return "exact", entry
    found, ambiguous = None, []
    for entry in table:
        if entry[0].startswith(word):
            if found is None:
                found = entry
            elif (entry[1], entry[2]) != (found[1], found[2]):  # has_arg or val differ (flag is always NULL)
                ambiguous.append(entry[0])
    if ambiguous:
        return "ambiguous", [found[0], *ambiguous]  # type: ignore[index]
    return ("abbrev", found) if found else ("unknown", None)


def test_the_long_names_are_sbatch_22_05_8s_with_their_arity():
    table = real_table()
    assert sorted(SPELLINGS) == sorted(name for name, _arity, _val in table)
    for name, arity, _val in table:
        assert LONG[SPELLINGS[name]] == arity, name


def test_names_sharing_a_val_are_one_option_and_aliases_are_the_only_other_names():
    table = real_table()
    by_val: Dict[int, set] = {}
    for name, _arity, val in table:
        by_val.setdefault(val, set()).add(SPELLINGS[name])
    assert all(len(names) == 1 for names in by_val.values()), by_val
    assert set(SPELLINGS) - set(LONG) == set(ALIASES)
    assert {alias: canonical for alias, (canonical, _same) in ALIASES.items()} == {
        "tasks-per-node": "ntasks-per-node", "cluster": "clusters"}
    vals = {name: val for name, _arity, val in table}
    for alias, (canonical, same_val) in ALIASES.items():
        assert (vals[alias] == vals[canonical]) == same_val, alias


def test_short_letters_are_sbatch_22_05_8s_with_their_arity():
    shorts = real_shorts()
    assert sorted(SHORT) == sorted(shorts)
    for letter, arity in shorts.items():
        assert LONG[SHORT[letter]] == arity, letter
    # each letter is the val of its long option
    vals = {name: val for name, _arity, val in real_table()}
    assert all(vals[name] == ord(letter) for letter, name in SHORT.items())


def test_every_abbreviation_resolves_as_getopt_long_does():
    prefixes = sorted({name[:n] for name in SPELLINGS for n in range(1, len(name) + 1)})
    wrong = []
    for word in prefixes:
        kind, what = getopt_long(word)
        try:
            got = resolve_long(word, "x")
        except UsageError as exc:
            got = "ambiguous" if "ambiguous" in exc.message else "unknown"
        expected = SPELLINGS[what[0]] if kind in ("exact", "abbrev") else kind  # type: ignore[index]
        if got != expected:
            wrong.append(f"--{word}: getopt_long {expected}, stardock {got}")
    assert len(prefixes) > 600 and not wrong, wrong


@pytest.mark.parametrize("word, expected", [
    ("tasks-per-node", "ntasks-per-node"), ("tasks", "ntasks-per-node"), ("ta", "ntasks-per-node"),
    ("cluster", "clusters"), ("clusters", "clusters"), ("cluster-c", "cluster-constraint"),
    ("context", "context"), ("conte", "context"), ("ntasks-per-t", "ntasks-per-tres"),
    ("ntasks-per-n", "ntasks-per-node"),
    ("contig", "contiguous"), ("mem", "mem"), ("time-m", "time-min"), ("time", "time"),
])
def test_aliases_and_new_abbreviations_seen_with_sbatch_test_only(word, expected):
    # each of these was submitted with `sbatch --test-only --WORD=...` on the testbed and accepted
    assert resolve_long(word, "x") == expected


@pytest.mark.parametrize("word", ["clust", "cl", "cont", "us", "ntasks-per", "t", "ta-x"])
def test_ambiguous_or_unknown_as_with_sbatch(word):
    # sbatch: "option '--clust=stardock' is ambiguous; possibilities: '--cluster-constraint'
    # '--cluster' '--clusters'"; "--us" likewise (--use-min-nodes, --usage)
    with pytest.raises(UsageError, match="is ambiguous; possibilities" if word != "ta-x" else "unrecognized option"):
        resolve_long(word, "x")


def test_an_alias_is_kept_as_written_and_named_by_its_option():
    opts = parse_options(["--tasks-per-node=4", "--cluster", "stardock", "--ta", "2", "-M", "c2"], "x")
    assert [(o.name, o.value, o.tokens) for o in opts] == [
        ("ntasks-per-node", "4", ("--tasks-per-node=4",)), ("clusters", "stardock", ("--cluster", "stardock")),
        ("ntasks-per-node", "2", ("--ta", "2")), ("clusters", "c2", ("-M", "c2"))]


def test_aliases_in_directives_and_on_the_command_line(tmp_path: Path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --tasks-per-node=2\n#SBATCH --cluster=stardock\nsrun hostname\n")
    parsed = read_script(script)
    assert [[o.name for o in opts] for _n, opts in parsed.sbatch_lines] == [["ntasks-per-node"], ["clusters"]]
    req = parse_command_line(["--tasks-per-node", "3", str(script)], tmp_path)
    assert [(o.name, o.tokens) for o in req.sbatch] == [("ntasks-per-node", ("--tasks-per-node", "3"))]


@pytest.mark.parametrize("args, expected", [
    (["-vv"], [("verbose", None, ("-v",)), ("verbose", None, ("-v",))]),
    (["-HQ"], [("hold", None, ("-H",)), ("quiet", None, ("-Q",))]),
    (["-Hn2"], [("hold", None, ("-H",)), ("ntasks", "2", ("-n2",))]),
    (["-Hn", "2"], [("hold", None, ("-H",)), ("ntasks", "2", ("-n", "2"))]),
    (["-n2H"], [("ntasks", "2H", ("-n2H",))]),                 # a value ends the bundle
    (["-kH"], [("no-kill", "H", ("-kH",))]),                   # optional value: the rest of the token
    (["-Hk"], [("hold", None, ("-H",)), ("no-kill", None, ("-k",))]),
    (["-k"], [("no-kill", None, ("-k",))]),
    (["-c4"], [("cpus-per-task", "4", ("-c4",))]),
])
def test_bundled_short_options_read_as_getopt_reads_them(args, expected):
    # sbatch --test-only took -Hn1, "-Hn 1" and -vv; -Qv was read as both (refused as contradictory)
    options, nxt = take_options(args, 0, "x")
    assert [(o.name, o.value, o.tokens) for o in options] == expected
    assert nxt == len(args)


def test_bundles_refuse_unknown_letters_and_missing_values():
    with pytest.raises(UsageError, match="invalid option -- 'z'"):
        take_options(["-Hz"], 0, "x")
    with pytest.raises(UsageError, match="option requires an argument -- 'n'"):
        take_options(["-Hn"], 0, "x")


@pytest.mark.parametrize("line, sbatch_says", [
    # what sbatch 22.05.8 printed for each line in a script's header (sbatch --test-only)
    ("--bogus", "unrecognized option '--bogus'"),
    ("--hold=x", "option '--hold' doesn't allow an argument"),
    ("--hol=x", "option '--hold' doesn't allow an argument"),
    ("--mem", "option '--mem' requires an argument"),
    ("-n", "option requires an argument -- 'n'"),
    # sbatch: "option '--clust=x' is ambiguous; possibilities: '--cluster-constraint' '--cluster' '--clusters'"
    ("--clust=x", "option '--clust' is ambiguous; possibilities: "),
    ("-z", "invalid option -- 'z'"),
    ("-t 1 foo", "Invalid directive found in batch script: foo"),
])
def test_refusals_name_the_cause_in_sbatchs_words(tmp_path: Path, line, sbatch_says):
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\n#SBATCH {line}\ntrue\n")
    with pytest.raises(UsageError) as caught:
        read_script(script)
    assert sbatch_says in caught.value.message
    if "ambiguous" in sbatch_says:
        assert all(f"'--{name}'" in caught.value.message for name in ("cluster-constraint", "cluster", "clusters"))


@pytest.mark.parametrize("token, arity", [("--nice", OPTIONAL), ("--exclusive", OPTIONAL), ("--propagate", OPTIONAL),
                                          ("--get-user-env", OPTIONAL), ("--no-kill", OPTIONAL)])
def test_optional_values_only_with_equals(token, arity):
    # getopt_long gives an optional argument only as --name=value: the next word is not its value
    (opt,), nxt = take_options([token, "job.sh"], 0, "x")
    assert (opt.value, nxt, LONG[opt.name]) == (None, 1, arity)
    (opt,), nxt = take_options([token + "=v", "job.sh"], 0, "x")
    assert (opt.value, nxt) == ("v", 1)


def test_required_values_take_the_next_word_even_if_it_looks_like_an_option():
    # sbatch --test-only --tasks-per-node s.sh: "Invalid numeric value "s.sh" for --ntasks-per-node"
    (opt,), nxt = take_options(["--tasks-per-node", "s.sh"], 0, "x")
    assert (opt.name, opt.value, nxt) == ("ntasks-per-node", "s.sh", 2)
    (opt,), nxt = take_options(["--wrap", "-x"], 0, "x")
    assert (opt.name, opt.value, nxt) == ("wrap", "-x", 2)


def test_stardock_options_collide_with_no_sbatch_spelling_nor_abbreviation():
    """But --input: stardock's when its value is a URL (issue 17), sbatch's (the script's standard
    input, a file name pattern) otherwise."""
    for own in OWN:
        if own != "input":
            assert not [name for name in SPELLINGS if name.startswith(own)], own


@pytest.mark.parametrize("argv, ours, theirs", [
    (["--input=https://h/x.fits", "job.sh"], ["https://h/x.fits"], None),
    (["--input", "file:///data/x.fits=x", "job.sh"], ["file:///data/x.fits=x"], None),
    (["--input=in-%j.txt", "job.sh"], [], "in-%j.txt"),
    (["--input", "in.txt", "job.sh"], [], "in.txt"),
    (["-i", "https://h/x", "job.sh"], [], "https://h/x"),
    (["--inp=https://h/x", "job.sh"], [], "https://h/x"),
])
def test_input_with_a_url_is_stardocks_and_any_other_is_sbatchs(tmp_path, argv, ours, theirs):
    (tmp_path / "job.sh").write_text("#!/bin/sh\ntrue\n")
    req = parse_command_line(argv, tmp_path)
    assert req.inputs == ours
    assert [o.value for o in req.sbatch if o.name == "input"] == ([theirs] if theirs else [])
