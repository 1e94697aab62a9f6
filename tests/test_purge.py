"""Purging a tenant: every row of it goes, from every tenant model; nothing else moves.

Three tenants own projects and tasks (tasks reference projects, so tasks must go first) and
read shared catalogue rows. Purging acme must leave every other row byte-identical (the whole
database is dumped before and after), remove each of acme's rows and its record, and survive an
interruption: all or nothing in one transaction, finished by a second run when resumable.
On every database, with sync and async engines.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from http_app import tenant_header
from purge_models import TENANTS, PurgeOrg, World, call_tenants, dump, without
from sqlalchemy import delete, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, Session, SQLModel, col, select

from fastapi_tenancy import (
    Tenancy,
    TenantActive,
    TenantNotFound,
    TenantRegistry,
    get_current_tenant,
)


@pytest.fixture
def fail_at_delete(world: World) -> Iterator[Callable[[int], None]]:
    """``fail_at_delete(n)``: the n-th DELETE that reaches the cursor raises, as a crash would."""
    used = world.tenancy.engine
    engine = used.sync_engine if isinstance(used, AsyncEngine) else used
    seen: list[int] = []
    limit: list[int] = []

    def arm(n: int) -> None:
        limit.append(n)

    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if limit and statement.lstrip().upper().startswith("DELETE"):
            seen.append(1)
            if len(seen) == limit[0]:
                raise ConnectionError("the process died here")

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield arm
    finally:
        event.remove(engine, "before_cursor_execute", before)


def test_a_dry_run_counts_and_deletes_nothing(world: World) -> None:
    world.call("suspend", "acme")
    before = dump(world.engine)
    report = world.call("purge", "acme", dry_run=True)
    assert report.dry_run
    assert report.rows == {
        "purge_task": 12,
        "purge_catalog": 1,
        "purge_note": 2,
        "purge_project": 4,
    }
    assert dump(world.engine) == before


def test_purge_removes_every_row_of_the_tenant_and_nothing_else(world: World) -> None:
    world.call("suspend", "acme")
    before = dump(world.engine)
    report = world.call("purge", "acme", batch_size=5)
    after = dump(world.engine)
    assert report.rows == {
        "purge_task": 12,
        "purge_catalog": 1,
        "purge_note": 2,
        "purge_project": 4,
    }
    assert after == without(before, "acme")
    assert all("acme" not in row for rows in after.values() for row in rows)
    assert len(after["purge_catalog"]) == 5  # the 3 shared rows and globex's and initech's
    r = world.client.get("/whoami", headers=tenant_header("acme"))
    assert (r.status_code, r.json()["code"]) == (404, "tenant_not_found"), r.text
    assert world.client.get("/whoami", headers=tenant_header("globex")).status_code == 200


def test_an_interrupted_purge_in_one_transaction_deletes_nothing(
    world: World, fail_at_delete: Callable[[int], None]
) -> None:
    world.call("suspend", "acme")
    before = dump(world.engine)
    fail_at_delete(3)
    with pytest.raises(Exception, match="the process died here"):
        world.call("purge", "acme", batch_size=5)
    assert dump(world.engine) == before


def test_an_interrupted_resumable_purge_is_finished_by_the_next(
    world: World, fail_at_delete: Callable[[int], None]
) -> None:
    world.call("suspend", "acme")
    before = dump(world.engine)
    fail_at_delete(3)
    with pytest.raises(Exception, match="the process died here"):
        world.call("purge", "acme", batch_size=5, resumable=True)
    halfway = dump(world.engine)
    assert halfway != before  # two batches were committed ...
    assert len(halfway["purge_task"]) > len(without(before, "acme")["purge_task"])  # ... not all
    world.call("purge", "acme", batch_size=5, resumable=True)
    assert dump(world.engine) == without(before, "acme")


def test_an_active_or_unknown_tenant_is_refused(world: World) -> None:
    before = dump(world.engine)
    with pytest.raises(TenantActive, match="suspend it before purging") as refused:
        world.call("purge", "acme")
    assert (refused.value.status_code, refused.value.code) == (409, "tenant_active")
    with pytest.raises(TenantNotFound):
        world.call("purge", "nobody")
    assert dump(world.engine) == before


def test_a_dry_run_of_an_active_tenant_counts(world: World) -> None:
    before = dump(world.engine)
    assert world.call("purge", "acme", dry_run=True).total == 19
    assert dump(world.engine) == before


class PurgeMember(SQLModel, table=True):
    """A global table pointing at the tenants table: the purge does not know it."""

    __tablename__ = "purge_member"

    id: int | None = Field(default=None, primary_key=True)
    org_slug: str = Field(foreign_key="purge_org.slug", max_length=63)
    email: str = Field(max_length=100)


def with_members(world: World, any_engine: Any, create_tables: Any, hook: Any) -> Tenancy:
    """Two members per tenant, and a tenancy whose registry purges with ``hook``."""
    create_tables(world.engine, PurgeMember)
    with world.engine.begin() as conn:
        conn.execute(
            insert(PurgeMember),
            [{"org_slug": t, "email": f"{n}@{t}.test"} for t in TENANTS for n in range(2)],
        )
    return Tenancy(any_engine, resolvers=[], registry=TenantRegistry(PurgeOrg, before_purge=hook))


def members(world: World) -> list[str]:
    with Session(world.engine) as session:
        return sorted(session.exec(select(PurgeMember.email)).all())


def test_before_purge_removes_global_rows_in_the_purges_transaction(
    world: World, any_engine: Any, create_tables: Any
) -> None:
    seen: list[Any] = []

    def drop_members(record: PurgeOrg, session: Any) -> Any:
        seen.append((record.slug, get_current_tenant()))
        return session.exec(delete(PurgeMember).where(col(PurgeMember.org_slug) == record.slug))

    tenancy = with_members(world, any_engine, create_tables, drop_members)
    world.call("suspend", "acme")
    before = dump(world.engine)
    call_tenants(tenancy, world.client, "purge", "acme", batch_size=5, resumable=True)
    assert seen == [("acme", "acme")]
    assert dump(world.engine) == without(before, "acme")
    assert members(world) == sorted(
        f"{n}@{t}.test" for t in ("globex", "initech") for n in range(2)
    )


def test_a_failing_before_purge_leaves_the_tenant_whole(
    world: World, any_engine: Any, create_tables: Any
) -> None:
    def refuse(record: PurgeOrg, session: Any) -> None:
        raise RuntimeError("the billing system still holds this customer")

    tenancy = with_members(world, any_engine, create_tables, refuse)
    world.call("suspend", "acme")
    before, everyone = dump(world.engine), members(world)
    with pytest.raises(RuntimeError, match="billing"):
        call_tenants(tenancy, world.client, "purge", "acme")
    assert dump(world.engine) == before
    assert members(world) == everyone
    # Without the hook the row's delete breaks the members' foreign key, and nothing goes.
    bare = Tenancy(any_engine, resolvers=[], registry=TenantRegistry(PurgeOrg))
    with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's own foreign key error
        call_tenants(bare, world.client, "purge", "acme")
    assert dump(world.engine) == before


@pytest.mark.parametrize("mode", ["all-or-nothing", "resumable"])
def test_a_purge_whose_process_is_killed_is_finished_by_the_next(
    world: World, db_url: str, mode: str
) -> None:
    world.call("suspend", "acme")
    before = dump(world.engine)
    script = str(Path(__file__).with_name("purge_victim.py"))
    with subprocess.Popen(
        [sys.executable, script, db_url, mode, "3"], stdout=subprocess.PIPE, text=True
    ) as victim:
        try:
            assert victim.stdout is not None
            assert victim.stdout.readline().strip() == "deleting"
        finally:
            victim.kill()  # SIGKILL: no cleanup, no rollback from the client
            victim.wait(10)
    halfway = dump(world.engine)
    if mode == "all-or-nothing":
        assert halfway == before
    else:
        assert halfway != before  # two batches were committed ...
        assert any(row[0] == "acme" for row in halfway["purge_task"])  # ... not all
    world.call("purge", "acme", batch_size=5, resumable=True)
    assert dump(world.engine) == without(before, "acme")


@pytest.mark.parametrize("resumable", [False, True])
def test_progress_hears_each_batch_and_adds_up_to_the_rows_deleted(
    world: World, resumable: bool
) -> None:
    world.call("suspend", "acme")
    before = dump(world.engine)
    heard: list[int] = []
    report = world.call("purge", "acme", batch_size=5, resumable=resumable, progress=heard.append)
    assert sum(heard) == report.total == 19
    # 12 tasks in batches of 5; one catalogue row, two notes, 4 projects (in any order)
    assert heard[:3] == [5, 5, 2]
    assert sorted(heard[3:]) == [1, 2, 4]
    assert dump(world.engine) == without(before, "acme")


def test_a_dry_run_reports_no_progress(world: World) -> None:
    world.call("suspend", "acme")
    heard: list[int] = []
    assert world.call("purge", "acme", dry_run=True, progress=heard.append).total == 19
    assert heard == []
