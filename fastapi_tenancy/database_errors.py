"""Database failures told apart: unavailable (503), conflicting writes (409), or a bug (500).

The driver's error codes say which: a connection that is gone, a pool that is exhausted or a
statement timeout is the database's state, and the request may be retried later; a deadlock, a
lock wait, a foreign key whose row was deleted meanwhile, or an UPDATE or a re-read that finds
its row deleted meanwhile is a concurrent write, and the
request may be retried at once; a duplicate is ``AlreadyExists``; anything else is a bug and
answers a generic 500. PostgreSQL codes are SQLSTATEs; MySQL and MariaDB codes are their error
numbers; SQLite says it in the message. Citus refusing to move a row to another tenant (to
change its distribution column) is :class:`~fastapi_tenancy.CrossTenantWrite`, with the way to
move a tenant there.
"""

from __future__ import annotations

import asyncio
import socket

from sqlalchemy import exc
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

from .exceptions import (
    AlreadyExists,
    CrossTenantWrite,
    DatabaseUnavailable,
    InternalError,
    TenancyError,
    WriteConflict,
)
from .session import is_unique_violation

__all__ = ["as_tenancy_error", "classify_database_error"]

# PostgreSQL: serialization failure, deadlock, lock not available
_PG_CONFLICT = frozenset({"40001", "40P01", "55P03"})
# PostgreSQL: query canceled (statement_timeout), connection exceptions, shutdown, too many
# connections, cannot connect now, read only transaction on a standby
_PG_UNAVAILABLE_PREFIXES = ("08", "57", "53")
_PG_UNAVAILABLE = frozenset({"25006"})
_PG_FOREIGN_KEY = "23503"
# MySQL / MariaDB: deadlock, lock wait timeout
_MYSQL_CONFLICT = frozenset({1213, 1205})
# MySQL / MariaDB: foreign key: cannot add a child row / cannot delete a parent row
_MYSQL_FOREIGN_KEY = frozenset({1452, 1451})
# MySQL / MariaDB: gone away, lost connection, cannot connect, too many connections, server
# shutdown, statement timeouts (MariaDB max_statement_time, MySQL max_execution_time)
_MYSQL_UNAVAILABLE = frozenset({2006, 2013, 2003, 1040, 1053, 1969, 3024})
# Citus: an UPDATE of a distributed table's distribution column (a move between tenants)
_CITUS_MOVE = "modifying the partition value of rows is not allowed"


def classify_database_error(error: exc.SQLAlchemyError) -> TenancyError:
    """The kit's error that answers a database failure, with ``error`` as its cause."""
    answer = _classify(error)
    answer.__cause__ = error
    return answer


# Raised past SQLAlchemy by asyncpg: refused, reset, timed out, a host that does not resolve.
_UNREACHABLE = (ConnectionError, TimeoutError, asyncio.TimeoutError, socket.gaierror)


def as_tenancy_error(error: BaseException) -> TenancyError | None:
    """The kit's error that answers ``error``, or ``None`` when it has no better name for it.

    A connection refused, reset or timed out, or a host name that does not resolve, that
    reaches the app unwrapped (asyncpg raises ``OSError`` and ``TimeoutError`` on connect and on
    ``command_timeout``, past SQLAlchemy) is :class:`DatabaseUnavailable`: the database, or the
    service behind it, is unreachable.
    """
    if isinstance(error, TenancyError):
        return error
    if isinstance(error, exc.SQLAlchemyError):
        return classify_database_error(error)
    if isinstance(error, _UNREACHABLE):
        answer = DatabaseUnavailable()
        answer.__cause__ = error
        return answer
    return None


def _classify(error: exc.SQLAlchemyError) -> TenancyError:
    if isinstance(error, exc.TimeoutError):  # no connection left in the pool in time
        return DatabaseUnavailable()
    if isinstance(error, StaleDataError | ObjectDeletedError):
        return WriteConflict()  # the row was deleted by another transaction meanwhile
    if not isinstance(error, exc.DBAPIError):
        return InternalError()
    if error.connection_invalidated:
        return DatabaseUnavailable()
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    args = getattr(original, "args", ())
    number = args[0] if args and isinstance(args[0], int) else None
    if isinstance(error, exc.IntegrityError):
        if is_unique_violation(error):
            return AlreadyExists()
        if sqlstate == _PG_FOREIGN_KEY or number in _MYSQL_FOREIGN_KEY:
            return WriteConflict()
        if "FOREIGN KEY constraint failed" in str(original):
            return WriteConflict()
        return InternalError()
    if _CITUS_MOVE in str(original):
        return CrossTenantWrite(
            "moving rows between tenants is refused: Citus keeps each tenant's rows on its "
            "own shard; export the tenant and import it under its new key instead"
        )
    if isinstance(sqlstate, str):
        if sqlstate in _PG_CONFLICT:
            return WriteConflict()
        if sqlstate.startswith(_PG_UNAVAILABLE_PREFIXES) or sqlstate in _PG_UNAVAILABLE:
            return DatabaseUnavailable()
    if number in _MYSQL_CONFLICT:
        return WriteConflict()
    if number in _MYSQL_UNAVAILABLE:
        return DatabaseUnavailable()
    if type(original).__module__.startswith("sqlite3"):
        # SQLite's busy timeout ran out while another connection wrote; anything else is a bug
        locked = "database is locked" in str(original) or "database table is locked" in str(
            original
        )
        return WriteConflict() if locked else InternalError()
    unanswered = sqlstate is None and (number is None or number >= 2000)
    if unanswered and isinstance(error, exc.OperationalError | exc.InterfaceError):
        return DatabaseUnavailable()  # no answer from the server: the connection failed
    return InternalError()
