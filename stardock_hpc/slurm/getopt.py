"""Command lines read as glibc's getopt_long reads them, for Slurm's client commands.

What a command from inside a job's container asks of the host is judged option by option
(jobs/steps.py), so the options must be told apart exactly as the command itself will: a token
read here as a value but by the command as an option (or the other way round) would let an option
through unjudged. So this follows glibc's getopt_long (2.36, Debian 12) rule for rule:

  * a long option may be abbreviated to any prefix; an exact name wins; a prefix of several names
    is ambiguous unless they are one option to getopt (same has_arg and val: aliases);
  * `--name=value`, or `--name value` when the option requires a value; an optional value only
    with '=';
  * short options bundle (`-lN2`): a letter that takes a value ends the bundle, the rest of the
    token (or, if empty and the value is required, the next word) is its value;
  * `--` ends the options; an optstring starting with '+' stops at the first non-option (srun),
    otherwise non-options are set aside and parsing goes on (GNU permutation: scontrol, squeue...).

Each command's table is the one its binary hands getopt_long (Slurm 22.05.8 here), read from the
binary itself (an LD_PRELOAD shim that printed getopt_long's arguments), not from its manual.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from stardock_hpc.errors import UsageError

NO, REQUIRED, OPTIONAL = 0, 1, 2  # getopt's has_arg


@dataclass(frozen=True)
class Table:
    """A command's getopt_long table: optstring and (name, has_arg, val) entries, in its order.
    The first long name of a val is the option's name here (the later ones are its aliases)."""

    command: str
    optstring: str
    longs: Tuple[Tuple[str, int, int], ...]

    @property
    def stops_at_operand(self) -> bool:
        return self.optstring.startswith("+")

    def name_of(self, val: int) -> str:
        for name, _arity, v in self.longs:
            if v == val:
                return name
        return chr(val)  # a short option without a long name

    def short_arity(self, letter: str) -> Optional[int]:
        spec = self.optstring.lstrip("+-:")
        at = spec.find(letter)
        if at < 0 or letter in ":;":
            return None
        if spec[at + 1:at + 3] == "::":
            return OPTIONAL
        return REQUIRED if spec[at + 1:at + 2] == ":" else NO


@dataclass(frozen=True)
class Option:
    """One option as the command reads it: its name (see Table), its value, and the tokens it
    came from (the word, and the next one when that is its value). `written` is how it was
    spelled: '--pro' for --prolog, '-l' in '-lN2'."""

    name: str
    value: Optional[str]
    tokens: Tuple[str, ...]
    written: str

    def shown(self) -> str:
        """The option for a message: its name, and what was written when that differs."""
        canonical = f"--{self.name}" if len(self.name) > 1 else f"-{self.name}"
        if self.written.startswith("$"):  # srun's variable that stands for the option
            return f"{self.written} (srun's {canonical})"
        return canonical if self.written == canonical else f"{canonical} (written {self.written!r})"


def _long(table: Table, word: str) -> Tuple[str, int, int]:
    """The table entry a long option word names, as getopt_long decides."""
    matches = []
    for entry in table.longs:
        if entry[0] == word:
            return entry
        if entry[0].startswith(word):
            matches.append(entry)
    if not matches:
        raise UsageError(f"unrecognized option '--{word}'")
    first = matches[0]
    if any((arity, val) != (first[1], first[2]) for _name, arity, val in matches[1:]):
        raise UsageError(f"option '--{word}' is ambiguous; possibilities: "
                         + " ".join(f"'--{name}'" for name, _a, _v in matches))
    return first


def parse(table: Table, args: Sequence[str]) -> Tuple[List[Option], List[str], int]:
    """The options of args and the operands (non-options) in order, and the index where parsing
    stopped (len(args), or the first operand for a '+' optstring; the operands then are args
    from there on). Errors are getopt's, as UsageError."""
    options: List[Option] = []
    operands: List[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            operands.extend(args[i + 1:])
            return options, operands, i + 1
        if not token.startswith("-") or token == "-":
            if table.stops_at_operand:
                return options, list(args[i:]), i
            operands.append(token)
            i += 1
            continue
        if token.startswith("--"):
            word, eq, value = token[2:].partition("=")
            name, arity, val = _long(table, word)
            if eq and arity == NO:
                raise UsageError(f"option '--{name}' doesn't allow an argument")
            if not eq and arity == REQUIRED:
                if i + 1 >= len(args):
                    raise UsageError(f"option '--{name}' requires an argument")
                options.append(Option(table.name_of(val), args[i + 1], (token, args[i + 1]), f"--{word}"))
                i += 2
                continue
            options.append(Option(table.name_of(val), value if eq else None, (token,), f"--{word}"))
            i += 1
            continue
        at = 1
        while at < len(token):
            letter = token[at]
            found = table.short_arity(letter)
            if found is None:
                raise UsageError(f"invalid option -- '{letter}'")
            arity = found
            name = table.name_of(ord(letter))
            rest = token[at + 1:]
            if arity == NO:
                options.append(Option(name, None, (f"-{letter}",), f"-{letter}"))
                at += 1
                continue
            if rest or arity == OPTIONAL:
                options.append(Option(name, rest or None, (f"-{letter}{rest}",), f"-{letter}"))
            elif i + 1 < len(args):
                i += 1
                options.append(Option(name, args[i], (f"-{letter}", args[i]), f"-{letter}"))
            else:
                raise UsageError(f"option requires an argument -- '{letter}'")
            break
        i += 1
    return options, operands, len(args)


def long_names(table: Table) -> Dict[str, str]:
    """Every long name of the table, with the option it names."""
    return {name: table.name_of(val) for name, _arity, val in table.longs}
