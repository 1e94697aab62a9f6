"""A tenant's own place through its life, on every database that has it: made when the tenant is
created (and migrated), dropped when it is purged, and its rows copied, none lost, when it moves
between the shared tables, a schema and a database of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from isolation_models import PLACED, SHARED, Comment, Doc, Member, Organization
from sqlalchemy import Engine, inspect
from sqlmodel import select
from tenant_databases import tenant_database_url

from fastapi_tenancy import (
    HeaderResolver,
    Tenancy,
    TenancyMisuse,
    TenantMigrationFailed,
    TenantNotFound,
    TenantRegistry,
)
from fastapi_tenancy.isolation import Isolation, Strategy
from fastapi_tenancy.isolation.storage import drop_storage, storage_exists


@pytest.fixture
def lifecycle(database: Any, engine: Engine, tmp_path: Path, create_tables: Any) -> Any:
    """A Tenancy whose tenants table names each tenant's strategy; every place it made is
    dropped afterwards."""
    create_tables(engine, *SHARED)
    engine.update_execution_options(schema_translate_map={"tenant": None})
    create_tables(engine, *PLACED)
    prefix = f"{database.name or 'life'}_"
    made: list[Tenancy] = []

    def make(**options: Any) -> Tenancy:
        isolation = Isolation(
            field="isolation",
            schema_prefix=prefix,
            database_url=tenant_database_url(database, tmp_path, prefix),
            **options,
        )
        tenancy = Tenancy(
            engine,
            resolvers=[HeaderResolver()],
            registry=TenantRegistry(Organization),
            isolation=isolation,
        )
        made.append(tenancy)
        return tenancy

    yield make
    for tenancy in made:
        isolation = tenancy.isolation
        assert isolation is not None
        isolation.engines.dispose_all()
        strategies = [Strategy.DATABASE] + (
            [Strategy.SCHEMA] if database.backend != "sqlite" else []
        )
        for strategy in strategies:
            for key in ("acme", "globex", "initech"):
                drop_storage(engine, isolation.placement(key, strategy))


def own_strategies(backend: str) -> list[str]:
    return ["database"] if backend == "sqlite" else ["schema", "database"]


def seed(tenancy: Tenancy, key: str, docs: int = 3) -> None:
    with tenancy.session(tenant=key) as session:
        for n in range(docs):
            doc = Doc(title=f"{key}-doc-{n}")
            session.add_all([doc, Comment(body=f"{key}-comment-{n}", doc=doc)])
        session.add(Member(email=f"someone@{key}.test"))
        session.commit()


def contents(tenancy: Tenancy, key: str) -> dict[str, Any]:
    """What tenant ``key`` sees: its documents with their comments, ids and all, and members."""
    with tenancy.session(tenant=key) as session:
        docs = session.exec(select(Doc).order_by(Doc.title)).all()
        return {
            "docs": [(d.id, d.title, sorted(c.body for c in d.comments)) for d in docs],
            "members": sorted(m.email for m in session.exec(select(Member))),
        }


def test_creating_a_tenant_makes_its_place_and_purging_drops_it(
    lifecycle: Any, engine: Engine, backend: str
) -> None:
    tenancy = lifecycle()
    assert tenancy.isolation is not None
    for strategy in own_strategies(backend):
        key = {"schema": "globex", "database": "initech"}[strategy]
        tenancy.tenants.create(key, isolation=strategy)
        placement = tenancy.placement_of(key)
        assert placement is not None
        assert placement.strategy.value == strategy
        assert storage_exists(engine, placement)
        seed(tenancy, key)
        assert len(contents(tenancy, key)["docs"]) == 3

        tenancy.tenants.suspend(key)
        report = tenancy.tenants.purge(key)
        assert report.rows["iso_doc"] == 3
        assert report.rows["iso_member"] == 1
        assert not storage_exists(engine, placement)
        with pytest.raises(TenantNotFound):
            tenancy.tenants.get(key)
    with engine.connect() as conn:  # nothing of theirs was ever in the shared tables
        assert conn.execute(select(Doc.title)).all() == []


@pytest.mark.parametrize(
    "path",
    [
        ("shared", "schema", "database", "shared"),
        ("shared", "database", "schema", "shared"),
    ],
    ids=["via-schema-first", "via-database-first"],
)
def test_a_tenant_moves_between_strategies_and_loses_no_row(
    lifecycle: Any, engine: Engine, backend: str, path: tuple[str, ...]
) -> None:
    tenancy = lifecycle()
    if backend == "sqlite":
        path = tuple(step for step in path if step != "schema")
    tenancy.tenants.create("acme")
    tenancy.tenants.create("globex")
    seed(tenancy, "acme", docs=2)  # shared neighbours whose ids come first
    seed(tenancy, "globex", docs=40)
    before = contents(tenancy, "globex")
    neighbour = contents(tenancy, "acme")
    suspended_during_copy: list[bool] = []

    def heard(count: int) -> None:
        suspended_during_copy.append(not tenancy.tenants.get("globex").active)

    for strategy in path[1:]:
        report = tenancy.tenants.move("globex", strategy, progress=heard)
        assert report.rows == {"iso_doc": 40, "iso_comment": 40}
        assert tenancy.tenants.get("globex").isolation == strategy
        assert tenancy.tenants.get("globex").active
        after = contents(tenancy, "globex")
        if strategy == "shared":  # new ids there; everything else the same
            assert [d[1:] for d in after["docs"]] == [d[1:] for d in before["docs"]]
        else:
            assert after == before
        assert after["members"] == before["members"]
        with tenancy.session(tenant="globex") as session:  # the tenant goes on writing
            session.add(Doc(title="written-after-the-move"))
            session.commit()
            session.delete(
                session.exec(select(Doc).where(Doc.title == "written-after-the-move")).one()
            )
            session.commit()
    assert suspended_during_copy
    assert all(suspended_during_copy)
    assert contents(tenancy, "acme") == neighbour
    with engine.connect() as conn:  # the shared tables hold globex's rows once, not twice
        titles = conn.execute(select(Doc.title).where(Doc.tenant_id == "globex")).scalars()
        assert len(titles.all()) == 40


def test_a_failed_migration_creates_no_tenant(
    lifecycle: Any, engine: Engine, tmp_path: Path, db_url: str, backend: str
) -> None:
    scripts = tmp_path / "broken"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(
        "from fastapi_tenancy.isolation.migrations import run_tenant_migrations\n"
        "run_tenant_migrations()\n"
    )
    (scripts / "versions" / "0001_broken.py").write_text(
        "from alembic import op\nrevision = '0001'\ndown_revision = None\n\n"
        "def upgrade():\n    op.execute('SELECT * FROM no_such_table_anywhere')\n"
    )
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {scripts}\n")
    tenancy = lifecycle(migrations=ini)
    strategy = own_strategies(backend)[0]
    with pytest.raises(TenantMigrationFailed, match="could not be migrated"):
        tenancy.tenants.create("globex", isolation=strategy)
    with pytest.raises(TenantNotFound):
        tenancy.tenants.get("globex")
    assert tenancy.isolation is not None
    placement = tenancy.isolation.placement("globex", Strategy(strategy))
    assert not storage_exists(engine, placement)


@pytest.mark.backends("postgres", "mariadb")
def test_a_tenant_in_its_own_schema_is_not_renamed_in_place(lifecycle: Any) -> None:
    tenancy = lifecycle()
    tenancy.tenants.create("globex", isolation="schema")
    tenancy.tenants.suspend("globex")
    with pytest.raises(TenancyMisuse, match="move it to the shared tables, rename it"):
        tenancy.tenants.rename("globex", "globex-two")


def test_creating_a_tenant_with_its_migrations_migrates_its_place(
    lifecycle: Any, engine: Engine, tmp_path: Path, backend: str
) -> None:
    scripts = tmp_path / "good"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(
        "from fastapi_tenancy.isolation.migrations import run_tenant_migrations\n"
        "run_tenant_migrations()\n"
    )
    (scripts / "versions" / "0001_docs.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\nrevision = '0001'\n"
        "down_revision = None\n\ndef upgrade():\n"
        "    op.create_table('iso_doc', sa.Column('id', sa.Integer, primary_key=True),\n"
        "        sa.Column('tenant_id', sa.String(64), nullable=False),\n"
        "        sa.Column('title', sa.String(50), nullable=False), schema='tenant')\n"
    )
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {scripts}\n")
    tenancy = lifecycle(migrations=ini)
    strategy = own_strategies(backend)[0]
    tenancy.tenants.create("globex", isolation=strategy)
    placement = tenancy.placement_of("globex")
    assert placement is not None
    with tenancy.session(tenant="globex") as session:
        session.add(Doc(title="migrated"))
        session.commit()
        assert [d.title for d in session.exec(select(Doc))] == ["migrated"]
    if placement.schema is not None:
        tables = inspect(engine).get_table_names(schema=placement.schema)
        assert sorted(tables) == ["alembic_version", "iso_doc"]


@pytest.mark.backends("mariadb")
def test_a_move_between_two_names_of_one_database_is_refused(
    database: Any, engine: Engine, create_tables: Any
) -> None:
    create_tables(engine, *SHARED)
    prefix = f"{database.name}_"
    tenancy = Tenancy(
        engine,
        resolvers=[HeaderResolver()],
        registry=TenantRegistry(Organization),
        isolation=Isolation(
            field="isolation",
            schema_prefix=prefix,
            database_url=lambda key, record: database.url.set(database=f"{prefix}{key}"),
        ),
    )
    tenancy.tenants.create("globex", isolation="schema")
    try:
        with pytest.raises(TenancyMisuse, match="one and the same database"):
            tenancy.tenants.move("globex", "database")
        assert tenancy.tenants.get("globex").isolation == "schema"
    finally:
        placement = tenancy.placement_of("globex")
        assert placement is not None
        drop_storage(engine, placement)


@pytest.mark.anyio
async def test_an_async_app_creates_moves_and_purges_a_tenant_placed_apart(
    database: Any, engine: Engine, async_engine: Any, tmp_path: Path, create_tables: Any
) -> None:
    create_tables(engine, *SHARED)
    engine.update_execution_options(schema_translate_map={"tenant": None})
    create_tables(engine, *PLACED)
    prefix = f"{database.name or 'alife'}_"
    isolation = Isolation(
        field="isolation",
        schema_prefix=prefix,
        database_url=tenant_database_url(database, tmp_path, prefix, is_async=True),
    )
    tenancy = Tenancy(
        async_engine,
        resolvers=[HeaderResolver()],
        registry=TenantRegistry(Organization),
        isolation=isolation,
    )
    tenants = tenancy.async_tenants
    path = ["database", "shared"] if database.backend == "sqlite" else ["schema", "database"]
    try:
        await tenants.create("globex", isolation=path[0])
        organization = await tenants.get("globex")
        async with tenancy.async_session(tenant=organization) as session:
            session.add_all([Doc(title=f"globex-doc-{n}") for n in range(5)])
            await session.commit()
        report = await tenants.move("globex", path[1])
        assert report.rows["iso_doc"] == 5
        organization = await tenants.get("globex")
        assert organization.isolation == path[1]
        async with tenancy.async_session(tenant=organization) as session:
            titles = sorted(d.title for d in (await session.exec(select(Doc))).all())
        assert titles == [f"globex-doc-{n}" for n in range(5)]
        await tenants.suspend("globex")
        purged = await tenants.purge("globex")
        assert purged.rows["iso_doc"] == 5
        with pytest.raises(TenantNotFound):
            await tenants.get("globex")
    finally:
        await isolation.engines.aclose()
        for strategy in (Strategy.SCHEMA, Strategy.DATABASE):
            if database.backend != "sqlite" or strategy is Strategy.DATABASE:
                drop_storage(
                    engine,
                    Isolation(
                        schema_prefix=prefix,
                        database_url=tenant_database_url(database, tmp_path, prefix),
                    ).placement("globex", strategy),
                )
