"""The kit's own Session class, on which every scoping hook is registered.

Hooks live on :class:`TenantScopedSession` only, never on SQLAlchemy's global ``Session``, so a host
application's other sessions are untouched. The tenant belongs to the session: it is fixed in
``session.info`` when the session is made and checked against the bound tenant on every use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction
from sqlmodel import Session as SQLModelSession

from .exceptions import AlreadyExists, CrossScopeWrite, CrossTenantWrite, UnscopedStatement
from .models import is_tenant_model
from .scope import Access, SessionScope
from .scoping import refuse_unscoped_moves, scope_execution
from .wall import audit_refused_write, guard_connection
from .wall.audit import AUDIT_KEY
from .writes import check_flush, note_attached

__all__ = ["SCOPE_KEY", "TenantScopedSession", "is_unique_violation", "scope_of"]

SCOPE_KEY = "fastapi_tenancy.scope"
_FAIL_CLOSED = SessionScope(tenant_id=None, access=Access.TENANT)


def scope_of(session: Session) -> SessionScope:
    """The scope a session was made with; a session made without one fails closed."""
    scope = session.info.get(SCOPE_KEY)
    return scope if isinstance(scope, SessionScope) else _FAIL_CLOSED


def is_unique_violation(error: IntegrityError) -> bool:
    """Whether a driver's integrity error is a unique or primary-key violation."""
    original = error.orig
    args = getattr(original, "args", ())
    if args and args[0] == 1062:  # MySQL / MariaDB ER_DUP_ENTRY
        return True
    if getattr(original, "sqlite_errorname", None) in _SQLITE_UNIQUE:
        return True
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if code == "23505":  # PostgreSQL unique_violation
        return True
    return "UNIQUE constraint failed" in str(original)


_SQLITE_UNIQUE = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})


class TenantScopedSession(SQLModelSession):
    """A SQLModel session scoped to the tenant in its :class:`SessionScope`.

    Its ``execute``, ``exec`` and ``flush`` answer unique violations with
    :class:`AlreadyExists`, each with a plain ``try``: they run on every request, where a
    context manager would cost a few calls each time.

    Made by :class:`~fastapi_tenancy.Tenancy` (``tenancy.session()`` or the dependencies);
    made directly without a scope it fails closed on every tenant model.
    """

    @property
    def scope(self) -> SessionScope:
        """The tenant and access mode this session was made with."""
        return scope_of(self)

    @property
    def tenant_id(self) -> Any:
        """The tenant key this session is scoped to, or ``None``."""
        return scope_of(self).tenant_id

    # Defined for the runtime only: type checkers keep seeing SQLModel's and SQLAlchemy's own
    # overloads (precise result types), which these wrappers return unchanged.
    if not TYPE_CHECKING:

        def get(self, *args: Any, **kwargs: Any) -> Any:
            """``Session.get``, refused when another tenant is bound (see ``check_ambient``)."""
            scope_of(self).check_ambient()
            return super().get(*args, **kwargs)

        def get_one(self, *args: Any, **kwargs: Any) -> Any:
            """``Session.get_one``, refused when another tenant is bound."""
            scope_of(self).check_ambient()
            return super().get_one(*args, **kwargs)

        def merge(self, *args: Any, **kwargs: Any) -> Any:
            """``Session.merge``, refused when another tenant is bound, or when the merged
            copy names another tenant (``merge(load=False)`` copies without a read)."""
            scope = scope_of(self)
            scope.check_ambient()
            merged = super().merge(*args, **kwargs)
            try:
                _refuse_foreign_objects(self, merged)
            except CrossTenantWrite:
                self.expunge(merged)
                raise
            return merged

    def connection(self, *args: Any, **kwargs: Any) -> Connection:
        """The raw connection, refused in scoped sessions: nothing on it would be scoped."""
        if scope_of(self).scoped:
            raise UnscopedStatement(
                "a scoped session does not hand out its raw connection, whose statements "
                "nothing would scope; use without_tenant() in trusted code"
            )
        return super().connection(*args, **kwargs)

    def bulk_save_objects(self, *args: Any, **kwargs: Any) -> None:
        """Refused in scoped sessions: the legacy bulk methods skip every ORM event."""
        _refuse_legacy_bulk(self)
        super().bulk_save_objects(*args, **kwargs)

    def bulk_insert_mappings(self, *args: Any, **kwargs: Any) -> None:
        """Refused in scoped sessions; use ``session.execute(insert(Model), rows)``."""
        _refuse_legacy_bulk(self)
        super().bulk_insert_mappings(*args, **kwargs)

    def bulk_update_mappings(self, *args: Any, **kwargs: Any) -> None:
        """Refused in scoped sessions; use ``session.execute(update(Model), rows)``."""
        _refuse_legacy_bulk(self)
        super().bulk_update_mappings(*args, **kwargs)

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        """``Session.flush``, answering unique violations with :class:`AlreadyExists`."""
        try:
            super().flush(objects)
        except IntegrityError as error:
            if is_unique_violation(error):
                raise AlreadyExists() from error
            raise

    if not TYPE_CHECKING:

        def execute(self, *args: Any, **kwargs: Any) -> Any:
            """``Session.execute``, answering unique violations with :class:`AlreadyExists`."""
            try:
                return super().execute(*args, **kwargs)
            except IntegrityError as error:
                if is_unique_violation(error):
                    raise AlreadyExists() from error
                raise

        def exec(self, *args: Any, **kwargs: Any) -> Any:
            """SQLModel's ``Session.exec``, answering unique violations with
            :class:`AlreadyExists` (it calls SQLAlchemy's ``execute`` directly)."""
            try:
                return super().exec(*args, **kwargs)
            except IntegrityError as error:
                if is_unique_violation(error):
                    raise AlreadyExists() from error
                raise


def _refuse_legacy_bulk(session: Session) -> None:
    if scope_of(session).scoped:
        raise UnscopedStatement(
            "the legacy bulk methods (bulk_save_objects, bulk_*_mappings) bypass the ORM's "
            "events and are refused in a scoped session; use session.execute(insert(Model), "
            "rows) or session.execute(update(Model), rows)"
        )


@event.listens_for(TenantScopedSession, "after_begin")
def _guard_connection(
    session: Session, transaction: SessionTransaction, connection: Connection
) -> None:
    """Mark the connection of a scoped session's transaction: every statement sent on it, the
    unit of work's included, goes through the wall's gate (:mod:`fastapi_tenancy.wall`), with
    what the session records of each (:mod:`fastapi_tenancy.wall.audit`)."""
    scope = scope_of(session)
    if scope.scoped:
        guard_connection(connection, scope).audit = session.info.get(AUDIT_KEY)
        placement = scope.placement
        if placement is not None and placement.schema is not None:
            # On this Connection only, which lives for one checkout: never on the pooled one.
            connection.execution_options(schema_translate_map=placement.translate_map)


@event.listens_for(TenantScopedSession, "before_attach")
def _refuse_foreign_objects(session: Session, instance: Any) -> None:
    """Refuse an object of another tenant (loaded elsewhere, then ``add()``-ed or merged in):
    once in the identity map, ``session.get()`` would hand it out with no SQL at all."""
    scope = scope_of(session)
    tenant = scope.tenant_id
    if tenant is None or not scope.scoped or not is_tenant_model(type(instance)):
        return
    held = inspect(instance).dict  # as held: reading may not load here
    owner = held.get("tenant_id")
    if owner is not None and owner != tenant:
        error = CrossTenantWrite(
            f"this {type(instance).__name__} belongs to another tenant and cannot join "
            "this tenant's session"
        )
        raise audit_refused_write(tenant, error)
    for name, attribute in type(instance).__row_scopes__.items():
        value = held.get(attribute)
        if value is not None and scope.enforces(name) and value != scope.row_value(name):
            error = CrossScopeWrite(
                f"this {type(instance).__name__} belongs to another {name} and cannot join "
                "this session"
            )
            raise audit_refused_write(tenant, error)
    note_attached(session, instance)


@event.listens_for(TenantScopedSession, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    scope = scope_of(state.session)
    scope.check_ambient()
    placement = scope.placement
    if placement is not None and placement.url is not None:
        # A database tenant's tables are bound to its own engine, found by the tables the
        # statement names; SQLAlchemy passes no clause for a Core statement, such as a union
        # of ORM selects, which would then go to the app's engine.
        state.bind_arguments.setdefault("clause", state.statement)
    try:
        if scope.scoped:
            scope_execution(state, scope)
        else:
            refuse_unscoped_moves(state)
    except CrossTenantWrite as error:
        raise audit_refused_write(scope.tenant_id, error) from error.__cause__


@event.listens_for(TenantScopedSession, "before_flush")
def _check_flush(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    scope = scope_of(session)
    scope.check_ambient()
    try:
        check_flush(session, scope)
    except CrossTenantWrite as error:
        raise audit_refused_write(scope.tenant_id, error) from error.__cause__
