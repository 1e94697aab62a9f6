"""A tenant's own place through its life: made (and migrated) when the tenant is created, dropped
when it is purged, and its rows copied when it moves between strategies.

Sync functions on a sync engine: an async app's lifecycle runs them in a worker thread, on a
sync engine of the same database (the DDL and Alembic are sync).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from sqlalchemy import Engine, Integer, Table, create_engine, func, select, text
from sqlalchemy.pool import NullPool

from ..exceptions import TenancyMisuse, TenantMigrationFailed
from ..models import placed_tables
from .migrations import migrate_tenant
from .placement import Isolation, Placement, Strategy
from .storage import create_storage, drop_storage, storage_exists
from .urls import sync_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ..tenancy import Tenancy

__all__ = [
    "ddl_engine",
    "isolation_of",
    "move_places",
    "placed_only",
    "provide",
    "release",
    "release_async",
    "restart_sequences",
]


def isolation_of(tenancy: Tenancy) -> Isolation:
    """The tenancy's isolation; a clear error when it has none."""
    if tenancy.isolation is None:
        raise TenancyMisuse("this Tenancy places no tenant apart: give it isolation=Isolation()")
    return tenancy.isolation


@contextmanager
def ddl_engine(tenancy: Tenancy) -> Iterator[Engine]:
    """A sync engine of the app's database: its own, or one made for an async app's."""
    engine = tenancy.engine
    if isinstance(engine, Engine):
        yield engine
        return
    made = create_engine(sync_url(engine.url), poolclass=NullPool)
    try:
        yield made
    finally:
        made.dispose()


def provide(
    tenancy: Tenancy, spelled: str, placement: Placement, tables: list[Table] | None = None
) -> bool:
    """Make ``placement``'s schema or database with its tables (migrated with the isolation's
    ``migrations`` when given, else ``tables`` made with ``create_all``: by default those whose
    shared copy is in the app's database); whether it is new (so the caller drops it if the
    tenant's creation fails after all). Raises :class:`TenantMigrationFailed`."""
    if placement.strategy is Strategy.SHARED:
        return False
    isolation = isolation_of(tenancy)
    with ddl_engine(tenancy) as engine:
        existed = storage_exists(engine, placement)
        if isolation.migrations is None:
            create_storage(engine, placement, tables)
            return not existed
        create_storage(engine, placement, [])
        result = migrate_tenant(
            spelled, placement, url=sync_url(engine.url), config_file=isolation.migrations
        )
        if result.status == "failed":
            if not existed:
                drop_storage(engine, placement)
            raise TenantMigrationFailed(
                f"tenant {spelled}'s {placement.strategy.value} could not be migrated: "
                f"{result.error}"
            )
    return not existed


def release(tenancy: Tenancy, placement: Placement) -> None:
    """Drop ``placement``'s schema or database; a sync app's engines of it are forgotten (an
    async app awaits :func:`forget_engines` on its event loop)."""
    if placement.strategy is Strategy.SHARED:
        return
    isolation = isolation_of(tenancy)
    with ddl_engine(tenancy) as engine:
        drop_storage(engine, placement)
    if placement.url is not None and not tenancy.is_async:
        isolation.engines.forget(placement.url)


async def release_async(tenancy: Tenancy, placement: Placement) -> None:
    """:func:`release` for an async app: the DDL in a worker thread, the engines closed on
    the event loop that opened their connections."""
    await anyio.to_thread.run_sync(release, tenancy, placement)
    if placement.url is not None:
        await isolation_of(tenancy).engines.aforget(placement.url)


def move_places(
    tenancy: Tenancy, key: Any, record: Any, strategy: Strategy
) -> tuple[Placement, Placement]:
    """Where tenant ``key`` is, and where ``strategy`` would put it."""
    isolation = isolation_of(tenancy)
    source = tenancy.placement_of(key, record)
    if source is None:
        raise TenancyMisuse("this Tenancy places no tenant apart: give it isolation=Isolation()")
    target = isolation.placement(tenancy.keys.format(key), strategy, record)
    if source != target and _location(tenancy, source) == _location(tenancy, target):
        raise TenancyMisuse(
            f"tenant {key}'s {source.strategy.value} and {target.strategy.value} are one and "
            "the same database (on MariaDB and MySQL a schema is a database): a move would "
            "copy its rows onto themselves"
        )
    return source, target


def _location(tenancy: Tenancy, placement: Placement) -> tuple[Any, ...]:
    """Where ``placement``'s rows physically are: server, database and schema."""
    url = placement.url if placement.url is not None else tenancy.engine.url
    database = url.database
    schema = placement.schema
    if url.get_backend_name() in ("mysql", "mariadb") and schema is not None:
        database, schema = schema, None  # a schema is a database there
    return (url.get_backend_name(), url.host, url.port, database, schema)


def restart_sequences(tenancy: Tenancy, placement: Placement, tables: list[Table]) -> None:
    """After rows were copied into ``tables`` of ``placement`` with their ids, make
    PostgreSQL's sequences go on past them (MariaDB and SQLite do so themselves)."""
    with ddl_engine(tenancy) as engine:
        if engine.dialect.name != "postgresql":
            return
        own = (
            create_engine(sync_url(placement.url), poolclass=NullPool)
            if placement.url is not None
            else engine
        )
        try:
            with own.begin() as connection:
                _restart_sequences(connection, placement, tables)
        finally:
            if own is not engine:
                own.dispose()


def _restart_sequences(connection: Connection, placement: Placement, tables: list[Table]) -> None:
    preparer = connection.dialect.identifier_preparer
    translated = connection.execution_options(schema_translate_map=placement.translate_map)
    for table in tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer):
            continue
        column = keys[0]
        qualified = preparer.format_table(table, use_schema=False)
        if placement.schema is not None:
            qualified = f"{preparer.quote_schema(placement.schema)}.{qualified}"
        highest = translated.execute(select(func.max(column))).scalar()
        if highest is None:
            continue
        translated.execute(
            text("SELECT setval(pg_get_serial_sequence(:table, :column), :value)"),
            {"table": qualified, "column": column.name, "value": highest},
        )


def placed_only(steps: list[Any]) -> list[Any]:
    """The steps (purge or copy) of tables kept in each tenant's own place."""
    placed = set(placed_tables().values())
    return [step for step in steps if step.table in placed]
