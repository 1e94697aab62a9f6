"""Arguments every command shares, and argument types."""

from __future__ import annotations

import argparse

__all__ = ["LOG_LEVELS", "common_options", "positive_int"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def common_options(*, inherited: bool) -> argparse.ArgumentParser:
    """The options taken before or after the command: the app, logging, tracebacks, progress.

    The main parser holds their defaults; the commands' copies (``inherited``) set nothing
    unless given, so ``fastapi-tenancy --app x tenants list`` and ``fastapi-tenancy tenants
    list --app x`` are one command.
    """
    parser = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return argparse.SUPPRESS if inherited else value

    def shown(text: str) -> str:
        # Listed once, in the main parser's help; the commands' copies only accept them.
        return argparse.SUPPRESS if inherited else text

    parser.add_argument(
        "--app",
        default=default(None),
        metavar="MODULE:ATTR",
        help=shown(
            "the app's Tenancy, or a function of no arguments that returns one "
            "(default: $FASTAPI_TENANCY_APP)"
        ),
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default("error"),
        help=shown(
            "print the kit's log records from this level on, when the app sets up no "
            "logging of its own (warning: the audit trail; default: error)"
        ),
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=default(False),
        help=shown("print the traceback of an error, not only its line"),
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        default=default(False),
        help=shown("no progress bars or lines"),
    )
    return parser


def positive_int(raw: str) -> int:
    """An argument type: a whole number of at least 1."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
