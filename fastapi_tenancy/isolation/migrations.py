"""Alembic across every tenant's own schema or database: each tenant migrated in a transaction
of its own, under a lock of its own, several at once in worker processes, and a report of each.

The tenant tables have a migration environment of their own (the shared tables keep the app's
usual one), whose ``env.py`` hands over to :func:`run_tenant_migrations`::

    # migrations/tenants/env.py
    from fastapi_tenancy.isolation.migrations import run_tenant_migrations
    from myapp.models import SQLModel

    run_tenant_migrations(SQLModel.metadata)

Run by :func:`migrate_tenants` (and ``fastapi-tenancy migrate``), it migrates the tenant it is
given; run by ``alembic`` itself (``alembic upgrade head``, ``alembic revision
--autogenerate``), it works on the template schema, a real schema named like the placeholder,
``tenant``, which holds no tenant's rows: autogenerate compares the models with it, and writes
operations on the placeholder, which each tenant's migration translates. Each
tenant keeps its own ``alembic_version`` table in its own place, so a run that stopped part way
is finished by the next one: every tenant goes from where it is.

Alembic keeps its ``context`` and ``op`` as module globals, so tenants migrate in worker
processes (``jobs``), never in threads.
"""

from __future__ import annotations

import copy
import hashlib
import multiprocessing
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema

from .placement import TENANT_SCHEMA, Placement, Strategy
from .storage import ddl_translate_map
from .urls import sync_url

__all__ = [
    "PLACEMENT_ATTRIBUTE",
    "TenantMigration",
    "migrate_tenant",
    "migrate_tenants",
    "run_tenant_migrations",
]

PLACEMENT_ATTRIBUTE = "fastapi_tenancy.placement"
"""Key of ``Config.attributes`` under which the runner names the tenant's place to env.py."""

Status = Literal["migrated", "current", "failed"]


@dataclass(frozen=True, slots=True)
class TenantMigration:
    """What one tenant's migration did: from which revision to which, or why it failed."""

    key: str
    status: Status
    before: str | None
    after: str | None
    seconds: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    key: str
    placement: Placement
    url: str
    config_file: str
    revision: str


def run_tenant_migrations(metadata: MetaData | None = None) -> None:
    """The body of a tenant migration environment's ``env.py``: configure Alembic for the
    tenant the runner names (its schema translated, its own version table) and run the
    migrations in the runner's transaction; without a runner, on the template schema."""
    from alembic import context

    config = context.config
    placement = config.attributes.get(PLACEMENT_ATTRIBUTE)
    connection = config.attributes.get("connection")
    if placement is not None and connection is not None:
        _configure_and_run(context, connection, placement, metadata)
        return
    template = Placement(Strategy.SCHEMA, schema=TENANT_SCHEMA)
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=metadata,
            version_table_schema=TENANT_SCHEMA,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url or "", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if conn.dialect.name != "sqlite":
                conn.execute(CreateSchema(TENANT_SCHEMA, if_not_exists=True))
                conn.commit()
            _configure_and_run(context, conn, template, metadata, own_transaction=True)
    finally:
        engine.dispose()


def _configure_and_run(
    context: Any,
    connection: Connection,
    placement: Placement,
    metadata: MetaData | None,
    *,
    own_transaction: bool = False,
) -> None:
    translate = ddl_translate_map(connection, placement)
    translated = connection.execution_options(schema_translate_map=translate)
    if placement.schema != TENANT_SCHEMA:
        event.listen(translated, "before_execute", _alembic_ddl_placed(placement), retval=True)
    context.configure(
        connection=translated,
        target_metadata=metadata,
        version_table_schema=placement.schema,
        include_schemas=True,
        include_name=_only_tenant_tables,
    )
    if own_transaction:
        with context.begin_transaction():
            context.run_migrations()
    else:
        context.run_migrations()


def _alembic_ddl_placed(placement: Placement) -> Any:
    """Alembic writes the schema of its ``ALTER TABLE`` statements (``op.add_column``,
    ``op.alter_column``, ...) as given, past the schema translation: give those statements the
    tenant's schema before they are compiled."""
    from alembic.ddl.base import AlterTable

    def placed(conn: Any, element: Any, multiparams: Any, params: Any, options: Any) -> Any:
        if isinstance(element, AlterTable) and element.schema == TENANT_SCHEMA:
            element = copy.copy(element)
            element.schema = placement.schema
        return element, multiparams, params

    return placed


def _only_tenant_tables(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate compares the tenant schema's tables only (the placeholder, reflected as
    the template), never the shared ones."""
    if type_ == "schema":
        return name == TENANT_SCHEMA
    return True


def migrate_tenant(
    key: str,
    placement: Placement,
    *,
    url: str,
    config_file: str | Path,
    revision: str = "head",
) -> TenantMigration:
    """Migrate one tenant to ``revision``, in one transaction under the tenant's lock; never
    raises for the migration's own failure (it is reported)."""
    return _run_job(_Job(key, placement, url, str(config_file), revision))


def migrate_tenants(
    tenants: Iterable[tuple[str, Placement]],
    *,
    url: str,
    config_file: str | Path,
    revision: str = "head",
    jobs: int = 1,
    progress: Callable[[TenantMigration], None] | None = None,
) -> list[TenantMigration]:
    """Migrate every tenant of ``tenants`` (spelled key and placement) placed in a schema or
    database of its own, ``jobs`` at a time (worker processes when more than one); the app's
    database is ``url`` (with its password). Tenants in shared tables are left to the app's own
    migrations. ``progress`` hears each tenant's result as it comes."""
    work = [
        _Job(key, placement, url, str(config_file), revision)
        for key, placement in tenants
        if placement.strategy is not Strategy.SHARED
    ]
    results: list[TenantMigration] = []

    def heard(result: TenantMigration) -> None:
        results.append(result)
        if progress is not None:
            progress(result)

    if jobs <= 1 or len(work) <= 1:
        for job in work:
            heard(_run_job(job))
    else:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn) as pool:
            futures = [pool.submit(_run_job, job) for job in work]
            for future in as_completed(futures):
                heard(future.result())
    order = {job.key: index for index, job in enumerate(work)}
    return sorted(results, key=lambda result: order[result.key])


_ENGINES: dict[str, Engine] = {}


def _engine(url: str) -> Engine:
    """One engine per database for the life of a worker, without a pool: each tenant's
    migration has a connection of its own."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = create_engine(url, poolclass=NullPool)
    return engine


def _run_job(job: _Job) -> TenantMigration:
    from alembic import command
    from alembic.config import Config
    from alembic.migration import MigrationContext

    started = time.perf_counter()
    placement = job.placement
    url = job.url
    if placement.strategy is Strategy.DATABASE and placement.url is not None:
        url = sync_url(placement.url)
    before: str | None = None
    try:
        with _engine(url).connect() as connection:
            _lock(connection, job.key, placement)
            translated = connection.execution_options(
                schema_translate_map=ddl_translate_map(connection, placement)
            )
            versions = {"version_table_schema": placement.schema}
            before = MigrationContext.configure(translated, opts=versions).get_current_revision()
            config = Config(job.config_file)
            config.attributes["connection"] = connection
            config.attributes[PLACEMENT_ATTRIBUTE] = placement
            command.upgrade(config, job.revision)
            after = MigrationContext.configure(translated, opts=versions).get_current_revision()
            connection.commit()
    except Exception as error:  # reported per tenant; the others go on
        return TenantMigration(
            job.key,
            "failed",
            before,
            None,
            time.perf_counter() - started,
            error=_one_line(error),
        )
    status: Status = "current" if after == before else "migrated"
    return TenantMigration(job.key, status, before, after, time.perf_counter() - started)


_LOCK_WAIT = 24 * 3600  # MariaDB's GET_LOCK has no "forever"; a day is as good


def _lock(connection: Connection, key: str, placement: Placement) -> None:
    """Hold the tenant's migration lock until the transaction ends (PostgreSQL) or the
    connection closes (MariaDB, MySQL): two runs never migrate one tenant at once."""
    name = f"fastapi_tenancy.migrate:{placement.schema or placement.url}"
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name}
        )
    elif dialect in ("mysql", "mariadb"):
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()
        taken = connection.execute(
            text("SELECT GET_LOCK(:name, :wait)"), {"name": f"ftm:{digest}", "wait": _LOCK_WAIT}
        ).scalar()
        if taken != 1:
            raise RuntimeError(f"the migration lock of {name} was not taken in {_LOCK_WAIT} s")


def _one_line(error: BaseException) -> str:
    text_ = " ".join(str(error).split())
    first = text_.split(" [SQL:")[0]
    return f"{type(error).__name__}: {first}"[:300]
