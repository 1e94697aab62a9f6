"""Fixtures of the isolation tests: a Tenancy whose tenants are placed as each test says, their
schemas or databases made, and dropped when the test ends."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from isolation_models import PLACED, SHARED, Comment, Doc, Member, Plan
from isolation_support import PlaceTenants
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from tenant_databases import tenant_database_url

from fastapi_tenancy import Access, HeaderResolver, SessionScope, Tenancy
from fastapi_tenancy.isolation import EngineCache, Isolation, Strategy
from fastapi_tenancy.isolation.storage import create_storage, drop_storage


@pytest.fixture
def place_tenants(
    database: Any, engine: Engine, tmp_path: Path, create_tables: Any
) -> Iterator[PlaceTenants]:
    """``place_tenants({"acme": "shared", "globex": "schema"})``: a Tenancy on the test's
    engine placing each tenant so, with its schema or database and tables made; every other
    tenant is shared. Each tenant gets a document with one comment, and a member row."""
    prefix = f"{database.name or 'iso'}_"
    made: list[tuple[Tenancy, Any]] = []
    create_tables(engine, *SHARED)
    engine.update_execution_options(schema_translate_map={"tenant": None})
    create_tables(engine, *PLACED)

    def place(
        strategies: Mapping[str, str],
        *,
        seed: bool = True,
        engines: EngineCache | None = None,
        async_engine: AsyncEngine | None = None,
    ) -> Tenancy:
        def isolation(is_async: bool) -> Isolation:
            return Isolation(
                choose=lambda key, record: strategies.get(key, Strategy.SHARED),
                schema_prefix=prefix,
                database_url=tenant_database_url(database, tmp_path, prefix, is_async=is_async),
                engines=engines,
            )

        tenancy = Tenancy(engine, resolvers=[HeaderResolver()], isolation=isolation(False))
        for key in strategies:
            placement = tenancy.placement_of(key)
            assert placement is not None
            made.append((tenancy, placement))
            create_storage(engine, placement, PLACED)
        with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
            if not session.get(Plan, 1):
                session.add(Plan(id=1, name="free"))
                session.commit()
        if seed:
            for key in strategies:
                with tenancy.session(tenant=key) as session:
                    doc = Doc(title=f"{key}-doc")
                    session.add_all([doc, Comment(body=f"{key}-comment", doc=doc)])
                    session.add(Member(email=f"someone@{key}.test"))
                    session.commit()
        if async_engine is None:
            return tenancy
        async_tenancy = Tenancy(
            async_engine, resolvers=[HeaderResolver()], isolation=isolation(True)
        )
        made.append((async_tenancy, None))
        return async_tenancy

    yield place
    for tenancy, placement in made:
        isolation = tenancy.isolation
        assert isolation is not None
        isolation.engines.dispose_all()  # an async test closes its engines in its own loop
        if placement is not None:
            drop_storage(engine, placement)
