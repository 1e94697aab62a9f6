"""Helpers of the isolation tests: where database tenants live, and engines with one
connection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from fastapi_tenancy import Tenancy

PlaceTenants = Callable[..., Tenancy]


def tenant_database_url(
    database: Any, tmp_path: Path, prefix: str, *, is_async: bool = False
) -> Callable[[str, Any], URL]:
    """Where a tenant of the database strategy lives: a file beside the test's SQLite
    database, or a database of its own on the test's server; reached with the async driver of
    the test's async engine when ``is_async``."""

    def url(key: str, record: Any) -> URL:
        if database.backend == "sqlite":
            path = str(tmp_path / f"{prefix}{key}.sqlite3")
            return URL.create("sqlite+aiosqlite" if is_async else "sqlite", database=path)
        server: URL = database.server_url
        if is_async:
            server = server.set(drivername=database.async_url.drivername)
        return server.set(database=f"{prefix}{key}")

    return url


def single_connection_engine(database: Any) -> Engine:
    """An engine of the test's database whose pool holds exactly one connection."""
    if database.backend == "sqlite":
        return database.create_engine(poolclass=StaticPool)
    return database.create_engine(pool_size=1, max_overflow=0)
