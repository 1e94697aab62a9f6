"""Alembic across tenant schemas and databases: each tenant migrated on its own, a failure of
one reported while the others are migrated, a second run finishing what the first left, and
two runs never migrating one tenant at once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from isolation_support import write_environment
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.pool import NullPool
from tenant_databases import tenant_database_url

from fastapi_tenancy.isolation import Isolation, Placement, Strategy
from fastapi_tenancy.isolation.migrations import migrate_tenant, migrate_tenants
from fastapi_tenancy.isolation.storage import create_storage, drop_storage


@pytest.fixture
def tenants(database: Any, engine: Engine, tmp_path: Path) -> Any:
    """Three tenants: acme and globex in schemas of their own (a database each on SQLite),
    initech in a database of its own; their places made, and dropped afterwards."""
    prefix = f"{database.name or 'mig'}_"
    isolation = Isolation(
        schema_prefix=prefix, database_url=tenant_database_url(database, tmp_path, prefix)
    )
    own = Strategy.DATABASE if database.backend == "sqlite" else Strategy.SCHEMA
    placed = [
        ("acme", isolation.placement("acme", own)),
        ("globex", isolation.placement("globex", own)),
        ("initech", isolation.placement("initech", Strategy.DATABASE)),
        ("umbrella", isolation.shared),
    ]
    for _, placement in placed:
        create_storage(engine, placement, [])
    yield placed
    for _, placement in placed:
        drop_storage(engine, placement)


def connect(engine: Engine, placement: Placement) -> Any:
    if placement.url is not None:
        own = create_engine(placement.url, poolclass=NullPool)
        return own.connect()
    return engine.connect().execution_options(schema_translate_map=placement.translate_map)


def revision_of(engine: Engine, placement: Placement) -> str | None:
    with connect(engine, placement) as conn:
        table = "alembic_version"
        if not inspect(conn).has_table(table, schema=placement.schema):
            return None
        qualified = f"{placement.schema}.{table}" if placement.schema else table
        return conn.execute(text(f"SELECT version_num FROM {qualified}")).scalar()  # noqa: S608


def test_a_failed_tenant_is_reported_and_the_others_are_migrated(
    tenants: Any, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    ini = write_environment(tmp_path, db_url)
    first = migrate_tenants(tenants, url=db_url, config_file=ini, revision="0001")
    assert [(r.key, r.status, r.after) for r in first] == [
        ("acme", "migrated", "0001"),
        ("globex", "migrated", "0001"),
        ("initech", "migrated", "0001"),
    ], "shared tenants are left to the app's own migrations"

    globex = dict(tenants)["globex"]
    with connect(engine, globex) as conn:  # globex's data breaks the next revision
        for _ in range(2):
            conn.execute(
                text(
                    f"INSERT INTO {globex.schema + '.' if globex.schema else ''}mig_doc "  # noqa: S608
                    "(tenant_id, title) VALUES ('globex', 'same')"
                )
            )
        conn.commit()

    second = migrate_tenants(tenants, url=db_url, config_file=ini, jobs=2)
    by_key = {r.key: r for r in second}
    assert by_key["acme"].status == by_key["initech"].status == "migrated", second
    assert by_key["globex"].status == "failed"
    assert by_key["globex"].before == "0001"
    assert by_key["globex"].after is None
    assert by_key["globex"].error
    assert revision_of(engine, globex) == "0001"
    assert revision_of(engine, dict(tenants)["acme"]) == "0002"
    for _, placement in tenants[:3]:  # the ALTER TABLE of 0001 reached each tenant's own table
        with connect(engine, placement) as conn:
            columns = inspect(conn).get_columns("mig_doc", schema=placement.schema)
        assert "note" in [column["name"] for column in columns]

    with connect(engine, globex) as conn:  # fixed: the next run finishes it
        conn.execute(
            text(f"DELETE FROM {globex.schema + '.' if globex.schema else ''}mig_doc")  # noqa: S608
        )
        conn.commit()
    third = migrate_tenants(tenants, url=db_url, config_file=ini, jobs=2)
    assert [(r.key, r.status, r.before, r.after) for r in third] == [
        ("acme", "current", "0002", "0002"),
        ("globex", "migrated", "0001", "0002"),
        ("initech", "current", "0002", "0002"),
    ]


@pytest.mark.backends("postgres", "mariadb")
def test_two_runs_never_migrate_one_tenant_at_once(
    tenants: Any, engine: Engine, db_url: str, tmp_path: Path, backend: str
) -> None:
    ini = write_environment(tmp_path, db_url)
    key, placement = tenants[0]
    name = f"fastapi_tenancy.migrate:{placement.schema}"
    unpooled = create_engine(db_url, poolclass=NullPool)
    holder = unpooled.connect()
    if backend == "postgres":
        holder.execute(text("SELECT pg_advisory_lock(hashtextextended(:name, 0))"), {"name": name})
    else:
        import hashlib

        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()
        holder.execute(text("SELECT GET_LOCK(:name, 10)"), {"name": f"ftm:{digest}"})
    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.append(migrate_tenant(key, placement, url=db_url, config_file=ini))
    )
    worker.start()
    worker.join(timeout=1.0)
    assert worker.is_alive(), "the run waits while another holds the tenant's lock"
    assert revision_of(engine, placement) is None
    holder.close()  # the other run ends: its lock goes with its connection
    unpooled.dispose()
    worker.join(timeout=30)
    assert [(r.status, r.after) for r in results] == [("migrated", "0002")]
