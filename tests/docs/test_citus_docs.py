"""docs/citus.md: its samples agree with the example app's tables.

Distributing needs a Citus coordinator: ``tests/postgres/test_citus.py`` (marked ``citus``).
"""

from __future__ import annotations

import pytest
from sqlalchemy import BigInteger, Column, Identity, MetaData, String, Table, create_engine

from docs.examples import citus_migration
from docs.examples.citus_distribute import distribute_at_start
from example_app.models import metadata
from fastapi_tenancy.models import TENANT_TABLE_INFO_KEY
from fastapi_tenancy.postgres.citus import distribution_problems


def test_the_example_apps_tables_have_nothing_citus_would_refuse() -> None:
    assert distribution_problems(metadata) == []


def test_the_migration_names_every_table_of_the_example_app_as_it_is() -> None:
    tenant = {
        t.name: t.info[TENANT_TABLE_INFO_KEY]
        for t in metadata.sorted_tables
        if TENANT_TABLE_INFO_KEY in t.info
    }
    shared = {t.name for t in metadata.sorted_tables if TENANT_TABLE_INFO_KEY not in t.info}
    assert tenant == citus_migration.TENANT_TABLES
    assert set(citus_migration.REFERENCE_TABLES) == shared


def test_distributing_at_start_stops_on_a_problem_before_creating_anything() -> None:
    metadata = MetaData()
    Table(
        "projects",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("tenant_id", String(63), nullable=False),
        info={TENANT_TABLE_INFO_KEY: "tenant_id"},
    )
    engine = create_engine("sqlite://")
    with pytest.raises(SystemExit, match="citus_key_without_tenant"):
        distribute_at_start(engine, metadata)
    with engine.connect() as conn:
        assert not engine.dialect.has_table(conn, "projects")
