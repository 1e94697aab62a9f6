"""The settings sent with the transaction's ``BEGIN``, in one message, on psycopg 3.

psycopg opens a transaction lazily: before the first statement it sends ``BEGIN`` (with the
connection's isolation options) on a round trip of its own, and only when the server reports
no transaction in progress. The kit sends that ``BEGIN`` itself, followed by the ``SET LOCAL``
commands naming every setting, in the same simple-query message::

    BEGIN; SET LOCAL fastapi_tenancy.tenant_id = 'acme';
           SET LOCAL fastapi_tenancy.global_read = ''

(and the row scopes', lifts' and family's settings where the process declares them; see
:func:`~fastapi_tenancy.postgres.setting.setting_commands`, which quotes every value). psycopg
then sees the transaction open and sends no ``BEGIN`` of its own. On an async psycopg
connection the same message goes out without blocking the event loop. COMMIT and ROLLBACK stay
psycopg's.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import generators, pq
from sqlalchemy.util import await_only

__all__ = ["begin_with_setting"]


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


def begin_with_setting(driver_connection: Any, commands: str) -> bool:
    """Open the transaction with ``BEGIN; <commands>``, one message.

    Answers ``False``, having sent nothing, when this cannot be done: not a psycopg connection,
    autocommit, or a transaction already open; the caller then sends ``commands`` on their
    own. On an async psycopg connection it is called from SQLAlchemy's sync facade (a
    greenlet), and awaits the answer through it.
    """
    if isinstance(driver_connection, psycopg.AsyncConnection):
        if not _idle(driver_connection):
            return False
        await_only(_begin_async(driver_connection, commands))
        return True
    if not isinstance(driver_connection, psycopg.Connection) or not _idle(driver_connection):
        return False
    command = _command(driver_connection, commands)
    with driver_connection.lock:
        results = driver_connection.pgconn.exec_(command)
    _check(driver_connection.pgconn, [results])
    return True


async def _begin_async(driver_connection: psycopg.AsyncConnection[Any], commands: str) -> None:
    command = _command(driver_connection, commands)
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
    driver_connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], commands: str
) -> bytes:
    encoding = driver_connection.info.encoding
    return _begin_command(driver_connection) + b"; " + commands.encode(encoding)


def _check(pgconn: Any, results: list[Any]) -> None:
    """Raise the server's error if the ``BEGIN`` or a ``SET LOCAL`` failed."""
    for result in results:
        if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            continue
        message = (result.error_message or pgconn.error_message).decode(errors="replace")
        sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
        error = psycopg.errors.lookup(sqlstate.decode()) if sqlstate else psycopg.OperationalError
        raise error(message.strip() or "could not open the transaction")
    if not results:
        raise psycopg.OperationalError("could not open the transaction")
