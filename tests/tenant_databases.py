"""Where the tests' tenants of the database strategy live: beside the test's own database.

Shared by the isolation tests and the scoping attacks' strategy runs (``tests/`` is on the
import path of every test module).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL


def tenant_database_url(
    database: Any, tmp_path: Path, prefix: str, *, is_async: bool = False
) -> Callable[[str, Any], URL]:
    """Where a tenant of the database strategy lives: a file beside the test's SQLite
    database, or a database of its own on the test's server; reached with the async driver of
    the test's async engine when ``is_async``."""

    def url(key: str, record: Any) -> URL:
        if database.backend == "sqlite":
            path = str(tmp_path / f"{prefix}db_{key}.sqlite3")
            return URL.create("sqlite+aiosqlite" if is_async else "sqlite", database=path)
        server: URL = database.server_url
        if is_async:
            server = server.set(drivername=database.async_url.drivername)
        return server.set(database=f"{prefix}db_{key}")

    return url
