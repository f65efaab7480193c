"""How the command line reports errors: one ``error: …`` line, a non-zero exit, no traceback.

:func:`user_errors` turns the toolkit's own :class:`~vbiopsy.errors.VbiopsyError` into such lines;
:class:`OneLineErrors` (the command group of :mod:`vbiopsy.cli`) does the same for typer's usage errors.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from vbiopsy.errors import CohortError, VbiopsyError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_PROBLEMS = 1
"""``cohort check`` found problems."""
EXIT_ERROR = 2
"""Bad input, option or config: nothing was computed."""

def option_value(args: list[str], names: list[str]) -> str | None:
    """The last value given on the command line for an option called any of ``names`` (``--x v`` or ``--x=v``)."""
    value = None
    for i, token in enumerate(args):
        for name in names:
            if token == name and i + 1 < len(args):
                value = args[i + 1]
            elif token.startswith(f"{name}=") and name.startswith("--"):
                value = token.split("=", 1)[1]
    return value


class OneLineErrors(typer.core.TyperGroup):
    """Command group whose usage errors (unknown option, value out of range, missing argument) print one
    ``error: …`` line and exit with :data:`EXIT_ERROR`, like every other bad input — no usage banner, no box.
    A bare ``vbiopsy`` / ``vbiopsy cohort`` still prints the help."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        from typer._click.exceptions import BadParameter, NoArgsIsHelpError, UsageError

        given = list(kwargs.get("args") or (args[0] if args else None) or sys.argv[1:])
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as err:
            if not standalone_mode:
                raise
            err.show()
            sys.exit(EXIT_ERROR)
        except UsageError as err:
            if not standalone_mode:
                raise
            command = f"{err.ctx.command_path}: " if err.ctx is not None else ""
            message = err.format_message()
            if isinstance(err, BadParameter) and err.param is not None:
                value = option_value(given, list(getattr(err.param, "opts", [])))
                message += f" (got {value!r})" if value is not None else ""
            _stderr(f"error: {command}{message}")
            sys.exit(EXIT_ERROR)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


def _stderr(line: str) -> None:
    typer.echo(line, err=True)


def user_errors(func: F) -> F:
    """Turn :class:`VbiopsyError` into ``error:`` lines and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CohortError as err:
            for problem in err.problems:
                _stderr(f"error: {problem}")
            raise typer.Exit(EXIT_ERROR) from None
        except VbiopsyError as err:
            _stderr(f"error: {err}")
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            _stderr("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
