"""Database URLs for the sync work of an async app: Alembic and DDL run on sync drivers."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

__all__ = ["sync_url"]

_SYNC_DRIVERS = {
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "mysql+aiomysql": "mysql+pymysql",
    "mysql+asyncmy": "mysql+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
    "mariadb+asyncmy": "mariadb+pymysql",
    "sqlite+aiosqlite": "sqlite",
}


def sync_url(url: URL | str) -> str:
    """``url`` spelled with its password and a sync driver (Alembic migrates on one): an
    async app's ``postgresql+asyncpg`` becomes ``postgresql+psycopg``."""
    parsed = make_url(url)
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)
