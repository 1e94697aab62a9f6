"""The tenant named to PostgreSQL per transaction, never per connection.

A session made by a :class:`~fastapi_tenancy.Tenancy` with ``rls=True`` is an
:class:`RLSSession`: every transaction it begins (the first, and each one after a ``commit()``)
runs ``SELECT set_config('fastapi_tenancy.tenant_id', :tenant, true)`` first. The ``true``
makes the setting transaction-local: it ends with the COMMIT or ROLLBACK, so nothing survives
into the next use of a pooled connection, a transaction that raised leaves nothing behind, and a
pooler in transaction mode sees one self-contained transaction.

The setting costs no round trip of its own on psycopg 3 (sync): the session only notes the
tenant when the transaction begins, and the transaction's first statement carries it, both sent
in one pipeline (``set_config`` and the statement, one network round trip). Other drivers
(asyncpg, psycopg's async connection) run ``set_config`` as a statement of its own, which
costs one round trip per transaction; see ``docs/postgres-rls.md``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, RootTransaction
from sqlalchemy.engine.interfaces import DBAPICursor, Dialect, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, SessionTransaction

from ..exceptions import TenancyMisuse
from ..scope import Access
from ..session import TenantScopedSession, scope_of
from .policies import GLOBAL_READ_SETTING, TENANT_SETTING

__all__ = [
    "SETTING_KEY",
    "RLSSession",
    "RowLevelSecurity",
    "TenantSetting",
    "enable_tenant_setting",
    "flush_tenant_setting",
    "read_tenant_setting",
    "set_tenant",
    "tenant_savepoint",
]

SETTING_KEY = "fastapi_tenancy.rls"
"""Key in ``session.info`` under which an :class:`RLSSession` finds its :class:`TenantSetting`."""

_SET_TENANT = text(f"SELECT set_config('{TENANT_SETTING}', :tenant, true)")
_SET_GLOBAL_READ = text(f"SELECT set_config('{GLOBAL_READ_SETTING}', 'on', true)")
_READ_TENANT = text(f"SELECT NULLIF(current_setting('{TENANT_SETTING}', true), '')")
# The same statements in psycopg's own placeholder style, for the pipelined path.
_PSYCOPG_SET_TENANT = f"SELECT set_config('{TENANT_SETTING}', %s, true)"
_PSYCOPG_SET_GLOBAL_READ = f"SELECT set_config('{GLOBAL_READ_SETTING}', 'on', true)"


@dataclass(frozen=True)
class RowLevelSecurity:
    """Options of the PostgreSQL wall, for ``Tenancy(engine, ..., rls=RowLevelSecurity(...))``.

    ``rls=True`` means the defaults. ``pipeline`` sends the tenant together with each
    transaction's first statement where the driver allows it (psycopg 3, sync): no round trip
    of its own, at the price of psycopg's pipeline-mode work on the client, which on a local
    server can cost more than the round trip saved; off, the tenant is sent as a statement of
    its own. ``check_role`` refuses connections whose role would bypass row-level security
    without a word (see :mod:`fastapi_tenancy.postgres.guard`).
    """

    pipeline: bool = True
    check_role: bool = True


class _Pending:
    """A tenant noted when a transaction began, to send with its first statement."""

    __slots__ = ("params", "sql", "transaction")

    def __init__(self, transaction: RootTransaction, sql: str, params: tuple[str, ...]) -> None:
        self.transaction = weakref.ref(transaction)
        self.sql = sql
        self.params = params


# Keyed by the psycopg connection: SQLAlchemy's own per-connection info is out of reach in some
# dialect-level executions (the first connect), and a weak key lets a closed connection go.
_PENDING: weakref.WeakKeyDictionary[Any, _Pending] = weakref.WeakKeyDictionary()


class TenantSetting:
    """How one engine's sessions name their tenant; made by :func:`enable_tenant_setting`.

    Pipelined (psycopg 3, sync), the tenant is noted and travels with the transaction's first
    statement. Otherwise ``set_config`` runs at once on the driver's cursor, compiled once for
    the engine's dialect: a round trip, but little Python.
    """

    def __init__(self, dialect: Dialect | None = None, *, pipelined: bool = False) -> None:
        self.pipelined = pipelined
        self._raw: dict[bool, tuple[str, bool]] = {}
        if dialect is not None:
            for global_read, clause in ((False, _SET_TENANT), (True, _SET_GLOBAL_READ)):
                compiled = clause.compile(dialect=dialect)
                self._raw[global_read] = (compiled.string, bool(compiled.positional))

    def begin(self, connection: Connection, tenant_id: str | None, *, global_read: bool) -> None:
        """Name the tenant (or the global read) for the transaction ``connection`` just began."""
        if tenant_id is None and not global_read:
            return  # no tenant: the policies admit no row
        if self.pipelined:
            transaction = connection.get_transaction()
            if transaction is not None:
                sql, params = (
                    (_PSYCOPG_SET_TENANT, (tenant_id,))
                    if tenant_id is not None
                    else (_PSYCOPG_SET_GLOBAL_READ, ())
                )
                _PENDING[connection.connection.driver_connection] = _Pending(
                    transaction, sql, params
                )
                return
        raw = self._raw.get(tenant_id is None)
        if raw is None:
            _send(connection, tenant_id, global_read=global_read)
            return
        sql, positional = raw
        cursor = connection.connection.cursor()
        try:
            if tenant_id is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, (tenant_id,) if positional else {"tenant": tenant_id})
        finally:
            cursor.close()


def _send(connection: Connection, tenant_id: str | None, *, global_read: bool) -> None:
    if tenant_id is not None:
        connection.execute(_SET_TENANT, {"tenant": tenant_id})
    elif global_read:
        connection.execute(_SET_GLOBAL_READ)


def _take_pending(cursor: Any, context: ExecutionContext) -> _Pending | None:
    pending = _PENDING.pop(cursor.connection, None)
    if pending is None:
        return None
    root: Connection = context.root_connection
    if pending.transaction() is not root.get_transaction():
        return None  # noted for a transaction that ended before running anything
    return pending


def _pipelinable(cursor: Any) -> bool:
    import psycopg

    # A server-side (named) cursor cannot run in a pipeline.
    return not isinstance(cursor, psycopg.ServerCursor)


def _send_with(pending: _Pending, cursor: Any, run: Callable[[], object]) -> bool:
    """Send the noted ``set_config`` and the statement ``run`` sends, in one pipeline."""
    conn = cursor.connection
    if not _pipelinable(cursor):
        conn.execute(pending.sql, pending.params)
        return False  # SQLAlchemy runs the statement as usual
    helper = conn.cursor()
    try:
        with conn.pipeline():
            helper.execute(pending.sql, pending.params)
            run()
    finally:
        helper.close()
    return True


def _do_execute(
    cursor: DBAPICursor, statement: str, parameters: Any, context: ExecutionContext
) -> bool:
    pending = _take_pending(cursor, context)
    if pending is None:
        return False
    dialect = context.dialect
    return _send_with(
        pending, cursor, lambda: dialect.do_execute(cursor, statement, parameters, context)
    )


def _do_execute_no_params(cursor: DBAPICursor, statement: str, context: ExecutionContext) -> bool:
    pending = _take_pending(cursor, context)
    if pending is None:
        return False
    dialect = context.dialect
    return _send_with(
        pending, cursor, lambda: dialect.do_execute_no_params(cursor, statement, context)
    )


def _do_executemany(
    cursor: DBAPICursor, statement: str, parameters: Any, context: ExecutionContext
) -> bool:
    pending = _take_pending(cursor, context)
    if pending is not None:
        cursor.connection.execute(pending.sql, pending.params)
    return False


def _can_pipeline(engine: Engine) -> bool:
    dialect = engine.dialect
    if dialect.driver != "psycopg" or dialect.is_async:
        return False
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


def enable_tenant_setting(
    engine: Engine | AsyncEngine, options: RowLevelSecurity | None = None
) -> TenantSetting:
    """Prepare ``engine`` for per-transaction tenants; called by ``Tenancy(..., rls=...)``.

    Registers the pipelining hooks on this engine only (psycopg 3, sync) and, unless
    ``options.check_role`` is off, the check that refuses a role that would bypass the wall.
    """
    options = options or RowLevelSecurity()
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if sync_engine.dialect.name != "postgresql":
        raise TenancyMisuse(
            f"row-level security needs PostgreSQL; this engine is {sync_engine.dialect.name}"
        )
    pipelined = options.pipeline and _can_pipeline(sync_engine)
    if pipelined and not event.contains(sync_engine, "do_execute", _do_execute):
        event.listen(sync_engine, "do_execute", _do_execute)
        event.listen(sync_engine, "do_execute_no_params", _do_execute_no_params)
        event.listen(sync_engine, "do_executemany", _do_executemany)
    if options.check_role:
        from .guard import install_role_guard

        install_role_guard(sync_engine)
    return TenantSetting(sync_engine.dialect, pipelined=pipelined)


class RLSSession(TenantScopedSession):
    """A :class:`~fastapi_tenancy.session.TenantScopedSession` that names its tenant to
    PostgreSQL at the start of every transaction it begins.

    With a tenant, ``fastapi_tenancy.tenant_id`` is set; in the global-access switch with no
    tenant, ``fastapi_tenancy.global_read`` is; otherwise nothing is, and the policies admit
    no row. A session made by hand (without a :class:`TenantSetting` in its ``info``) sends the
    setting as a statement of its own.
    """


_UNPIPELINED = TenantSetting()


@event.listens_for(RLSSession, "after_begin")
def _name_tenant(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if transaction.nested:
        return  # a savepoint inherits the transaction's setting
    setting = session.info.get(SETTING_KEY)
    if not isinstance(setting, TenantSetting):
        setting = _UNPIPELINED
    scope = scope_of(session)
    global_read = scope.access is Access.GLOBAL and scope.tenant_id is None
    setting.begin(connection, scope.tenant_id, global_read=global_read)


def flush_tenant_setting(connection: Connection) -> None:
    """Send a tenant noted for pipelining now, before using the raw driver connection.

    Statements through SQLAlchemy carry it by themselves; ``cursor.copy()`` on the driver's
    own connection does not. Without this, such work sees no row (the wall fails closed).
    """
    driver_connection = connection.connection.driver_connection
    pending = _PENDING.pop(driver_connection, None)
    if pending is not None and pending.transaction() is connection.get_transaction():
        driver_connection.execute(pending.sql, pending.params)  # type: ignore[union-attr]


def set_tenant(connection: Connection, tenant_id: str | None) -> None:
    """Name ``tenant_id`` for the rest of ``connection``'s current transaction.

    For trusted code on a raw connection (scripts, jobs): the setting is transaction-local, so
    run it inside the transaction it is for. ``None`` clears it. Async:
    ``await conn.run_sync(set_tenant, "acme")``.
    """
    _PENDING.pop(connection.connection.driver_connection, None)
    connection.execute(_SET_TENANT, {"tenant": tenant_id or ""})


def read_tenant_setting(connection: Connection) -> str | None:
    """The tenant the current transaction names to the policies, or ``None``."""
    value = connection.execute(_READ_TENANT).scalar()
    return None if value is None else str(value)


@contextmanager
def tenant_savepoint(connection: Connection, tenant_id: str | None) -> Iterator[Connection]:
    """A SAVEPOINT during which the transaction names another tenant; the outer one is back after.

    PostgreSQL undoes a setting made inside a savepoint only when the savepoint rolls back; a
    released savepoint would keep it for the rest of the transaction. This block restores the
    outer tenant on both paths.
    """
    outer = read_tenant_setting(connection)
    with connection.begin_nested():
        set_tenant(connection, tenant_id)
        yield connection
        set_tenant(connection, outer)
