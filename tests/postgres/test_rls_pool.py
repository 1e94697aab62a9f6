"""Pool safety: thousands of transactions, alternating tenants, over a pool of two connections.

The tenant is set per transaction, never per connection, so a pooled connection carries
nothing from one use into the next: each transaction sees exactly its tenant's rows, a
transaction with no tenant sees none, and one that raised leaves nothing behind. ORM scoping is
off throughout; the policies alone decide.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from rls_models import ACME, GLOBEX, KEY_TYPE, Project
from rls_support import World, as_owner
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from fastapi_tenancy import Access, HeaderResolver, SessionScope, Tenancy

pytestmark = pytest.mark.backends("postgres")

TRANSACTIONS = 2000
WORKERS = 4
TENANTS = (ACME, GLOBEX)
# One round trip: the setting the transaction sees, and the tenants of the rows it sees.
READ = text(
    "SELECT current_setting('fastapi_tenancy.tenant_id', true), "
    "ARRAY(SELECT tenant_id FROM rls_project ORDER BY id)"
)


def plan(worker: int, i: int) -> tuple[Any, str]:
    """Which tenant transaction ``i`` of ``worker`` runs for, and what it does."""
    n = worker + i * WORKERS
    if n % 13 == 0:
        return None, "read"
    tenant = TENANTS[n % 2]
    if n % 17 == 0:
        return tenant, "raise"
    if n % 10 == 0:
        return tenant, "write"
    return tenant, "read"


def check_rows(tenant: Any, row) -> None:
    setting, tenants = row
    if tenant is None:
        assert tenants == []
        assert setting in (None, "")
        return
    assert tenants, f"{tenant} saw no row"
    assert set(tenants) == {tenant}, tenants
    assert setting == str(tenant)  # the setting carries the key's spelling


def final_counts(owner) -> dict[Any, int]:
    with as_owner(owner) as conn:
        rows = conn.execute(
            select(Project.tenant_id, func.count()).group_by(Project.tenant_id)
        ).all()
    return {tenant: count for tenant, count in rows}


def expected_writes() -> dict[Any, int]:
    writes = dict.fromkeys(TENANTS, 1)  # the seeded project of each
    for worker in range(WORKERS):
        for i in range(TRANSACTIONS // WORKERS):
            tenant, action = plan(worker, i)
            if action == "write" and tenant is not None:
                writes[tenant] += 1
    return writes


def test_sync_transactions_alternating_tenants_over_two_connections_see_only_their_rows(
    app_role, world: World, owner
):
    engine = app_role.engine(pool_size=2, max_overflow=0, pool_timeout=30)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    errors: list[BaseException] = []
    done = [0]
    lock = threading.Lock()

    def work(worker: int) -> None:
        try:
            for i in range(TRANSACTIONS // WORKERS):
                tenant, action = plan(worker, i)
                with tenancy.make_session(SessionScope(tenant, Access.UNSCOPED)) as session:
                    if action == "raise":
                        with pytest.raises(DBAPIError):
                            session.execute(text("SELECT 1 / 0 FROM rls_project"))
                        session.rollback()
                        continue
                    if action == "write":
                        session.add(Project(tenant_id=tenant, name=f"{tenant}-{worker}-{i}"))
                        session.commit()
                    check_rows(tenant, session.execute(READ).one())
                with lock:
                    done[0] += 1
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert done[0] > TRANSACTIONS * 0.9
    assert engine.pool.checkedout() == 0
    assert final_counts(owner) == expected_writes()


@pytest.mark.anyio
async def test_async_transactions_alternating_tenants_over_two_connections_see_only_their_rows(
    app_role, world: World, owner
):
    engine = app_role.async_engine(pool_size=2, max_overflow=0, pool_timeout=30)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    done = 0

    async def work(worker: int) -> None:
        nonlocal done
        for i in range(TRANSACTIONS // WORKERS):
            tenant, action = plan(worker, i)
            async with tenancy.make_async_session(SessionScope(tenant, Access.UNSCOPED)) as session:
                if action == "raise":
                    with pytest.raises(DBAPIError):
                        await session.exec(text("SELECT 1 / 0 FROM rls_project"))
                    await session.rollback()
                    continue
                if action == "write":
                    session.add(Project(tenant_id=tenant, name=f"{tenant}-{worker}-{i}"))
                    await session.commit()
                check_rows(tenant, (await session.exec(READ)).one())
            done += 1

    try:
        await asyncio.gather(*(work(w) for w in range(WORKERS)))
    finally:
        await engine.dispose()

    assert done > TRANSACTIONS * 0.9
    assert final_counts(owner) == expected_writes()
