"""``fastapi-tenancy check [DATABASE_URL]``: what the database lacks for the tenant wall.

On PostgreSQL it is ``fastapi-tenancy-check`` (:mod:`fastapi_tenancy.postgres.check`): same
options, findings and exit statuses, on the app's own database when no URL is given. On SQLite
and MariaDB it reports what applies there: mapped models with a tenant column that are not
tenant models (:func:`~fastapi_tenancy.checks.find_forgotten_tenant_models`), and on MariaDB and
MySQL tenant columns that do not compare exactly
(:func:`~fastapi_tenancy.checks.find_case_insensitive_tenant_columns`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ..checks import (
    MYSQL_DIALECTS,
    Finding,
    find_case_insensitive_tenant_columns,
    find_forgotten_tenant_models,
)
from ..postgres import check as postgres_check
from .errors import UsageError, describe
from .loading import current_directory_on_path, import_object
from .runtime import Runtime

__all__ = ["add_parser"]

# The checker's options that only PostgreSQL's catalog answers.
_POSTGRES_ONLY = ("role", "schema", "tenant_column", "exclude", "strict_keys")


def add_parser(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    """Add ``check`` to the ``commands`` of the main parser."""
    parser = commands.add_parser(
        "check",
        parents=common,
        help="list what the database lacks for the tenant wall (exit 1 if anything)",
        description="List what a live database lacks for the tenant wall: on PostgreSQL, "
        "fastapi-tenancy-check's findings; elsewhere, forgotten tenant models and (MariaDB, "
        "MySQL) tenant columns that ignore case. DATABASE_URL defaults to the app's. Exit "
        "status 1 when something is found, 0 when nothing is, 2 when the check cannot run.",
    )
    postgres_check.add_arguments(parser, url_required=False)
    parser.set_defaults(handler=_check)


def _check(args: argparse.Namespace, runtime: Runtime) -> int:
    url = make_url(args.url) if args.url else runtime.tenancy.engine.url
    if url.get_backend_name() == "postgresql":
        args.url = url.render_as_string(hide_password=False)
        current_directory_on_path()  # for --metadata
        return _report(lambda: postgres_check.findings_for(args), args.json)
    given = [f"--{name.replace('_', '-')}" for name in _POSTGRES_ONLY if getattr(args, name)]
    if given:
        raise UsageError(f"{', '.join(given)}: only on PostgreSQL")
    metadata = _metadata(args.metadata) if args.metadata else None
    return _report(lambda: _other_findings(runtime, args.url, url, metadata), args.json)


def _report(findings: Callable[[], list[Finding]], as_json: bool) -> int:
    try:
        found = findings()
    except postgres_check.CANNOT_RUN as error:
        print(f"fastapi-tenancy: error: the check cannot run: {describe(error)}", file=sys.stderr)
        return 2
    return postgres_check.report(found, as_json=as_json)


def _other_findings(
    runtime: Runtime, given: str | None, url: URL, metadata: MetaData | None
) -> list[Finding]:
    findings = find_forgotten_tenant_models(metadata)
    if url.get_backend_name() in MYSQL_DIALECTS:
        if given is None:
            findings += runtime.wait(runtime.tenancy.check_database(metadata))
        else:
            findings += _collations(runtime, url, metadata)
    return sorted(findings)


def _collations(runtime: Runtime, url: URL, metadata: MetaData | None) -> list[Finding]:
    if url.get_dialect().is_async:
        engine: Any = create_async_engine(url, poolclass=NullPool)
        return runtime.wait(_collations_async(engine, metadata))
    engine = create_engine(url, poolclass=NullPool)
    try:
        return find_case_insensitive_tenant_columns(engine, metadata)
    finally:
        engine.dispose()


async def _collations_async(engine: AsyncEngine, metadata: MetaData | None) -> list[Finding]:
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(find_case_insensitive_tenant_columns, metadata)
    finally:
        await engine.dispose()


def _metadata(spec: str) -> MetaData:
    target = import_object(spec, "--metadata")
    if not isinstance(target, MetaData):
        raise UsageError(f"--metadata {spec} is a {type(target).__name__}, not a MetaData")
    return target
