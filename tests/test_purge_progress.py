"""``purge(progress=...)`` hears every batch it deletes, on every database and engine flavour:
what the command line's progress bar counts (``fastapi-tenancy tenants purge``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from purge_models import TABLES, World, dump, without
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
def seeded(engine: Engine, any_engine: Engine | AsyncEngine, create_tables: Any) -> Iterator[World]:
    create_tables(engine, *TABLES)
    made = World(engine, any_engine)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.parametrize("resumable", [False, True])
def test_progress_hears_each_batch_and_adds_up_to_the_rows_deleted(
    seeded: World, resumable: bool
) -> None:
    seeded.call("suspend", "acme")
    before = dump(seeded.engine)
    heard: list[int] = []
    report = seeded.call("purge", "acme", batch_size=5, resumable=resumable, progress=heard.append)
    assert sum(heard) == report.total == 17
    # 12 tasks in batches of 5, one catalogue row, 4 projects (the last two in either order)
    assert heard[:3] == [5, 5, 2]
    assert sorted(heard[3:]) == [1, 4]
    assert dump(seeded.engine) == without(before, "acme")


def test_a_dry_run_reports_no_progress(seeded: World) -> None:
    seeded.call("suspend", "acme")
    heard: list[int] = []
    assert seeded.call("purge", "acme", dry_run=True, progress=heard.append).total == 17
    assert heard == []
