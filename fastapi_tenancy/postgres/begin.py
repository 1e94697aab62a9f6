"""The tenant sent with the transaction's ``BEGIN``, in one message, on psycopg 3 (sync).

psycopg opens a transaction lazily: before the first statement it sends ``BEGIN`` (with the
connection's isolation options) on a round trip of its own, and only when the server reports
no transaction in progress. The kit sends that ``BEGIN`` itself, followed by the
``set_config`` call in the same simple-query message; psycopg then sees the transaction open and
sends no ``BEGIN`` of its own. COMMIT and ROLLBACK stay psycopg's. The tenant is quoted by libpq
(``PQescapeLiteral``), never spliced into SQL by hand.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import pq

from .policies import GLOBAL_READ_SETTING, TENANT_SETTING

__all__ = ["begin_with_setting"]

_SET_TENANT = f"SELECT set_config('{TENANT_SETTING}', ".encode()
_SET_GLOBAL_READ = f"SELECT set_config('{GLOBAL_READ_SETTING}', 'on', true)".encode()


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


def begin_with_setting(driver_connection: Any, tenant_id: str | None) -> bool:
    """Open the transaction with ``BEGIN; SELECT set_config(...)`` in one message.

    ``tenant_id`` ``None`` names the global read. Answers ``False``, having sent nothing, when
    this cannot be done: not a sync psycopg connection, autocommit, or a transaction already
    open; the caller then sends ``set_config`` as a statement of its own.
    """
    if not isinstance(driver_connection, psycopg.Connection) or driver_connection.autocommit:
        return False
    if driver_connection.info.transaction_status != pq.TransactionStatus.IDLE:
        return False
    pgconn = driver_connection.pgconn
    if tenant_id is None:
        setting = _SET_GLOBAL_READ
    else:
        quoted = pq.Escaping(pgconn).escape_literal(
            tenant_id.encode(driver_connection.info.encoding)
        )
        setting = _SET_TENANT + quoted + b", true)"
    with driver_connection.lock:
        result = pgconn.exec_(_begin_command(driver_connection) + b"; " + setting)
    if result.status != pq.ExecStatus.TUPLES_OK:
        message = (result.error_message or pgconn.error_message).decode(errors="replace")
        sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
        error = psycopg.errors.lookup(sqlstate.decode()) if sqlstate else psycopg.OperationalError
        raise error(message.strip() or "could not open the transaction")
    return True
