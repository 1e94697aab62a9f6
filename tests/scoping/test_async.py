"""A representative subset of the attacks through ``AsyncSession`` on the async engine.

The world is seeded, and read back, through the sync engine on the same database.
Lazy loads are not allowed in async code, so relationships are loaded with ``selectinload``.
"""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Project, Task, capture_sql, owned_by, rows_of, snapshot
from sqlalchemy import delete, func, insert, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import make_transient_to_detached, selectinload
from sqlmodel import select

from fastapi_tenancy import AlreadyExists, CrossTenantWrite, TenantRequired

pytestmark = pytest.mark.anyio


async def test_async_get_of_another_tenants_id_returns_none(async_session_for, world):
    async with async_session_for(ACME) as session:
        assert await session.get(Project, world.zeus) is None
        assert await session.get(Project, world.apollo) is not None


async def test_async_join_never_reaches_another_tenants_rows(async_session_for, world):
    async with async_session_for(ACME) as session:
        to_projects = (
            await session.exec(select(Task.name, Project.name).join(Task.project).order_by(Task.id))
        ).all()
        to_tasks = (
            await session.exec(select(Task.name).join(Project.tasks).order_by(Task.id))
        ).all()

    assert [tuple(r) for r in to_projects] == [("design", "apollo"), ("build", "apollo")]
    assert list(to_tasks) == ["design", "build"]


async def test_async_selectinload_skips_another_tenants_rows(async_session_for, world):
    async with async_session_for(ACME) as session:
        apollo = (await session.exec(select(Project).options(selectinload(Project.tasks)))).one()
        probe = (
            await session.exec(
                select(Task).where(Task.id == world.leak_probe).options(selectinload(Task.project))
            )
        ).one()

        assert {t.name for t in apollo.tasks} == {"design", "build"}
        assert probe.project is None


async def test_async_count_counts_only_the_tenants_rows(async_session_for, world):
    async with async_session_for(GLOBEX) as session:
        count = (await session.exec(select(func.count()).select_from(Task))).one()

    assert count == 2


async def test_async_bulk_update_and_delete_reach_only_the_tenants_rows(
    tenancy, async_session_for, world
):
    before = snapshot(tenancy)

    async with async_session_for(ACME) as session:
        updated = await session.exec(update(Project).values(name="renamed"))
        aimed = await session.exec(update(Project).where(Project.id == world.zeus).values(name="x"))
        deleted = await session.exec(delete(Task))
        await session.commit()

    after = snapshot(tenancy)
    assert (updated.rowcount, aimed.rowcount, deleted.rowcount) == (1, 0, 3)
    for table in (Project, Task):
        assert owned_by(after[table], GLOBEX) == owned_by(before[table], GLOBEX)


async def test_async_bulk_update_by_primary_key_of_another_tenants_row_is_refused(
    tenancy, async_session_for, world
):
    before = snapshot(tenancy)

    async with async_session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):
            await session.exec(update(Project), params=[{"id": world.zeus, "name": "pwned"}])
        await session.commit()

    assert snapshot(tenancy) == before


async def test_async_rows_without_tenant_are_stamped(tenancy, async_session_for, world):
    async with async_session_for(ACME) as session:
        session.add(Project(name="added"))
        await session.exec(insert(Project).values(name="inserted"))
        await session.exec(insert(Project), params=[{"name": "bulk"}])
        await session.commit()

    assert {p.name for p in rows_of(tenancy, Project, ACME).values()} == {
        "apollo",
        "added",
        "inserted",
        "bulk",
    }


async def test_async_insert_naming_another_tenant_is_refused_before_any_sql(
    tenancy, async_engine, async_session_for, world
):
    before = snapshot(tenancy)

    async with async_session_for(ACME) as session:
        with capture_sql(async_engine) as sent:
            with pytest.raises(CrossTenantWrite):
                await session.exec(insert(Project).values(name="x", tenant_id=GLOBEX))
            with pytest.raises(CrossTenantWrite):
                await session.exec(insert(Project), params=[{"name": "x", "tenant_id": GLOBEX}])
        with pytest.raises(CrossTenantWrite):
            session.add(Project(name="x", tenant_id=GLOBEX))

    assert sent == []
    assert snapshot(tenancy) == before


async def test_async_duplicate_within_the_tenant_raises_already_exists(
    tenancy, async_session_for, world
):
    async with async_session_for(GLOBEX) as session:
        session.add(Project(name="apollo"))
        await session.commit()

    async with async_session_for(ACME) as session:
        session.add(Project(name="apollo"))
        with pytest.raises(AlreadyExists):
            await session.flush()
        await session.rollback()
        session.add(Project(name="apollo-2"))
        await session.commit()

    assert {p.name for p in rows_of(tenancy, Project, ACME).values()} == {
        "apollo",
        "apollo-2",
    }


async def test_async_duplicate_insert_statement_raises_already_exists(async_session_for, world):
    async with async_session_for(ACME) as session:
        with pytest.raises(AlreadyExists):
            await session.exec(insert(Project).values(name="apollo"))


async def test_async_statement_with_no_tenant_fails_before_any_sql(
    tenancy, async_engine, async_session_for, world
):
    before = snapshot(tenancy)

    async with async_session_for(None) as session:
        with capture_sql(async_engine) as sent:
            with pytest.raises(TenantRequired):
                await session.exec(select(Project))
            with pytest.raises(TenantRequired):
                await session.get(Project, world.apollo)
            with pytest.raises(TenantRequired):
                await session.exec(update(Project).values(name="x"))
            with pytest.raises(TenantRequired):
                await session.exec(delete(Task))
            with pytest.raises(TenantRequired):
                await session.exec(insert(Project).values(name="x"))
            session.add(Project(name="x", tenant_id=ACME))
            with pytest.raises(TenantRequired):
                await session.flush()

    assert sent == []
    assert snapshot(tenancy) == before


async def test_async_refresh_of_a_planted_key_does_not_load_another_tenants_row(
    async_session_for, world
):
    planted = Project(id=world.zeus)
    make_transient_to_detached(planted)
    async with async_session_for(ACME) as session:
        session.add(planted)
        with pytest.raises(InvalidRequestError, match="Could not refresh instance"):
            await session.refresh(planted)
