"""The command line's failures, and how each is told in one line."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from ..exceptions import TenancyError

__all__ = ["EXPECTED", "CliError", "UsageError", "describe"]


class CliError(Exception):
    """A failure the command line explains in one line; exit status 1."""

    status = 1


class UsageError(CliError):
    """The command was given wrongly (a missing app, a malformed argument); exit status 2."""

    status = 2


EXPECTED: tuple[type[BaseException], ...] = (CliError, TenancyError, SQLAlchemyError, OSError)
"""Failures that need no traceback: one line says what went wrong."""


def describe(error: BaseException) -> str:
    """``error`` as one line: the kit's detail and code, the driver's message for a database
    failure, the reason and file for an ``OSError``, else the type and message."""
    if isinstance(error, TenancyError):
        text = f"{error.detail} ({error.code})"
        cause = error.__cause__
        if isinstance(cause, (SQLAlchemyError, OSError)):
            text = f"{text}: {describe(cause)}"
    elif isinstance(error, SQLAlchemyError):
        # The driver's own message; SQLAlchemy's adds the statement and a link to its docs.
        origin = getattr(error, "orig", None)
        text = f"database error: {origin if origin is not None else _first_arg(error)}"
    elif isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    elif isinstance(error, CliError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def _first_arg(error: BaseException) -> object:
    return error.args[0] if error.args else type(error).__name__
