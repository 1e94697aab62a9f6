"""docs/isolation.md: its app serves a shared tenant and a tenant in its own schema (a database
of its own on SQLite) through the same routes, and its env.py migrates a tenant's own place."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect
from sqlalchemy.engine import URL
from sqlmodel import Session, select

from docs.examples.isolation_app import (
    Contract,
    Plan,
    create_app,
    make_tenancy,
    strategies_registry,
)
from fastapi_tenancy import TENANT_SCHEMA, Strategy
from fastapi_tenancy.isolation.migrations import migrate_tenant
from fastapi_tenancy.isolation.storage import create_storage, drop_storage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def placed(database: Any, engine: Engine, tmp_path: Path, create_tables: Any) -> Any:
    """The page's app on the test's database; every place it makes dropped afterwards."""
    shared = [t for t in strategies_registry.metadata.sorted_tables if t.schema != TENANT_SCHEMA]
    create_tables(engine, *shared)
    prefix = f"{database.name or 'docs'}_"

    def database_url(key: str, record: Any) -> URL:
        if database.backend == "sqlite":
            return URL.create("sqlite", database=str(tmp_path / f"{key}.sqlite3"))
        return database.server_url.set(database=f"{prefix}db_{key}")

    tenancy = make_tenancy(engine, schema_prefix=prefix, database_url=database_url)
    placed_tables = [t for t in strategies_registry.metadata.sorted_tables if t.schema]
    create_tables(
        engine.execution_options(schema_translate_map={TENANT_SCHEMA: None}), *placed_tables
    )
    with Session(engine) as session:
        session.add(Plan(name="pro"))
        session.commit()
    yield tenancy
    assert tenancy.isolation is not None
    tenancy.isolation.engines.dispose_all()
    for strategy in (Strategy.SCHEMA, Strategy.DATABASE):
        if database.backend != "sqlite" or strategy is Strategy.DATABASE:
            drop_storage(engine, tenancy.isolation.placement("globex", strategy))


def test_the_same_routes_serve_a_shared_tenant_and_one_in_its_own_place(
    placed: Any, engine: Engine, backend: str
) -> None:
    own = "database" if backend == "sqlite" else "schema"
    placed.tenants.create("acme")
    placed.tenants.create("globex", isolation=own)
    client = TestClient(create_app(placed))
    for key in ("acme", "globex"):
        answer = client.post(
            "/contracts", json={"title": f"{key} lease"}, headers={"X-Tenant-ID": key}
        )
        assert answer.status_code == 201, answer.text
    for key in ("acme", "globex"):
        answer = client.get("/contracts", headers={"X-Tenant-ID": key})
        assert [c["title"] for c in answer.json()] == [f"{key} lease"]
        plans = client.get("/plans", headers={"X-Tenant-ID": key}).json()
        assert [p["name"] for p in plans] == ["pro"]
    with Session(engine.execution_options(schema_translate_map={TENANT_SCHEMA: None})) as session:
        shared = session.exec(select(Contract.tenant_id)).all()
    assert shared == ["acme"], "globex's contract is in its own place, not the shared tables"

    placed.tenants.move("globex", "shared")
    answer = client.get("/contracts", headers={"X-Tenant-ID": "globex"})
    assert [c["title"] for c in answer.json()] == ["globex lease"]


def test_the_env_py_migrates_a_tenants_own_place(
    placed: Any, engine: Engine, db_url: str, tmp_path: Path, backend: str
) -> None:
    scripts = tmp_path / "tenant_migrations"
    (scripts / "versions").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "examples" / "isolation_env.py", scripts / "env.py")
    (scripts / "versions" / "0001_contracts.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\n\nrevision = '0001'\n"
        "down_revision = None\n\n\ndef upgrade():\n"
        "    op.create_table('strategies_contract',\n"
        "        sa.Column('id', sa.Integer, primary_key=True),\n"
        "        sa.Column('tenant_id', sa.String(63), nullable=False),\n"
        "        sa.Column('title', sa.String(100), nullable=False), schema='tenant')\n"
    )
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {scripts}\n")
    assert placed.isolation is not None
    strategy = Strategy.DATABASE if backend == "sqlite" else Strategy.SCHEMA
    placement = placed.isolation.placement("globex", strategy)
    create_storage(engine, placement, [])
    result = migrate_tenant("globex", placement, url=db_url, config_file=ini)
    assert (result.status, result.after) == ("migrated", "0001"), result
    if placement.schema is not None:
        names = inspect(engine).get_table_names(schema=placement.schema)
        assert sorted(names) == ["alembic_version", "strategies_contract"]
