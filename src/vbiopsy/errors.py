"""User-facing error types.

Every problem caused by the user's input (a bad file, row, key or option) raises a subclass of
:class:`VbiopsyError`. The CLI prints ``error: <message>`` on one line and exits non-zero, with
no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class VbiopsyError(Exception):
    """Base class of errors the user can fix; the message names what is wrong and where."""


class InputError(VbiopsyError):
    """A file, table row or value given by the user is unusable.

    Args:
        where: the file, ``file row N`` or key the problem is in.
        problem: what is wrong, in a few words, including the offending value.
    """

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")


class ConfigError(VbiopsyError):
    """A configuration value or command-line option is invalid."""


class CohortError(VbiopsyError):
    """A cohort has one or more problems; ``problems`` lists them, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        if not problems:
            raise ValueError("CohortError needs at least one problem")
        self.problems = list(problems)
        head = self.problems[0]
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        super().__init__(head + more)


class LeakageError(VbiopsyError):
    """A patient appears in two partitions of a split that must be disjoint."""
