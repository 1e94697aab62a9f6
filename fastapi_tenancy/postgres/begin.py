"""The settings sent with the transaction's ``BEGIN``, in one message, on psycopg 3 (sync).

psycopg opens a transaction lazily: before the first statement it sends ``BEGIN`` (with the
connection's isolation options) on a round trip of its own, and only when the server reports
no transaction in progress. The kit sends that ``BEGIN`` itself, followed by one ``SELECT`` that
names both settings transaction-locally, in the same simple-query message::

    BEGIN; SELECT set_config('fastapi_tenancy.tenant_id', 'acme', true),
                  set_config('fastapi_tenancy.global_read', '', true)

psycopg then sees the transaction open and sends no ``BEGIN`` of its own. COMMIT and ROLLBACK
stay psycopg's. The tenant is quoted by libpq (``PQescapeLiteral``), never spliced into SQL by
hand; the global read is one of two constants.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import pq

from .policies import GLOBAL_READ_SETTING, TENANT_SETTING

__all__ = ["begin_with_setting"]

# What follows BEGIN: _BEFORE_TENANT, the tenant as a literal, _AFTER_TENANT[global_read].
_BEFORE_TENANT = f"; SELECT set_config('{TENANT_SETTING}', ".encode()
_AFTER_TENANT = {
    global_read: f", true), set_config('{GLOBAL_READ_SETTING}', '{value}', true)".encode()
    for global_read, value in ((True, "on"), (False, ""))
}


def _begin_command(connection: psycopg.Connection[Any]) -> bytes:
    words = [b"BEGIN"]
    if connection.isolation_level is not None:
        level = psycopg.IsolationLevel(connection.isolation_level)
        words += [b"ISOLATION LEVEL", level.name.replace("_", " ").encode()]
    if connection.read_only is not None:
        words.append(b"READ ONLY" if connection.read_only else b"READ WRITE")
    if connection.deferrable is not None:
        words.append(b"DEFERRABLE" if connection.deferrable else b"NOT DEFERRABLE")
    return b" ".join(words)


def begin_with_setting(driver_connection: Any, tenant_id: str | None, global_read: bool) -> bool:
    """Open the transaction with ``BEGIN; SELECT set_config(...), set_config(...)``, one message.

    The tenant setting becomes ``tenant_id`` (``''`` for ``None``: no tenant), the global read
    ``on`` or ``''``. Answers ``False``, having sent nothing, when this cannot be done: not a
    sync psycopg connection, autocommit, or a transaction already open; the caller then sends
    the settings as a statement of its own.
    """
    if not isinstance(driver_connection, psycopg.Connection) or driver_connection.autocommit:
        return False
    if driver_connection.info.transaction_status != pq.TransactionStatus.IDLE:
        return False
    pgconn = driver_connection.pgconn
    if tenant_id is None:
        tenant = b"''"
    else:
        tenant = pq.Escaping(pgconn).escape_literal(
            tenant_id.encode(driver_connection.info.encoding)
        )
    command = (
        _begin_command(driver_connection) + _BEFORE_TENANT + tenant + _AFTER_TENANT[global_read]
    )
    with driver_connection.lock:
        result = pgconn.exec_(command)
    if result.status != pq.ExecStatus.TUPLES_OK:
        message = (result.error_message or pgconn.error_message).decode(errors="replace")
        sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
        error = psycopg.errors.lookup(sqlstate.decode()) if sqlstate else psycopg.OperationalError
        raise error(message.strip() or "could not open the transaction")
    return True
