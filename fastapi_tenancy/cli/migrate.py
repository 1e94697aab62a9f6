"""``fastapi-tenancy migrate``: run the tenant migrations (Alembic) in the schema or database of
one tenant, or of every tenant placed apart, several at once (:mod:`fastapi_tenancy.isolation
.migrations`).

Each tenant is migrated in a transaction of its own under a lock of its own; one tenant's
failure never stops the others. Each failure is reported in one line at the end, and the exit
status is 1 if any failed; running the command again finishes what failed or was interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..isolation.migrations import TenantMigration, migrate_tenants
from ..isolation.urls import sync_url
from .arguments import positive_int
from .errors import CliError
from .progress import meter
from .runtime import Runtime

__all__ = ["add_parser"]


def add_parser(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    """Add ``migrate`` to the ``commands`` of the main parser."""
    parser = commands.add_parser(
        "migrate",
        parents=common,
        help="run the tenant migrations in each tenant's own schema or database",
        description="Upgrade the schema or database of one tenant, or of every tenant placed "
        "apart (active or suspended), with the app's tenant migration environment, JOBS at "
        "once. Tenants in the shared tables are left to the app's own migrations. Exit "
        "status 1 if any tenant failed; run again to finish.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--tenant", metavar="KEY", help="this tenant")
    which.add_argument("--all-tenants", action="store_true", help="every tenant of the registry")
    parser.add_argument(
        "--jobs", type=positive_int, default=1, metavar="N", help="tenants at once (1)"
    )
    parser.add_argument(
        "--revision", default="head", metavar="REV", help="the revision to reach (head)"
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="the tenant migrations' alembic.ini (default: Isolation(migrations=...))",
    )
    parser.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace, runtime: Runtime) -> int:
    tenancy = runtime.tenancy
    isolation = tenancy.isolation
    if isolation is None:
        raise CliError("the app's Tenancy places no tenant apart: give it isolation=Isolation()")
    config = args.config or isolation.migrations
    if config is None:
        raise CliError("which migrations? give --config PATH or Isolation(migrations=PATH)")
    tenants = [
        (runtime.spell(key), tenancy.placement_of(key, record))
        for key, record in _which(args, runtime)
    ]
    placed = [(key, placement) for key, placement in tenants if placement is not None]
    url = sync_url(tenancy.engine.url)
    label = "migrating tenants"
    with meter(label, total=len(placed), unit="tenants", enabled=runtime.progress) as progress:

        def heard(result: TenantMigration) -> None:
            progress.update(1)

        results = migrate_tenants(
            placed,
            url=url,
            config_file=config,
            revision=args.revision,
            jobs=args.jobs,
            progress=heard,
        )
    failed = [result for result in results if result.status == "failed"]
    for result in failed:
        print(
            f"fastapi-tenancy: error: tenant {result.key}: migration from "
            f"{result.before or 'nothing'} failed: {result.error}",
            file=sys.stderr,
        )
    counts = {
        status: sum(r.status == status for r in results) for status in ("migrated", "current")
    }
    shared = len(tenants) - len(results)
    names = ", ".join(result.key for result in failed)
    print(
        f"migrated {len(results)} tenant(s) to {args.revision}: {counts['migrated']} migrated, "
        f"{counts['current']} already there, {len(failed)} failed"
        + (f" ({names})" if names else "")
        + (f"; {shared} in the shared tables left to the app's migrations" if shared else "")
    )
    return 1 if failed else 0


def _which(args: argparse.Namespace, runtime: Runtime) -> list[tuple[Any, Any]]:
    """The tenants to migrate, with their records when the app has a registry."""
    tenancy = runtime.tenancy
    if args.all_tenants:
        key = runtime.registry.key
        records = runtime.wait(runtime.tenants.list())
        return [(getattr(record, key), record) for record in records]
    key = runtime.key(args.tenant)
    if tenancy.registry is None:
        return [(key, None)]
    with runtime.naming(missing=key):
        return [(key, runtime.wait(runtime.tenants.get(key)))]
