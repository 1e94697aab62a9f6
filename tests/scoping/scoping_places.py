"""Where the scoping attacks' tenants keep their rows.

By default every tenant's rows are in the shared tables. CI runs the folder again with
``TENANCY_TEST_STRATEGY=schema`` (PostgreSQL and MariaDB) and ``=database`` (all three
databases): acme and globex then live each in a schema or database of its own, initech and
umbrella stay in the shared tables, and the models whose rows belong to one tenant are declared
in the placeholder schema (``placed()``), the others (global access, shared rows, family reads,
reference data) stay shared, as an app placing its tenants would declare them.

The attacks stay what they are; only the seeding and the unscoped oracle learn where rows are:
``place_session()`` is a plain session in one tenant's place, and each place numbers its rows
from its own base (``ID_BASE``), so an id names one row across all places, as in shared tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from key_types import ACME, GLOBEX
from sqlalchemy import Integer, Table, create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool
from sqlmodel import Session
from tenant_databases import tenant_database_url

from fastapi_tenancy import Tenancy
from fastapi_tenancy.isolation import TENANT_SCHEMA, EngineCache, Isolation, Placement, Strategy
from fastapi_tenancy.isolation.storage import create_storage, drop_storage
from fastapi_tenancy.isolation.urls import sync_url

STRATEGY = Strategy(os.environ.get("TENANCY_TEST_STRATEGY", "shared"))
"""The strategy of acme and globex in this run."""

PLACED = STRATEGY is not Strategy.SHARED
"""Whether this run places tenants apart."""

PLACED_TENANTS = (ACME, GLOBEX)
"""The tenants placed by ``STRATEGY``; every other tenant is in the shared tables."""

ID_BASE = {ACME: 100_000, GLOBEX: 200_000}
"""The first id of each placed tenant's tables, so that ids never repeat across places."""


def placed(*table_args: Any) -> tuple[Any, ...]:
    """``__table_args__`` of a model whose rows belong to one tenant: in the placeholder
    schema when this run places tenants apart (SQLite counts ids in ``sqlite_sequence``, so
    that each place can start from its base)."""
    if not PLACED:
        return table_args
    return (*table_args, {"schema": TENANT_SCHEMA, "sqlite_autoincrement": True})


def placed_key(target: str) -> str:
    """A foreign key's target (``"table.column"``) among the placed tables."""
    return f"{TENANT_SCHEMA}.{target}" if PLACED else target


def shared_tables_only(reason: str) -> pytest.MarkDecorator:
    """Skips a test of what only the shared tables can do when this run places tenants
    apart; ``reason`` says why."""
    return pytest.mark.skipif(PLACED, reason=f"tenants placed apart: {reason}")


SEND_EVENTS = ("do_execute", "do_executemany", "do_execute_no_params")
"""The dialect's hooks right before the driver, where the statements sent are recorded."""

_SENT_RECORDERS: list[Callable[..., None]] = []


def _forward_sent(*args: Any) -> None:
    for recorder in tuple(_SENT_RECORDERS):
        recorder(*args)


def _watch_tenant_engine(engine: Engine | AsyncEngine) -> None:
    """``on_engine`` of the tenants' engine caches: after the kit's own listeners (the wall's
    gate first), forward each statement sent to the recorders of ``sent_to_tenant_databases``."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    for name in SEND_EVENTS:
        event.listen(sync, name, _forward_sent)


@contextmanager
def sent_to_tenant_databases(recorder: Callable[..., None]) -> Iterator[None]:
    """Inside the block, ``recorder`` gets each statement sent to a tenant's own database, as
    a listener of ``SEND_EVENTS`` on its engine would."""
    _SENT_RECORDERS.append(recorder)
    try:
        yield
    finally:
        _SENT_RECORDERS.remove(recorder)


def sql_target(engine: Engine | AsyncEngine) -> Any:
    """What a listener of the SQL a tenant session sends listens on: ``engine``, or every
    engine (the ``Engine`` class) when tenants have databases of their own."""
    if STRATEGY is Strategy.DATABASE:
        return Engine
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


def is_placed(table: Table) -> bool:
    return table.schema == TENANT_SCHEMA


class Places:
    """The places of one test's placed tenants: made with the tables, dropped at teardown."""

    def __init__(self, database: Any, engine: Engine, tmp_path: Path) -> None:
        self.database = database
        self.engine = engine
        self.tmp_path = tmp_path
        self.prefix = f"{database.name or 'scoping'}_"
        self._isolations: dict[bool, Isolation] = {}
        self._placements: dict[Any, Placement] = {}

    def isolation(self, *, is_async: bool = False) -> Isolation:
        """The Isolation of this run for a sync or an async Tenancy (one per flavour)."""
        if is_async not in self._isolations:
            self._isolations[is_async] = Isolation(
                choose=lambda key, record: STRATEGY if key in PLACED_TENANTS else None,
                schema_prefix=self.prefix,
                database_url=tenant_database_url(
                    self.database, self.tmp_path, self.prefix, is_async=is_async
                ),
                # An async engine's pooled connections close in the loop that opened them,
                # which a test's teardown is not in: its tenant engines keep none.
                engines=EngineCache(
                    engine_options={"poolclass": NullPool} if is_async else None,
                    on_engine=_watch_tenant_engine,
                ),
            )
        return self._isolations[is_async]

    def options(self, engine: Engine | AsyncEngine) -> dict[str, Any]:
        """``Tenancy(engine, ..., **places.options(engine))``: the isolation of this run."""
        if not PLACED:
            return {}
        return {"isolation": self.isolation(is_async=isinstance(engine, AsyncEngine))}

    def placement(self, tenant_id: Any) -> Placement:
        if tenant_id not in self._placements:
            self._placements[tenant_id] = self.isolation().placement(str(tenant_id), STRATEGY)
        return self._placements[tenant_id]

    def table_creator(self, create_tables: Callable[..., None]) -> Callable[..., None]:
        """``create_tables`` that also makes the placed tables in every placed tenant's place."""
        if not PLACED:
            return create_tables

        def create(engine: Engine | AsyncEngine, *models: Any) -> None:
            for each in (engine, self.engine):
                sync = each.sync_engine if isinstance(each, AsyncEngine) else each
                sync.update_execution_options(schema_translate_map={TENANT_SCHEMA: None})
            create_tables(engine, *models)
            tables = [table for table in _tables(models) if is_placed(table)]
            for tenant_id in PLACED_TENANTS:
                placement = self.placement(tenant_id)
                create_storage(self.engine, placement, tables)
                with _place_connection(self.engine, placement) as conn:
                    _start_ids_at(conn, placement, tables, ID_BASE[tenant_id])
                    conn.commit()

        return create

    def close(self) -> None:
        """Close the tenants' engines and drop their places."""
        for isolation in self._isolations.values():
            isolation.engines.dispose_all()
        for placement in self._placements.values():
            drop_storage(self.engine, placement)


def _tables(models: Iterable[Any]) -> Iterator[Table]:
    for model in models:
        if isinstance(model, (list, tuple)):
            yield from _tables(model)
        elif isinstance(model, Table):
            yield model
        elif hasattr(model, "sorted_tables"):
            yield from model.sorted_tables
        else:
            yield model.__table__


@contextmanager
def _place_connection(engine: Engine, placement: Placement | None) -> Iterator[Connection]:
    """A connection to ``placement``'s tables (its database's, for a database tenant), or to
    the engine's own for ``None``."""
    own = engine
    if placement is not None and placement.url is not None:
        own = create_engine(sync_url(placement.url), poolclass=NullPool)
    try:
        with own.connect() as conn:
            if placement is None:
                yield conn
            else:
                yield conn.execution_options(schema_translate_map=placement.translate_map)
    finally:
        if own is not engine:
            own.dispose()


def table_name(conn: Connection, placement: Placement | None, table: Table) -> str:
    """``table`` as raw SQL names it on ``conn``, a connection of ``placement``'s."""
    preparer = conn.dialect.identifier_preparer
    name = preparer.format_table(table, use_schema=False)
    if placement is not None and placement.schema is not None:
        name = f"{preparer.quote_schema(placement.schema)}.{name}"
    return name


def _start_ids_at(conn: Connection, placement: Placement, tables: list[Table], base: int) -> None:
    for table in tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer):
            continue
        name = table_name(conn, placement, table)
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence(:table, :column), :value, false)"),
                {"table": name, "column": keys[0].name, "value": base},
            )
        elif conn.dialect.name == "sqlite":
            conn.execute(
                text("INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :value)"),
                {"table": table.name, "value": base - 1},
            )
        else:
            conn.exec_driver_sql(f"ALTER TABLE {name} AUTO_INCREMENT = {base}")


def place_of(tenancy: Tenancy, tenant_id: Any) -> Placement | None:
    """Where ``tenant_id``'s rows are under ``tenancy`` (``None``: the engine's tables, the
    shared ones)."""
    if tenancy.isolation is None:
        return None
    if tenant_id is None or tenant_id not in PLACED_TENANTS:
        return tenancy.isolation.shared
    return tenancy.placement_of(tenant_id)


@contextmanager
def place_connection(tenancy: Tenancy, tenant_id: Any = None) -> Iterator[Connection]:
    """A plain connection to the tables of ``tenant_id``'s place (see ``place_session``)."""
    engine = tenancy.engine
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    with _place_connection(sync, place_of(tenancy, tenant_id)) as conn:
        yield conn


@contextmanager
def unchecked_foreign_keys(conn: Connection) -> Iterator[None]:
    """A transaction of ``conn`` in which rows may point at rows of another place."""
    postgres = conn.dialect.name == "postgresql"
    if not postgres:  # a setting of the connection, made outside the transaction
        _foreign_keys(conn, on=False)
        conn.commit()
    with conn.begin():
        if postgres:  # a setting of the transaction
            _foreign_keys(conn, on=False)
        yield
    if not postgres:
        _foreign_keys(conn, on=True)
        conn.commit()


@contextmanager
def place_session(
    tenancy: Tenancy, tenant_id: Any = None, *, foreign_keys: bool = True
) -> Iterator[Session]:
    """A plain (unscoped, unguarded) session on the tables of ``tenant_id``'s place, the
    shared tables for ``None`` or an unplaced tenant; ``foreign_keys=False`` lets it plant a
    row pointing at another place's row. Commit it to keep what it wrote."""
    engine = tenancy.engine
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    with _place_connection(sync, place_of(tenancy, tenant_id)) as conn:
        if not foreign_keys:
            _foreign_keys(conn, on=False)
        with Session(bind=conn) as session:
            yield session
        if conn.in_transaction():
            conn.commit()  # a session joining the transaction begun above does not end it
        if not foreign_keys:
            _foreign_keys(conn, on=True)


def _foreign_keys(conn: Connection, *, on: bool) -> None:
    """Foreign key checks of ``conn`` off or back on (PostgreSQL: off for its transaction)."""
    if conn.dialect.name == "postgresql":
        if not on:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    elif conn.dialect.name == "mysql":
        conn.exec_driver_sql(f"SET foreign_key_checks = {int(on)}")
    else:
        conn.exec_driver_sql(f"PRAGMA foreign_keys = {'ON' if on else 'OFF'}")
        conn.commit()


def places_of(model: Any) -> tuple[Any, ...]:
    """The places an unscoped oracle reads ``model``'s rows (or a table's) in: the shared
    tables (``None``), and each placed tenant's for a placed model."""
    table = model if isinstance(model, Table) else model.__table__
    if PLACED and is_placed(table):
        return (None, *PLACED_TENANTS)
    return (None,)


def place_of_row(table: Table, row: Any) -> Any:
    """The place of a row of ``table`` (a mapping with its ``tenant_id``): its tenant's, or
    ``None`` for the shared tables."""
    tenant = row.get("tenant_id") if isinstance(row, dict) else row.tenant_id
    return tenant if PLACED and is_placed(table) and tenant in PLACED_TENANTS else None


UNSCOPED_READS_SHARED = shared_tables_only(
    "an unscoped session reaches the shared tables only (docs/isolation.md), and this run "
    "keeps acme's and globex's rows in places of their own"
)
"""Skips an attack on what an unscoped session does with acme's or globex's rows."""

ROWS_STAY_IN_PLACE = shared_tables_only(
    "a row of acme's own place never moves to another tenant (test_moves.py proves the refusal)"
)
"""Skips a test of moving acme's rows to another tenant."""
