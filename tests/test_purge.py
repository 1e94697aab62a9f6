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
from purge_models import (
    World,
    dump,
    without,
)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy import TenancyMisuse, TenantNotFound


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
    assert report.rows == {"purge_task": 12, "purge_catalog": 1, "purge_project": 4}
    assert dump(world.engine) == before


def test_purge_removes_every_row_of_the_tenant_and_nothing_else(world: World) -> None:
    world.call("suspend", "acme")
    before = dump(world.engine)
    report = world.call("purge", "acme", batch_size=5)
    after = dump(world.engine)
    assert report.rows == {"purge_task": 12, "purge_catalog": 1, "purge_project": 4}
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
    with pytest.raises(TenancyMisuse, match="suspend it before purging"):
        world.call("purge", "acme")
    with pytest.raises(TenantNotFound):
        world.call("purge", "nobody")
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
    assert sum(heard) == report.total == 17
    # 12 tasks in batches of 5, one catalogue row, 4 projects (the last two in either order)
    assert heard[:3] == [5, 5, 2]
    assert sorted(heard[3:]) == [1, 4]
    assert dump(world.engine) == without(before, "acme")


def test_a_dry_run_reports_no_progress(world: World) -> None:
    world.call("suspend", "acme")
    heard: list[int] = []
    assert world.call("purge", "acme", dry_run=True, progress=heard.append).total == 17
    assert heard == []
