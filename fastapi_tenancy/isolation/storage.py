"""Making and dropping a tenant's own place: its schema, or its database, and its tables.

Identifiers pass through SQLAlchemy's DDL constructs and quoting (``CreateSchema``,
``DropSchema``, the dialect's identifier preparer), never string formatting.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine, Table, create_engine, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema, DropSchema

from ..exceptions import TenancyMisuse
from ..models import placed_tables
from .placement import Placement, Strategy
from .urls import sync_url

__all__ = [
    "create_storage",
    "ddl_translate_map",
    "drop_storage",
    "present_placed_tables",
    "storage_exists",
]


def create_storage(
    engine: Engine, placement: Placement, tables: Iterable[Table] | None = None
) -> None:
    """Create the schema or database of ``placement`` (if missing) and its tenant tables
    (``tables``, or every table of the placeholder schema whose shared copy is in the app's
    database), as ``CREATE ... IF NOT EXISTS``: running it again finishes what an interrupted
    run began. ``engine`` is the app's."""
    if tables is None:
        with engine.connect() as conn:
            tables = present_placed_tables(conn)
    chosen = list(tables)
    if placement.strategy is Strategy.SHARED:
        return
    if placement.strategy is Strategy.SCHEMA:
        assert_schemas_supported(engine)
        with engine.begin() as conn:
            conn.execute(CreateSchema(_name(placement.schema), if_not_exists=True))
            _create_tables(conn, placement, chosen)
        return
    url = placement.url
    if url is None:
        raise TenancyMisuse("a database placement needs a URL")
    if url.get_backend_name() != "sqlite":
        _create_database(engine, url.database)
    tenant_engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with tenant_engine.begin() as conn:
            _create_tables(conn, placement, chosen)
    finally:
        tenant_engine.dispose()


def present_placed_tables(connection: Connection) -> list[Table]:
    """The tables of the placeholder schema whose shared tables' copy exists where
    ``connection`` points: those a tenant's own place gets."""
    shared = set(inspect(connection).get_table_names())
    return [table for name, table in placed_tables().items() if name in shared]


def drop_storage(engine: Engine, placement: Placement) -> None:
    """Drop the schema or database of ``placement`` with everything in it (if it exists); a
    SQLite tenant database is a file, removed."""
    if placement.strategy is Strategy.SCHEMA:
        with engine.begin() as conn:
            conn.execute(
                DropSchema(
                    _name(placement.schema),
                    cascade=engine.dialect.name == "postgresql",
                    if_exists=True,
                )
            )
        return
    url = placement.url
    if placement.strategy is not Strategy.DATABASE or url is None:
        return
    if url.get_backend_name() != "sqlite":
        _drop_database(engine, url.database)
    elif url.database and url.database != ":memory:":
        Path(url.database).unlink(missing_ok=True)


def storage_exists(engine: Engine, placement: Placement) -> bool:
    """Whether the schema (or server database) of ``placement`` exists."""
    if placement.strategy is Strategy.SCHEMA:
        return bool(inspect(engine).has_schema(placement.schema))  # type: ignore[arg-type]
    if placement.strategy is Strategy.DATABASE and placement.url is not None:
        if placement.url.get_backend_name() == "sqlite":
            return Path(placement.url.database or "").exists()
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                return _postgres_database_exists(conn, placement.url.database)
        return bool(inspect(engine).has_schema(placement.url.database))  # type: ignore[arg-type]
    return True


def assert_schemas_supported(engine: Engine) -> None:
    """Refuse schemas on SQLite, which has none (see :class:`~.placement.Strategy`)."""
    if engine.dialect.name == "sqlite":
        raise TenancyMisuse(
            "SQLite has no schemas: place SQLite tenants in databases of their own or in the "
            "shared tables"
        )


def _create_tables(conn: Connection, placement: Placement, tables: list[Table]) -> None:
    translated = conn.execution_options(schema_translate_map=ddl_translate_map(conn, placement))
    metadatas = {table.metadata for table in tables}
    for metadata in metadatas:
        own = [table for table in tables if table.metadata is metadata]
        metadata.create_all(translated, tables=own, checkfirst=True)


def ddl_translate_map(conn: Connection, placement: Placement) -> dict[str | None, str | None]:
    """The translation of a tenant's DDL: the placeholder to its place, and, for a schema of
    its own, the shared tables to the default schema by name (a foreign key to a shared table
    must say where that table is: MariaDB would look for it in the tenant's database)."""
    if placement.schema is None:
        return dict(placement.translate_map)
    return {**placement.translate_map, None: conn.dialect.default_schema_name}


def _create_database(engine: Engine, name: str | None) -> None:
    preparer = engine.dialect.identifier_preparer
    quoted = preparer.quote_identifier(_database_name(name))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            if not _postgres_database_exists(conn, name):
                conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        else:
            conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {quoted}")


def _postgres_database_exists(conn: Connection, name: str | None) -> bool:
    """PostgreSQL has no ``CREATE DATABASE IF NOT EXISTS``: the catalog says."""
    found = conn.exec_driver_sql(
        "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": name}
    ).first()
    return found is not None


def _drop_database(engine: Engine, name: str | None) -> None:
    quoted = engine.dialect.identifier_preparer.quote_identifier(_database_name(name))
    force = " WITH (FORCE)" if engine.dialect.name == "postgresql" else ""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}{force}")


def _name(schema: str | None) -> str:
    if not schema:
        raise TenancyMisuse("a schema placement needs a schema name")
    return schema


def _database_name(name: str | None) -> str:
    if not name:
        raise TenancyMisuse("a tenant database URL must name its database")
    return name
