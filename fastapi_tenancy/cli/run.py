"""``fastapi-tenancy run``: call ``module:function(key)`` bound to one tenant, or to every
active tenant a few at a time (:mod:`fastapi_tenancy.jobs`).

An ``async def`` function is awaited, on the command's event loop; a plain one runs in worker
threads. One tenant's failure never stops the others: each is reported in one line at the end,
and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import traceback
from typing import Any

from ..jobs import JobReport, run_for_each_tenant, run_for_each_tenant_async
from .arguments import positive_int
from .errors import CliError, describe
from .loading import import_object
from .progress import meter
from .runtime import Runtime

__all__ = ["add_parser"]


def add_parser(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    """Add ``run`` to the ``commands`` of the main parser."""
    parser = commands.add_parser(
        "run",
        parents=common,
        help="call module:function(key) bound to a tenant, or to every active tenant",
        description="Call FUNCTION(key) with the tenant bound: for one tenant, or for every "
        "active tenant, JOBS at once. Exit status 1 if any call failed.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--tenant", metavar="KEY", help="this tenant (active or not)")
    which.add_argument("--all-tenants", action="store_true", help="every active tenant")
    parser.add_argument(
        "--jobs", type=positive_int, default=4, metavar="N", help="tenants at once (4)"
    )
    parser.add_argument("function", metavar="module:function")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace, runtime: Runtime) -> int:
    function = import_object(args.function, "the function")
    if not callable(function):
        raise CliError(f"{args.function} is a {type(function).__name__}, not a function")
    keys = _keys(args, runtime)
    label = f"running {args.function}"
    with meter(label, total=len(keys), unit="tenants", enabled=runtime.progress) as progress:

        def done(key: Any, error: BaseException | None) -> None:
            progress.update(1)

        report: JobReport
        if inspect.iscoroutinefunction(function):
            report = runtime.complete(
                run_for_each_tenant_async(keys, function, concurrency=args.jobs, on_done=done)
            )
        else:
            report = run_for_each_tenant(keys, function, concurrency=args.jobs, on_done=done)
    for key, error in report.failed.items():
        if runtime.tracebacks:
            traceback.print_exception(error)
        print(
            f"fastapi-tenancy: error: tenant {runtime.spell(key)}: {describe(error)}",
            file=sys.stderr,
        )
    failed = ", ".join(runtime.spell(key) for key in report.failed)
    print(
        f"ran {args.function} for {len(keys)} tenant(s): {len(report.succeeded)} succeeded, "
        f"{len(report.failed)} failed" + (f" ({failed})" if failed else "")
    )
    return 0 if report.ok else 1


def _keys(args: argparse.Namespace, runtime: Runtime) -> list[Any]:
    if args.all_tenants:
        key = runtime.registry.key
        return [getattr(record, key) for record in runtime.wait(runtime.tenants.list(active=True))]
    key = runtime.key(args.tenant)
    if runtime.tenancy.registry is not None:
        with runtime.naming(missing=key):
            runtime.wait(runtime.tenants.get(key))
    return [key]
