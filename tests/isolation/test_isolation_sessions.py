"""Sessions of tenants placed apart: pooled connections carry no tenant's schema into the next
use, async sessions are placed like sync ones, SQLite refuses schemas, long names are refused,
and the engines of database tenants stay within their bound under a thousand tenants."""

from __future__ import annotations

from typing import Any

import pytest
from isolation_models import PLACED, Comment, Doc, Member
from isolation_support import PlaceTenants, single_connection_engine
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from fastapi_tenancy import HeaderResolver, Tenancy, TenancyMisuse
from fastapi_tenancy.isolation import EngineCache, Isolation, Strategy
from fastapi_tenancy.isolation.storage import create_storage


def titles(session: Any) -> list[str]:
    return sorted(doc.title for doc in session.exec(select(Doc)))


@pytest.mark.backends("postgres", "mariadb")
def test_a_pooled_connection_carries_no_schema_into_the_next_tenants_use(
    place_tenants: PlaceTenants, database: Any
) -> None:
    place_tenants({"acme": "shared", "globex": "schema"})
    one = single_connection_engine(database)
    try:
        tenancy = Tenancy(
            one,
            resolvers=[HeaderResolver()],
            isolation=Isolation(
                choose=lambda key, record: "schema" if key == "globex" else "shared",
                schema_prefix=f"{database.name}_",
            ),
        )
        for turn in ("globex", "acme", "globex", "acme"):
            with tenancy.session(tenant=turn) as session:
                assert titles(session) == [f"{turn}-doc"]
                session.commit()
            with one.connect() as conn:  # the same pooled connection, used raw
                rows = conn.execute(select(Doc.title)).scalars().all()
                assert rows == ["acme-doc"], "the raw use reaches the shared tables only"
                if database.backend == "postgres":
                    path = conn.execute(text("SHOW search_path")).scalar_one()
                    assert "globex" not in path
                else:
                    assert conn.execute(text("SELECT DATABASE()")).scalar_one() == database.name
        assert one.pool.checkedin() == 1
    finally:
        one.dispose()


@pytest.mark.anyio
async def test_async_sessions_are_placed_like_sync_ones(
    place_tenants: PlaceTenants, backend: str, async_engine: AsyncEngine
) -> None:
    strategies = {"acme": "database", "globex": "shared"}
    if backend != "sqlite":
        strategies["initech"] = "schema"
    tenancy = place_tenants(strategies, async_engine=async_engine)
    assert tenancy.isolation is not None
    try:
        for key in strategies:
            async with tenancy.async_session(tenant=key) as session:
                docs = (await session.exec(select(Doc))).all()
                assert [(d.tenant_id, d.title) for d in docs] == [(key, f"{key}-doc")]
                comments = (await session.exec(select(Comment).join(Doc))).all()
                assert [c.body for c in comments] == [f"{key}-comment"]
                members = (await session.exec(select(Member))).all()
                assert [m.email for m in members] == [f"someone@{key}.test"]
    finally:
        await tenancy.isolation.engines.aclose()


@pytest.mark.backends("sqlite")
def test_sqlite_refuses_a_schema_of_its_own_and_says_what_to_use(
    place_tenants: PlaceTenants,
) -> None:
    with pytest.raises(TenancyMisuse, match=r"SQLite has no schemas.*databases of their own"):
        place_tenants({"globex": "schema"})


def test_a_schema_name_too_long_for_the_database_is_refused_not_truncated() -> None:
    isolation = Isolation(schema_prefix="tenant_")
    with pytest.raises(TenancyMisuse, match="longer than 63 bytes"):
        isolation.placement("a" * 60, Strategy.SCHEMA)
    assert isolation.placement("a" * 56, Strategy.SCHEMA).schema == "tenant_" + "a" * 56


@pytest.mark.backends("sqlite")
def test_the_engine_cache_holds_its_bound_under_a_thousand_tenants(
    engine: Any, tmp_path: Any, create_tables: Any
) -> None:
    opened: list[Any] = []
    disposed: list[Any] = []

    def watch(new_engine: Any) -> None:
        opened.append(new_engine)
        event.listen(new_engine, "engine_disposed", disposed.append)

    cache = EngineCache(max_engines=16, on_engine=watch)
    isolation = Isolation(
        default="database",
        database_url=lambda key, record: f"sqlite:///{tmp_path}/{key}.sqlite3",
        engines=cache,
    )
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], isolation=isolation)
    keys = [f"t{n}" for n in range(1000)]
    for key in keys:
        placement = tenancy.placement_of(key)
        assert placement is not None
        create_storage(engine, placement, PLACED)
        with tenancy.session(tenant=key) as session:
            session.add(Doc(title=f"{key}-doc"))
            session.commit()
        assert len(cache) <= 16
    assert len(opened) == 1000
    assert len(disposed) == 1000 - 16
    # Every tenant kept its row in its own file, read back through a fresh engine.
    for key in ("t0", "t500", "t999"):
        with tenancy.session(tenant=key) as session:
            assert titles(session) == [f"{key}-doc"]
    cache.dispose_all()
