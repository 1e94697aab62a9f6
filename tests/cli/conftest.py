"""``cli_world``: the test app's tables, seeded, on each database, and its environment."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from cli_app import TABLES
from cli_support import CliWorld
from sqlalchemy import Engine


@pytest.fixture
def cli_world(engine: Engine, database: Any, db_url: str, create_tables: Any) -> CliWorld:
    create_tables(engine, *TABLES)
    env = {
        **os.environ,
        "CLI_TEST_DATABASE_URL": db_url,
        "CLI_TEST_ASYNC_DATABASE_URL": database.async_url.render_as_string(hide_password=False),
        "CLI_TEST_ASYNC_CONNECT_ARGS": json.dumps(dict(database.async_connect_args)),
    }
    world = CliWorld(engine, env)
    world.seed()
    return world
