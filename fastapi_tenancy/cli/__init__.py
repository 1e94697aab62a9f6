"""``fastapi-tenancy``: the kit's command line.

Subcommands: ``tenants list|create|suspend|resume|purge|export|import|clone|rename|move``,
``check``, ``shell --tenant KEY``, ``run --tenant KEY|--all-tenants module:function`` and
``migrate --tenant KEY|--all-tenants [--jobs N]``. They
find the app's :class:`~fastapi_tenancy.Tenancy` from ``--app module:attribute`` or the
``FASTAPI_TENANCY_APP`` environment variable (the attribute is a ``Tenancy`` or a function of no
arguments that returns one), show progress of long work on stderr, and fail with one line.
Also ``python -m fastapi_tenancy.cli``. See the "Command line" page of the docs.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from . import check, migrate, run, shell, tenants
from .arguments import common_options
from .errors import EXPECTED, describe
from .runtime import Runtime

__all__ = ["main"]

_EPILOG = """\
the app:
  --app module:attribute, or FASTAPI_TENANCY_APP=module:attribute; the attribute is the
  app's Tenancy, or a function of no arguments that returns one. The current directory is
  on the import path.

exit status:
  0    done (check: nothing found)
  1    failed, with one line on stderr saying why (--traceback shows more); run: a tenant's
       call failed; check: something was found
  2    the command was given wrongly; check: the check could not run
  130  interrupted
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastapi-tenancy`` with ``argv`` (default: the process's); the exit status."""
    args = _parser().parse_args(argv)
    runtime = Runtime(
        args.app,
        log_level=args.log_level,
        tracebacks=args.traceback,
        progress=not args.no_progress,
    )
    try:
        try:
            status: int = args.handler(args, runtime)
        finally:
            runtime.close()
    except KeyboardInterrupt:
        print("fastapi-tenancy: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        return _failed(error, args.traceback)
    return status


def _failed(error: Exception, tracebacks: bool) -> int:
    if tracebacks:
        traceback.print_exception(error)
    if isinstance(error, EXPECTED):
        line = describe(error)
    else:
        line = f"unexpected {describe(error)}"
        if not tracebacks:
            line += " (--traceback shows where)"
    print(f"fastapi-tenancy: error: {line}", file=sys.stderr)
    return int(getattr(error, "status", 1))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastapi-tenancy",
        description="Run a fastapi_tenancy app's tenants from the command line.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common_options(inherited=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [common_options(inherited=True)]
    for command in (tenants, check, shell, run, migrate):
        command.add_parser(commands, common)
    return parser
