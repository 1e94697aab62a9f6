"""Shared by the lookup tests: the tenant table's rows, a query counter and a fake clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from http_app import Tenant
from sqlalchemy import Engine, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine

TENANT_ROWS = [
    {"slug": "acme", "active": True, "plan": "pro"},
    {"slug": "globex", "active": True, "plan": "free"},
    {"slug": "initech", "active": True, "plan": "free"},
    {"slug": "umbrella", "active": False, "plan": "pro"},
]


class SelectCounter:
    """Counts the SELECTs that reach one table, at the cursor; ``by_key`` only those with a
    WHERE clause (one tenant's lookup, not the bulk load of every tenant)."""

    def __init__(self, engine: Engine | AsyncEngine, table: str, *, by_key: bool = False) -> None:
        self.engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        self.table = table
        self.by_key = by_key
        self.count = 0

    def __call__(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        text = statement.lstrip().upper()
        if (
            text.startswith("SELECT")
            and self.table.upper() in text
            and (not self.by_key or "WHERE" in text.split())
        ):
            self.count += 1

    def __enter__(self) -> SelectCounter:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fill_tenant_table(engine: Engine, create_tables: Any) -> Engine:
    """Create the tenant table and insert :data:`TENANT_ROWS`."""
    create_tables(engine, Tenant)
    with engine.begin() as conn:
        conn.execute(insert(Tenant), TENANT_ROWS)
    return engine


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether ``check()`` comes true within ``seconds`` (a change travelling to a worker)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
