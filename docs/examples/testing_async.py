"""The ``tenancy_app`` fixture of an app on an ``AsyncEngine`` (in a real project: ``conftest.py``).

The app is the one of ``getting_started_async.py``. Its engine has no pool, so that the app works
from every event loop the tests run it in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from docs.examples.getting_started_async import create_app, init_db


# --8<-- [start:tenancy_app]
@pytest.fixture
def tenancy_app(tmp_path: Path) -> Iterator[FastAPI]:
    # Each TestClient runs the app in an event loop of its own, and a pooled asyncpg or
    # aiomysql connection works only in the loop that opened it: no pool, no stale connection.
    url = f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}"  # or postgresql+asyncpg://...
    engine = create_async_engine(url, poolclass=NullPool)
    asyncio.run(init_db(engine))  # another event loop again: fine without a pool
    yield create_app(engine)
    asyncio.run(engine.dispose())


# --8<-- [end:tenancy_app]
