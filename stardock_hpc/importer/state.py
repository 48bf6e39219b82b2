"""Where stardock's build shell is, as far as `stardock import` can follow a recipe's commands.

Consecutive shell steps of a spec share one bash shell; a packages or files item of build: ends
it, and the steps after it start in / with no variables set. So when the importer puts an
install in the middle of a recipe's commands as such an item, the shell after it must be put
back: `cd` to where the recipe was, and the variable assignments run again. That is possible
while every change the recipe made to its shell is a literal `cd` or an assignment; after a
`source`, an `eval`, a `cd "$(...)"`, it is not, and the installs after it stay shell commands
as the recipe wrote them."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

from stardock_hpc.importer.shell import ASSIGNMENT, command_words, unquote

_REPLAYED = {"export", "unset", "umask", "set", "shopt", "alias", "ulimit", "readonly", "declare", "typeset"}
_UNFOLLOWED = {"source", ".", "eval", "exec", "trap", "function", "enable", "pushd", "popd", "builtin"}


@dataclass(frozen=True)
class ShellState:
    cwd: Optional[str] = "/"        # None: the importer cannot tell
    replay: Tuple[str, ...] = ()    # commands (assignments, export, umask...) to run again in a new shell
    exact: bool = True              # False: the shell changed in a way that cannot be put back
    moved: bool = False             # a `cd` of the command itself (into what it cloned or unpacked...)

    def after(self, words: Sequence[str], text: str) -> ShellState:
        """The state after one simple command (its raw words; `text` as written)."""
        literal = [unquote(w) for w in words]
        if not literal:
            return self
        head = literal[0]
        if head == "cd":
            args = [w for w in literal[1:] if w not in ("-P", "-L", "-e", "-@")]
            target = "/root" if not args else args[0]   # the build runs as root
            if target is None or target == "-" or self.cwd is None:
                return replace(self, cwd=None, exact=False, moved=True)
            return replace(self, cwd=posixpath.normpath(posixpath.join(self.cwd, target)), moved=True)
        if head is None or head in _UNFOLLOWED or (head in ("conda", "mamba") and "activate" in literal):
            return replace(self, exact=False)
        if head in _REPLAYED or all(w is not None and ASSIGNMENT.fullmatch(w) for w in literal):
            return replace(self, replay=self.replay + (text,))
        return self

    def after_script(self, text: str) -> ShellState:
        """The state after a compound command (if, for, a subshell...), followed roughly: a `cd`
        or an assignment anywhere in it makes the state unknown."""
        for words in command_words(text):
            head = unquote(words[0]) if words else None
            if head is None or head == "cd" or head in _UNFOLLOWED or head in _REPLAYED \
                    or ASSIGNMENT.fullmatch(head):
                moves = head in ("cd", "pushd", "popd", None)
                return replace(self, cwd=None if moves else self.cwd, exact=False, moved=self.moved or moves)
        return self
