"""Checks on flush: the unit-of-work side of the tenant wall.

The ORM writes pending objects with UPDATE/DELETE ... WHERE primary key, which no loader
criteria reach. So before every flush the kit stamps new rows with the session's tenant, refuses
rows that name or point at another tenant, refuses moving a row between tenants outside a
``mutable_tenant()`` block, and proves that every row it is about to update or delete was read
from the database as the session's tenant's row.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, inspect, select, tuple_
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import flag_modified
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.orm.exc import ObjectDeletedError
from sqlalchemy.orm.interfaces import MANYTOONE
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import Join, Select
from sqlalchemy.sql.util import ClauseAdapter

from .context import audit_logger, get_tenant_context
from .exceptions import (
    CrossScopeWrite,
    CrossTenantWrite,
    RowPolicyViolation,
    RowScopeRequired,
    TenantRequired,
    WriteConflict,
)
from .isolation.placement import TENANT_SCHEMA, Strategy
from .models import TENANT_TABLE_INFO_KEY, is_tenant_model
from .row_policies import declared_row_policies, row_policies_of
from .row_scopes import row_scope_missing, row_scope_param, row_scopes_of
from .scope import Access, SessionScope
from .wall import TENANT_PARAM, guard_of

__all__ = ["check_flush", "note_attached", "read_here", "refuse_move_out_of_place"]

_ATTACHED_UNREAD = "fastapi_tenancy.attached_unread"
"""``session.info`` key: states of objects with an identity that entered without a read."""


def note_attached(session: Session, instance: Any) -> None:
    """Remember ``instance`` if it holds an identity it did not get from a read of this
    session (``add()`` of a detached object, ``merge(load=False)``): its key may be forged."""
    state = inspect(instance)
    if state.key is not None:
        unread = session.info.get(_ATTACHED_UNREAD)
        if unread is None:
            unread = session.info[_ATTACHED_UNREAD] = weakref.WeakSet()
        unread.add(state)


def read_here(session: Session, obj: Any) -> bool:
    """Whether ``obj`` came into ``session`` by a read of it (a scoped read: it was the
    tenant's row then), not by ``add()`` of a detached object or ``merge(load=False)``."""
    unread = session.info.get(_ATTACHED_UNREAD)
    return unread is None or inspect(obj) not in unread


def check_flush(session: Session, scope: SessionScope) -> None:
    """Stamp and check every tenant row that this flush will write."""
    context = get_tenant_context()
    mutable = context is not None and context.mutable
    tenant = scope.tenant_id
    new = [o for o in session.new if is_tenant_model(type(o))]
    dirty = [o for o in session.dirty if is_tenant_model(type(o))]
    deleted = [o for o in session.deleted if is_tenant_model(type(o))]
    for obj in dirty:
        _check_move(obj, scope, mutable)
        _check_row_scope_moves(obj, scope)
    if scope.scoped and tenant is not None:
        _scope_expressions(session, scope)
    if not scope.scoped:
        # Nothing to stamp with: a new row must name its tenant, or the database's NOT NULL
        # would answer instead, as a bare error after part of the flush was sent.
        for obj in new:
            if obj.tenant_id is None and not type(obj).__shared_rows__:
                raise TenantRequired(
                    f"a new {type(obj).__name__} needs its tenant_id in an unscoped session"
                )
        return
    if tenant is None:
        if new or deleted or any(session.is_modified(o) for o in dirty):
            what = "tenant-scoped rows" if scope.access is Access.GLOBAL else "rows"
            raise TenantRequired(f"writing {what} needs a bound tenant")
        return
    for obj in new:
        current = obj.tenant_id
        if current is None:
            obj.tenant_id = tenant
        elif current != tenant:
            raise CrossTenantWrite(f"a new {type(obj).__name__} names another tenant")
        _stamp_row_scopes(obj, scope)
    # Every dirty row, even one with no net change: it is in this session's identity map, and
    # the unit of work may still write it (a collection append syncs its foreign key).
    written = (*dirty, *deleted)
    for obj in written:
        state = inspect(obj)
        if state.expired_attributes and read_here(session, obj):
            _load_expired(obj, state.expired_attributes & state.unmodified)
        if _committed(state, "tenant_id") != tenant:
            raise CrossTenantWrite(f"this {type(obj).__name__} belongs to another tenant")
        if not mutable and obj.tenant_id != tenant:
            raise CrossTenantWrite(f"this {type(obj).__name__} would move to another tenant")
        _check_row_scopes_held(obj, state, scope)
    if declared_row_policies():
        for obj in new:
            _check_row_policies(obj, scope, new=True)
        for obj in dirty:
            _check_row_policies(obj, scope, new=False)
    _prove_owned(session, written)
    _check_references(session, (*new, *dirty), tenant)


def _stamp_row_scopes(obj: Any, scope: SessionScope) -> None:
    """Give a new row the session's value of each of its row scopes, and refuse one naming
    another value (another owner) unless the session lifts that scope."""
    for name, attribute in type(obj).__row_scopes__.items():
        current = getattr(obj, attribute)
        value = scope.row_value(name)
        if current is None:
            if value is None:
                raise RowScopeRequired(row_scope_missing(name))
            setattr(obj, attribute, value)
        elif current != value and scope.enforces(name):
            raise CrossScopeWrite(f"a new {type(obj).__name__} names another {name}")


def _check_row_policies(obj: Any, scope: SessionScope, *, new: bool) -> None:
    """Refuse a row that would fail a row policy the session applies, before any SQL: a new
    row, or a changed one (whose UPDATE then sets every column of a policy term it touches,
    so the wall can check the term on the values sent)."""
    state = inspect(obj)
    mapper = state.mapper
    policies = row_policies_of(mapper.local_table)
    for name, policy in policies.items():
        if name in scope.lifted:
            continue
        for term in policy.terms:
            keys = {
                c: mapper.get_property_by_column(mapper.local_table.c[c]).key for c in term.columns
            }
            changed = new or any(state.attrs[key].history.has_changes() for key in keys.values())
            if not changed:
                continue
            if not term.admits({column: getattr(obj, key) for column, key in keys.items()}):
                raise RowPolicyViolation(
                    f"this {type(obj).__name__} would fail its row policy {name!r}"
                )
            if not new:
                for key in keys.values():
                    flag_modified(obj, key)


def _check_row_scopes_held(obj: Any, state: InstanceState[Any], scope: SessionScope) -> None:
    """Refuse writing a row of another value of a row scope the session applies (another
    owner's public row, read here): it reads such rows, it does not own them."""
    for name, attribute in type(obj).__row_scopes__.items():
        if not scope.enforces(name):
            continue
        value = scope.row_value(name)
        if value is None:
            raise RowScopeRequired(row_scope_missing(name))
        if _committed(state, attribute) != value:
            raise CrossScopeWrite(f"this {type(obj).__name__} belongs to another {name}")


def _check_row_scope_moves(obj: Any, scope: SessionScope) -> None:
    """Refuse changing a row's row scope value (giving a note to another owner) unless the
    session lifts that scope."""
    state = inspect(obj)
    for name, attribute in type(obj).__row_scopes__.items():
        history = state.attrs[attribute].history
        moved = history.deleted and history.added and history.deleted[0] != history.added[0]
        if moved and scope.enforces(name):
            raise CrossScopeWrite(
                f"this {type(obj).__name__} would move to another {name}; only a session "
                f"that lifts {name!r} may do that"
            )


def _load_expired(obj: Any, unloaded: set[str]) -> None:
    """Load what a commit expired of a row this session read, keeping its changes, so that
    its tenant is known: a row deleted meanwhile is a :class:`WriteConflict`. Reading one
    expired, unchanged attribute loads them all."""
    if not unloaded:
        return
    try:
        getattr(obj, next(iter(unloaded)))
    except ObjectDeletedError as error:
        raise WriteConflict(
            f"this {type(obj).__name__} was deleted by another request meanwhile"
        ) from error


def _scope_expressions(session: Session, scope: SessionScope) -> None:
    """Scope the SQL expressions that attributes were set to (``task.project_id =
    select(Project.id)...scalar_subquery()``): the unit of work writes them as they are, and
    its statements pass no ORM hook that would add the tenant to their SELECTs."""
    for obj in (*session.new, *session.dirty):
        state = inspect(obj)
        for key, value in list(state.dict.items()):
            if isinstance(value, ClauseElement):

                def filtered(element: Any, **kw: Any) -> Any:
                    return _filtered_select(element, scope)

                state.dict[key] = visitors.replacement_traverse(value, {}, filtered)


def _filtered_select(element: Any, scope: SessionScope) -> Any:
    """A SELECT with ``tenant_column = :tenant`` (and each applied row scope's filter) added for
    each tenant table in its FROM (the loader criteria of a SELECT nested in the unit of work's
    core statement do not apply)."""
    if not isinstance(element, Select):
        return None
    filtered = element
    for from_ in element.get_final_froms():
        for leaf in _leaves(from_):
            table = getattr(leaf, "element", leaf)
            name = getattr(table, "info", {}).get(TENANT_TABLE_INFO_KEY)
            if name is not None:
                column = next(c for c in leaf.c if c.name == name)
                filtered = filtered.where(column == scope.tenant_id)
                for scope_name, column_name in row_scopes_of(table).items():
                    if scope.enforces(scope_name):
                        value = scope.row_value(scope_name)
                        filtered = filtered.where(leaf.c[column_name] == value)
                for policy_name, policy in row_policies_of(table).items():
                    if scope.enforces(policy_name):
                        filtered = filtered.where(ClauseAdapter(leaf).traverse(policy.expression))
    return filtered


def _leaves(from_: Any) -> Iterable[Any]:
    if isinstance(from_, Join):
        yield from _leaves(from_.left)
        yield from _leaves(from_.right)
    else:
        yield from_


def _check_move(obj: Any, scope: SessionScope, mutable: bool) -> None:
    history = inspect(obj).attrs.tenant_id.history
    if not history.deleted or not history.added:
        return
    before, after = history.deleted[0], history.added[0]
    if before == after:
        return
    if not mutable:
        raise CrossTenantWrite("changing tenant_id is refused outside a mutable_tenant() block")
    if scope.scoped and scope.tenant_id is not None and before != scope.tenant_id:
        raise CrossTenantWrite(f"this {type(obj).__name__} belongs to another tenant")
    refuse_move_out_of_place(scope, inspect(obj).mapper.local_table)
    audit_logger.info(
        "row moved between tenants",
        extra={
            "tenancy_event": "tenant_moved",
            "tenancy_model": type(obj).__name__,
            "tenancy_from": before,
            "tenancy_to": after,
        },
    )


def refuse_move_out_of_place(scope: SessionScope, table: Any) -> None:
    """Refuse to move a row of a tenant kept in a schema or database of its own to another
    tenant: an UPDATE of ``tenant_id`` leaves it in this tenant's place, where the other
    tenant never reads it."""
    placement = scope.placement
    if (
        placement is not None
        and placement.strategy is not Strategy.SHARED
        and getattr(table, "schema", None) == TENANT_SCHEMA
    ):
        raise CrossTenantWrite(
            f"rows of {table.name} stay in their tenant's own schema or database: changing "
            "their tenant_id would hide them from both tenants; copy them to the other tenant "
            "instead"
        )


def _prove_owned(session: Session, objects: Iterable[Any]) -> None:
    """Prove, with one scoped query per model, that every row this flush updates or deletes
    is the tenant's: the unit of work writes ``WHERE primary key = ...`` with the keys the
    objects hold, which no loader criteria reach and which an object that entered the session
    without a read (``merge(load=False)``, ``add()`` of a detached object) could have forged.

    A row this session read as the tenant's and cannot find now was deleted (or moved) by
    another transaction meanwhile: that is :class:`WriteConflict`, not a cross-tenant write.
    An object that entered without a read gets ``CrossTenantWrite`` whether or not its key
    exists elsewhere, so the answer tells nothing about other tenants' rows."""
    by_mapper: dict[Mapper[Any], dict[tuple[Any, ...], list[Any]]] = defaultdict(dict)
    for obj in objects:
        state = inspect(obj)
        mapper = state.mapper
        key = tuple(
            _committed(state, mapper.get_property_by_column(column).key)
            for column in mapper.primary_key
        )
        by_mapper[mapper].setdefault(key, []).append(obj)
    for mapper, keyed in by_mapper.items():
        missing = keyed.keys() - _existing_keys(session, mapper, list(keyed), owned=True)
        if not missing:
            continue
        name = mapper.class_.__name__
        if not all(read_here(session, obj) for key in missing for obj in keyed[key]):
            raise CrossTenantWrite(f"this {name} belongs to another tenant")
        raise WriteConflict(f"this {name} was deleted by another request meanwhile")


def _committed(state: InstanceState[Any], key: str) -> Any:
    """The value of ``key`` as last read from or written to the database."""
    history = state.attrs[key].history
    if history.deleted:
        return history.deleted[0]
    if history.unchanged:
        return history.unchanged[0]
    return state.dict.get(key)


def _existing_keys(
    session: Session, mapper: Mapper[Any], keys: list[Any], *, owned: bool
) -> set[Any]:
    """The keys among ``keys`` of rows the tenant may write (``owned``: its own rows) or point
    at (its own rows, and the shared rows of a ``__shared_rows__`` model; never its family's
    rows, which it reads but does not own)."""
    columns = [
        getattr(mapper.class_, mapper.get_property_by_column(c).key) for c in mapper.primary_key
    ]
    if len(columns) == 1:
        condition = columns[0].in_([k[0] for k in keys])
    else:
        condition = tuple_(*columns).in_(keys)
    statement = select(*columns).where(condition)
    cls = mapper.class_
    public = cls.__row_scopes_public__
    shared = bool(cls.__shared_rows__ or public) and not owned
    # The read criteria admit more than the tenant's own rows: shared rows and public rows
    # (pointable, never written) and the family's rows (neither: a key of them proves nothing).
    if (cls.__shared_rows__ and owned) or cls.__tenant_reads__ != "own":
        statement = statement.where(cls.tenant_column() == bindparam(TENANT_PARAM))
    if owned:
        for name in public:
            attribute = getattr(cls, cls.__row_scopes__[name])
            statement = statement.where(attribute == bindparam(row_scope_param(name)))
    with session.no_autoflush:
        rows = session.execute(statement).all()
    found = {tuple(row) for row in rows}
    # The wall checks the unit of work's UPDATE/DELETE by key, and foreign keys, against the
    # rows proven the tenant's in this transaction: these need no second look-up.
    guard = guard_of(Session.connection(session, bind_arguments={"mapper": mapper}))
    if guard is not None:
        names = tuple(column.name for column in mapper.primary_key)
        guard.add_owned(mapper.local_table, names, found, shared=shared)
    return found


def _check_references(session: Session, objects: Iterable[Any], tenant: Any) -> None:
    """Refuse rows whose many-to-one relationships or foreign keys reach another tenant."""
    wanted: dict[Mapper[Any], set[Any]] = defaultdict(set)
    for obj in objects:
        state = inspect(obj)
        mapper = state.mapper
        for relationship in mapper.relationships:
            if relationship.direction is not MANYTOONE:
                continue
            target = state.dict.get(relationship.key, NO_VALUE)
            if target is NO_VALUE or target is None or not is_tenant_model(type(target)):
                continue
            if target.tenant_id is not None and target.tenant_id != tenant:
                raise CrossTenantWrite(
                    f"{type(obj).__name__}.{relationship.key} points at another tenant's row"
                )
        for column_key, _column, parent_mapper in _tenant_foreign_keys(mapper):
            history = state.attrs[column_key].history
            if state.key is not None and not history.added:
                continue
            value = state.dict.get(column_key)
            if value is not None and not isinstance(value, ClauseElement):
                wanted[parent_mapper].add((value,))  # expressions: the wall proves them
    for parent_mapper, keys in wanted.items():
        missing = keys - _existing_keys(session, parent_mapper, list(keys), owned=False)
        if not missing:
            continue
        name = parent_mapper.class_.__name__
        if all(_parent_read_here(session, parent_mapper, key) for key in missing):
            raise WriteConflict(f"this {name} was deleted by another request meanwhile")
        raise CrossTenantWrite(
            f"a foreign key points at a {name} that is not this tenant's (another tenant's, "
            "or none)"
        )


def _parent_read_here(session: Session, mapper: Mapper[Any], key: tuple[Any, ...]) -> bool:
    """Whether the row of ``key`` is in this session's identity map by a read of it."""
    held = session.identity_map.get(mapper.identity_key_from_primary_key(key))
    return held is not None and read_here(session, held)


_ForeignKeys = list[tuple[str, Any, Mapper[Any]]]
_FK_CACHE: weakref.WeakKeyDictionary[Mapper[Any], _ForeignKeys] = weakref.WeakKeyDictionary()


def _tenant_foreign_keys(mapper: Mapper[Any]) -> _ForeignKeys:
    """(attribute key, column, parent mapper) for single-column foreign keys to the primary
    keys of tenant tables."""
    cached = _FK_CACHE.get(mapper)
    if cached is not None:
        return cached
    found: _ForeignKeys = []
    for table in mapper.tables:
        for fk in table.foreign_keys:
            parent_table = fk.column.table
            if TENANT_TABLE_INFO_KEY not in parent_table.info:
                continue
            parent = _mapper_for_table(mapper, parent_table)
            if parent is None or list(parent.primary_key) != [fk.column]:
                continue
            prop = mapper._columntoproperty.get(fk.parent)
            if prop is not None:
                found.append((prop.key, fk.parent, parent))
    _FK_CACHE[mapper] = found
    return found


def _mapper_for_table(mapper: Mapper[Any], table: Any) -> Mapper[Any] | None:
    for candidate in mapper.registry.mappers:
        if candidate.local_table is table:
            return candidate
    return None
