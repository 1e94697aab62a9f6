"""The settings sent with the transaction's ``BEGIN``, in one message, on psycopg 3.

psycopg opens a transaction lazily: before the first statement it sends ``BEGIN`` (with the
connection's isolation options) on a round trip of its own, and only when the server reports
no transaction in progress. The kit sends that ``BEGIN`` itself, followed by one ``SELECT`` that
names both settings transaction-locally, in the same simple-query message::

    BEGIN; SELECT set_config('fastapi_tenancy.tenant_id', 'acme', true),
                  set_config('fastapi_tenancy.global_read', '', true)

When models declare row scopes, the ``SELECT`` goes on with ``fastapi_tenancy.scope.<name>``
(each value quoted by libpq too) and ``fastapi_tenancy.lift.<name>`` (a constant) per scope;
when models read their tenant's family, with ``fastapi_tenancy.ancestors`` and
``fastapi_tenancy.descendants`` (array literals, quoted by libpq).
psycopg then sees the transaction open and sends no ``BEGIN`` of its own. On an async
psycopg connection the same message goes out without blocking the event loop. COMMIT and ROLLBACK
stay psycopg's. The tenant is quoted by libpq (``PQescapeLiteral``), never spliced into SQL by
hand; the global read is one of two constants.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import generators, pq
from sqlalchemy.util import await_only

from .policies import (
    FAMILY_SETTINGS,
    GLOBAL_READ_SETTING,
    TENANT_SETTING,
    lift_setting,
    scope_setting,
)

__all__ = ["begin_with_setting"]

# What follows BEGIN: _BEFORE_TENANT, the tenant as a literal, _AFTER_TENANT[global_read].
_BEFORE_TENANT = f"; SELECT set_config('{TENANT_SETTING}', ".encode()
_AFTER_TENANT = {
    global_read: f", true), set_config('{GLOBAL_READ_SETTING}', '{value}', true)".encode()
    for global_read, value in ((True, "on"), (False, ""))
}


def _begin_command(connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bytes:
    words = [b"BEGIN"]
    if connection.isolation_level is not None:
        level = psycopg.IsolationLevel(connection.isolation_level)
        words += [b"ISOLATION LEVEL", level.name.replace("_", " ").encode()]
    if connection.read_only is not None:
        words.append(b"READ ONLY" if connection.read_only else b"READ WRITE")
    if connection.deferrable is not None:
        words.append(b"DEFERRABLE" if connection.deferrable else b"NOT DEFERRABLE")
    return b" ".join(words)


Scopes = tuple[tuple[str, str, bool], ...]
"""Each declared row scope: its name, its value (``''``: none) and whether it is lifted."""

Family = tuple[str, str] | None
"""The family settings' values, ancestors then descendants (``''``: none); ``None``: not named."""


def begin_with_setting(
    driver_connection: Any,
    tenant_id: str | None,
    global_read: bool,
    scopes: Scopes = (),
    family: Family = None,
) -> bool:
    """Open the transaction with ``BEGIN; SELECT set_config(...), set_config(...)``, one message.

    The tenant setting becomes ``tenant_id`` (``''`` for ``None``: no tenant), the global read
    ``on`` or ``''``; each row scope of ``scopes`` names its value (quoted by libpq) and its
    lift (``on`` or ``''``); a ``family`` names the ancestors and descendants. Answers
    ``False``, having sent nothing, when this cannot be done: not a psycopg connection,
    autocommit, or a transaction already open; the caller then sends the settings as a
    statement of its own. On an async psycopg connection it is called from
    SQLAlchemy's sync facade (a greenlet), and awaits the answer through it.
    """
    if isinstance(driver_connection, psycopg.AsyncConnection):
        if not _idle(driver_connection):
            return False
        await_only(_begin_async(driver_connection, tenant_id, global_read, scopes, family))
        return True
    if not isinstance(driver_connection, psycopg.Connection) or not _idle(driver_connection):
        return False
    command = _command(driver_connection, tenant_id, global_read, scopes, family)
    with driver_connection.lock:
        result = driver_connection.pgconn.exec_(command)
    _check(driver_connection.pgconn, [result])
    return True


async def _begin_async(
    driver_connection: psycopg.AsyncConnection[Any],
    tenant_id: str | None,
    global_read: bool,
    scopes: Scopes,
    family: Family,
) -> None:
    command = _command(driver_connection, tenant_id, global_read, scopes, family)
    pgconn = driver_connection.pgconn
    async with driver_connection.lock:
        pgconn.send_query(command)
        results = await driver_connection.wait(generators.execute(pgconn))
    _check(pgconn, results)


def _idle(driver_connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    return (
        not driver_connection.autocommit
        and driver_connection.info.transaction_status == pq.TransactionStatus.IDLE
    )


def _command(
    driver_connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
    tenant_id: str | None,
    global_read: bool,
    scopes: Scopes,
    family: Family,
) -> bytes:
    escaping = pq.Escaping(driver_connection.pgconn)
    encoding = driver_connection.info.encoding

    def literal(value: str | None) -> bytes:
        return b"''" if not value else escaping.escape_literal(value.encode(encoding))

    command = (
        _begin_command(driver_connection)
        + _BEFORE_TENANT
        + literal(tenant_id)
        + _AFTER_TENANT[global_read]
    )
    for name, value, lifted in scopes:
        lift = "on" if lifted else ""
        command += (
            f", set_config('{scope_setting(name)}', ".encode()
            + literal(value)
            + f", true), set_config('{lift_setting(name)}', '{lift}', true)".encode()
        )
    if family is not None:  # ancestors, then descendants, as FAMILY_SETTINGS lists them
        for name, value in zip(FAMILY_SETTINGS.values(), family, strict=True):
            command += f", set_config('{name}', ".encode() + literal(value) + b", true)"
    return command


def _check(pgconn: Any, results: list[Any]) -> None:
    """Raise the server's error if the ``BEGIN`` or the ``SELECT`` failed."""
    for result in results:
        if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            continue
        message = (result.error_message or pgconn.error_message).decode(errors="replace")
        sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
        error = psycopg.errors.lookup(sqlstate.decode()) if sqlstate else psycopg.OperationalError
        raise error(message.strip() or "could not open the transaction")
    if not results:
        raise psycopg.OperationalError("could not open the transaction")
