"""One exception family; the CLI catches it once and turns it into a message and an exit code."""
from __future__ import annotations

from typing import Optional

EXIT_FAILED = 1  # the work itself failed (a build, a job, an engine)
EXIT_USAGE = 2   # bad usage or input (spec, site config, option, script)


class StardockError(Exception):
    """Base of every error the tool reports to its user; never raised with a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(StardockError):
    """Bad input: a wrong spec, site config, option or script."""

    exit_code = EXIT_USAGE


class ExternalError(StardockError):
    """A program we ran (podman, apptainer, sbatch, ...) failed or is missing."""


class OutcomeUnknown(ExternalError):
    """A request reached Slurm but its answer never came back: it may or may not have taken effect."""
