"""Smoke tests of the database fixtures in conftest.py."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool
from sqlmodel import Field, Session, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

CONFTEST = Path(__file__).with_name("conftest.py")

SYNC_DRIVERS = {"sqlite": "pysqlite", "postgres": "psycopg", "mariadb": "pymysql"}
ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgres": "asyncpg", "mariadb": "aiomysql"}


class FixtureProbe(SQLModel, table=True):
    __tablename__ = "fixture_probe"

    id: int | None = Field(default=None, primary_key=True)
    label: str


def _unique_table() -> Table:
    return Table(
        f"probe_{secrets.token_hex(4)}", MetaData(), Column("id", Integer, primary_key=True)
    )


def _write_sync(engine: Engine, label: str) -> None:
    with Session(engine) as session:
        session.add(FixtureProbe(label=label))
        session.commit()


def _read_sync(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(FixtureProbe.label)).all())


async def _write_async(engine: AsyncEngine, label: str) -> None:
    async with AsyncSession(engine) as session:
        session.add(FixtureProbe(label=label))
        await session.commit()


async def _read_async(engine: AsyncEngine) -> list[str]:
    async with AsyncSession(engine) as session:
        return list((await session.exec(select(FixtureProbe.label))).all())


def test_engine_round_trips_a_row(backend, engine, create_tables):
    assert engine.dialect.driver == SYNC_DRIVERS[backend]
    create_tables(engine, FixtureProbe)

    _write_sync(engine, "hello")

    assert _read_sync(engine) == ["hello"]


@pytest.mark.anyio
async def test_async_engine_round_trips_a_row(backend, async_engine, create_tables):
    assert async_engine.dialect.driver == ASYNC_DRIVERS[backend]
    await create_tables.acreate(async_engine, FixtureProbe)

    await _write_async(async_engine, "hello")

    assert await _read_async(async_engine) == ["hello"]


@pytest.mark.anyio
async def test_any_engine_round_trips_a_row(backend, engine_flavor, any_engine, create_tables):
    create_tables(any_engine, [FixtureProbe])  # plain call, on either kind of engine

    if engine_flavor == "async":
        assert isinstance(any_engine, AsyncEngine)
        await _write_async(any_engine, engine_flavor)
        assert await _read_async(any_engine) == ["async"]
    else:
        assert isinstance(any_engine, Engine)
        _write_sync(any_engine, engine_flavor)
        assert _read_sync(any_engine) == ["sync"]


@pytest.mark.anyio
async def test_sync_and_async_engines_share_the_test_database(engine, async_engine, create_tables):
    create_tables(engine, SQLModel.metadata.tables["fixture_probe"])

    _write_sync(engine, "written sync")
    await _write_async(async_engine, "written async")

    assert sorted(await _read_async(async_engine)) == ["written async", "written sync"]
    assert sorted(_read_sync(engine)) == ["written async", "written sync"]


def test_db_url_reaches_the_same_database(db_url, engine, create_tables):
    create_tables(engine, FixtureProbe)
    _write_sync(engine, "via fixture")

    other = create_engine(db_url, poolclass=NullPool)
    try:
        assert _read_sync(other) == ["via fixture"]
    finally:
        other.dispose()


def test_each_test_starts_with_an_empty_database(engine):
    assert inspect(engine).get_table_names() == []


def test_create_tables_rejects_what_is_not_a_table(engine, create_tables):
    class NotATable(SQLModel):
        name: str

    with pytest.raises(TypeError, match="table=True"):
        create_tables(engine, NotATable)


@pytest.mark.backends("postgres", "mariadb")
def test_private_schema_is_invisible_from_the_server_default(database, engine):
    table = _unique_table()
    table.create(engine)

    default = create_engine(database.server_url, poolclass=NullPool)
    try:
        seen_from_default = inspect(default)
        assert database.name in seen_from_default.get_schema_names()
        assert not seen_from_default.has_table(table.name)
        assert seen_from_default.has_table(table.name, schema=database.name)
    finally:
        default.dispose()
    assert inspect(engine).has_table(table.name)


@pytest.mark.backends("postgres", "mariadb")
def test_private_database_is_dropped_when_its_block_ends(backend, make_database):
    with make_database(backend) as db:
        name = db.name
        engine = db.create_engine(poolclass=NullPool)
        _unique_table().create(engine)
        engine.dispose()
        server = create_engine(db.server_url, poolclass=NullPool)
        assert name in inspect(server).get_schema_names()

    try:
        assert name not in inspect(server).get_schema_names()
    finally:
        server.dispose()


def test_sqlite_database_lives_in_the_test_tmp_path(make_database, tmp_path):
    with make_database("sqlite") as first, make_database("sqlite") as second:
        assert first.url != second.url
        assert Path(first.url.database).parent == tmp_path


# --- deciding whether a server's tests run ----------------------------------------------------

UNREACHABLE = [
    pytest.param(
        "postgres",
        "TENANCY_TEST_POSTGRES_URL",
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
        "PostgreSQL",
        id="postgres",
    ),
    pytest.param(
        "mariadb",
        "TENANCY_TEST_MARIADB_URL",
        "mysql+pymysql://root@127.0.0.1:1/test",
        "MariaDB",
        id="mariadb",
    ),
]


@pytest.mark.parametrize(("server", "env_var", "url", "label"), UNREACHABLE)
def test_unreachable_server_is_skipped_outside_ci(
    monkeypatch, probe_server, server, env_var, url, label
):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv(env_var, url)

    status = probe_server(server)

    assert not status.available
    assert not status.fatal
    assert status.message == (
        f"{label} suite skipped: no server at 127.0.0.1:1 "
        f"(set {env_var} or start one; CI=true makes this a failure)"
    )


@pytest.mark.parametrize("ci", ["true", "1"])
@pytest.mark.parametrize(("server", "env_var", "url", "label"), UNREACHABLE)
def test_unreachable_server_is_a_failure_in_ci(
    monkeypatch, probe_server, ci, server, env_var, url, label
):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv(env_var, url)

    status = probe_server(server)

    assert not status.available
    assert status.fatal
    assert label in status.message
    assert url in status.message


def test_off_disables_a_server_even_in_ci(monkeypatch, probe_server):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("TENANCY_TEST_MARIADB_URL", "off")

    status = probe_server("mariadb")

    assert not status.available
    assert not status.fatal
    assert status.message == "MariaDB suite skipped: disabled by TENANCY_TEST_MARIADB_URL=off"


def test_a_url_for_the_wrong_database_is_a_failure(monkeypatch, probe_server):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TENANCY_TEST_POSTGRES_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

    status = probe_server("postgres")

    assert status.fatal
    assert "TENANCY_TEST_POSTGRES_URL" in status.message


# --- the same, end to end, in a pytest run of its own -------------------------------------------

INNER_INI = """
[pytest]
markers =
    postgres: needs the PostgreSQL server
    mariadb: needs the MariaDB server
    backends(*names): run the database fixtures only on these backends
"""

INNER_TEST = """
def test_uses_an_engine(engine):
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
"""


@pytest.fixture
def inner_run(pytester, monkeypatch):
    pytester.makeini(INNER_INI)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_inner=INNER_TEST)
    monkeypatch.setenv(
        "TENANCY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:1/test"
    )
    monkeypatch.setenv("TENANCY_TEST_MARIADB_URL", "off")
    return pytester


def test_a_missing_server_is_named_once_in_the_summary(inner_run, monkeypatch):
    monkeypatch.delenv("CI", raising=False)

    result = inner_run.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, skipped=2)
    summary = [line for line in result.outlines if line.startswith("PostgreSQL suite skipped:")]
    assert summary == [
        "PostgreSQL suite skipped: no server at 127.0.0.1:1 "
        "(set TENANCY_TEST_POSTGRES_URL or start one; CI=true makes this a failure)"
    ]
    assert "MariaDB suite skipped: disabled by TENANCY_TEST_MARIADB_URL=off" in result.outlines


def test_a_missing_server_stops_the_run_in_ci(inner_run, monkeypatch):
    monkeypatch.setenv("CI", "true")

    result = inner_run.runpytest_subprocess("-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = "\n".join(result.outlines + result.errlines)
    assert "PostgreSQL server required (CI=true)" in output
    assert "127.0.0.1:1" in output
    assert "passed" not in output
