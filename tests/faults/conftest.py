"""Fixtures of the fault suites: a real database behind a switchable TCP proxy.

Fixtures
    rls         whether the test runs with the kit's row-level security; parametrized with
                ``backend`` by ``support.DATABASES`` (ids ``postgres``, ``postgres-rls``,
                ``mariadb``)
    faulty      a ``FaultyDatabase``: the test's private database (the root conftest's
                ``database``) with the package's tables, a ``TcpProxy`` to its server, the app's
                engine through the proxy and the owner's engine straight to the server. With
                ``rls`` the tables get the kit's policies and the app connects as an ordinary
                role made for the test (no SUPERUSER, no BYPASSRLS, owning nothing), dropped at
                teardown, as in tests/postgres
    gate        a ``support.Gate`` for routes that wait mid-transaction

Server tests skip, or stop a CI run, as the root conftest decides: the parameters carry the
``postgres`` / ``mariadb`` marks.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from fastapi_tenancy.postgres import apply_rls
from tests.pg_roles import create_role, drop_role

from .support import (
    CONNECT_TIMEOUT,
    MAX_OVERFLOW,
    POOL_SIZE,
    POOL_TIMEOUT,
    READ_TIMEOUT,
    STATEMENT_TIMEOUT,
    FaultyDatabase,
    Gate,
    faults_registry,
)
from .tcp_proxy import TcpProxy

_DEFAULT_PORTS = {"postgres": 5432, "mariadb": 3306}


@pytest.fixture
def rls(request: pytest.FixtureRequest) -> bool:
    value = getattr(request, "param", False)
    assert isinstance(value, bool)
    return value


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    try:
        yield gate
    finally:
        gate.open()  # never leave a route waiting


@pytest.fixture
def faulty(database: Any, engine: Engine, rls: bool) -> Iterator[FaultyDatabase]:
    backend: str = database.backend
    server: URL = database.server_url
    faults_registry.metadata.create_all(engine)
    role = None
    if rls:
        apply_rls(engine, faults_registry.metadata)
        role = f"tenancy_faults_{secrets.token_hex(5)}"
        create_role(engine, database.name, role)
    proxy = TcpProxy(server.host or "127.0.0.1", server.port or _DEFAULT_PORTS[backend]).start()
    app_engine = _app_engine(database.url, backend, proxy, role)
    async_url, async_connect_args = _async_app_engine(database, proxy, role)
    try:
        yield FaultyDatabase(backend, rls, proxy, app_engine, engine, async_url, async_connect_args)
    finally:
        app_engine.dispose()
        proxy.close()
        if role is not None:
            drop_role(engine, role)


def _app_engine(url: URL, backend: str, proxy: TcpProxy, role: str | None) -> Engine:
    url = url.set(host=proxy.host, port=proxy.port)
    connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
    if backend == "postgres":
        search_path = url.query.get("options", "")
        assert isinstance(search_path, str)
        timeout = f"-cstatement_timeout={int(STATEMENT_TIMEOUT * 1000)}"
        options = " ".join(filter(None, [search_path, timeout]))
        url = url.update_query_dict({"options": options})
        if role is not None:
            url = url.set(username=role)
    else:
        connect_args |= {
            "read_timeout": READ_TIMEOUT,
            "write_timeout": READ_TIMEOUT,
            "init_command": f"SET SESSION max_statement_time = {STATEMENT_TIMEOUT}",
        }
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT,
        connect_args=connect_args,
    )


def _async_app_engine(
    database: Any, proxy: TcpProxy, role: str | None
) -> tuple[URL, dict[str, Any]]:
    """The async twin of :func:`_app_engine`'s URL and connection arguments."""
    url: URL = database.async_url.set(host=proxy.host, port=proxy.port)
    if database.backend == "postgres":
        if role is not None:
            url = url.set(username=role)
        settings = dict(database.async_connect_args["server_settings"])
        settings["statement_timeout"] = str(int(STATEMENT_TIMEOUT * 1000))
        # asyncpg's own bounds: connecting, and waiting for any answer of the server
        args = {
            "timeout": READ_TIMEOUT,
            "command_timeout": READ_TIMEOUT,
            "server_settings": settings,
        }
        return url, args
    init = f"SET SESSION max_statement_time = {STATEMENT_TIMEOUT}"
    return url, {"connect_timeout": CONNECT_TIMEOUT, "init_command": init}
