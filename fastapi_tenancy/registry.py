"""The tenants table and the rules of a tenant's creation.

The app keeps its own tenants model; :class:`TenantRegistry` names its columns (the key, the
active flag, optional creation and suspension times) and the rules of creation: a limit on the
number of tenants, a hook before the row is written (validate, refuse, fill in fields) and one
after, run in the same transaction in a session scoped to the new tenant (seed its rows). The
tenancy's lookup reads the same table, and every change reaches every worker's lookup cache
through ``tenant_changes`` (see :mod:`fastapi_tenancy.changes`).

The operations on it are ``tenancy.tenants`` (:class:`~fastapi_tenancy.tenants.Tenants`, on a
sync engine) and ``tenancy.async_tenants``
(:class:`~fastapi_tenancy.async_tenants.AsyncTenants`); this module also holds the steps they
share.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import TextClause, delete, func, update
from sqlmodel import select

from .exceptions import TenancyMisuse, TenantActive, TenantNotFound
from .isolation.placement import Placement, Strategy
from .lookup import TenantTableLookup
from .purge import PurgeStep
from .records import TenantRecord
from .transfer import ExportReader, TableCopy, decoded_fields, record_fields
from .wall.guard import kit_statement_options

if TYPE_CHECKING:
    from .tenancy import Tenancy

__all__ = ["TenantRegistry"]

RecordT = TypeVar("RecordT")

BeforeCreate = Callable[[Any, dict[str, Any]], "Awaitable[None] | None"]
AfterCreate = Callable[[Any, Any], "Awaitable[None] | None"]
BeforePurge = Callable[[Any, Any], "Awaitable[None] | None"]


@dataclass(frozen=True)
class TenantRegistry(Generic[RecordT]):
    """Where the tenants are, and how a tenant is created.

    ``model`` is the app's SQLModel table of tenants; ``key`` and ``active`` name its key
    column (unique) and active flag; ``created_at`` and ``suspended_at``, if given, name
    timezone-aware datetime columns the kit fills in (on a
    :class:`~fastapi_tenancy.TenantRecord`, its own columns, unless named otherwise).
    ``before_create(key, fields)`` may change ``fields`` or raise a :class:`TenancyError` to
    refuse; ``after_create(record, session)`` runs in the creating transaction with the new
    tenant bound (``get_current_tenant()``, ``carry_tenant`` see it) and a session scoped to it
    (a failure rolls the whole creation back). ``before_purge(record, session)`` runs in the
    transaction of a purge that deletes the record, just before, with the tenant bound: delete
    the rows of global tables that point at the tenant (its memberships), so that the purge
    stays all or nothing. ``max_tenants`` counts every row of the table,
    suspended ones included, in the creating transaction: two creates racing at the limit may
    both pass; take a lock in ``before_create`` if the limit is a contract.
    """

    model: type[RecordT]
    key: str = "slug"
    active: str = "active"
    created_at: str | None = None
    suspended_at: str | None = None
    max_tenants: int | None = None
    before_create: BeforeCreate | None = None
    after_create: AfterCreate | None = None
    before_purge: BeforePurge | None = None

    def __post_init__(self) -> None:
        if isinstance(self.model, type) and issubclass(self.model, TenantRecord):
            for column in ("created_at", "suspended_at"):
                if getattr(self, column) is None:
                    object.__setattr__(self, column, column)

    def lookup(self) -> TenantTableLookup[RecordT]:
        """The lookup that reads this table (``Tenancy`` uses it when given no ``lookup``)."""
        return TenantTableLookup(self.model, key=self.key, active=self.active)

    def new_record(self, key: Any, fields: dict[str, Any]) -> RecordT:
        values: dict[str, Any] = {self.active: True, **fields, self.key: key}
        if self.created_at is not None:
            values.setdefault(self.created_at, _now())
        return self.model(**values)

    def listing(self, active: bool | None) -> Any:
        statement = select(self.model).order_by(getattr(self.model, self.key))
        if active is not None:
            statement = statement.where(getattr(self.model, self.active) == active)
        return statement

    def key_column(self) -> Any:
        return getattr(self.model, self.key).property.columns[0]

    def record_fields(self, record: Any) -> dict[str, Any]:
        """The record's own fields for an export: not the key, the flag, the times or the id."""
        names = (self.key, self.active, self.created_at, self.suspended_at)
        skip = {name for name in names if name is not None}
        return record_fields(record, self.model.__table__, skip)  # type: ignore[attr-defined]

    def imported_fields(self, reader: ExportReader, fields: dict[str, Any]) -> dict[str, Any]:
        return {**decoded_fields(self.model, reader.manifest.get("record", {})), **fields}

    def by_key(self, key: Any) -> Any:
        return select(self.model).where(getattr(self.model, self.key) == key)

    def count(self) -> Any:
        return select(func.count()).select_from(self.model)

    def rekey(self, key: Any, new_key: Any) -> Any:
        column = getattr(self.model, self.key)
        return update(self.model).where(column == key).values({self.key: new_key})

    def delete(self, key: Any) -> Any:
        return delete(self.model).where(getattr(self.model, self.key) == key)

    def mark(self, record: Any, active: bool) -> None:
        setattr(record, self.active, active)
        if self.suspended_at is not None:
            setattr(record, self.suspended_at, None if active else _now())


def run_own_statement(session: Any, statement: TextClause) -> Any:
    """Run one of the kit's transaction statements (``BEGIN``, deferring foreign keys) past
    the wall, which lets through no other text; awaitable on an async session."""
    return session.exec(statement, execution_options=kit_statement_options(statement))


def import_plan(
    reader: ExportReader, steps: list[PurgeStep], *, partial: bool = False
) -> list[tuple[TableCopy, dict[str, Any]]]:
    """Each table of the export with the tenant model that maps it here, parents first;
    ``partial``: only the tables of ``steps``, the others left out."""
    by_name = {step.table.name: step for step in steps}
    plan = []
    for table in reader.tables:
        step = by_name.get(table["name"])
        if step is None and partial:
            continue
        if step is None:
            raise TenancyMisuse(
                f"the export has rows of table {table['name']!r}, which no tenant model "
                "maps in this database"
            )
        plan.append((TableCopy(step), table))
    return plan


def refuse_active(registry: TenantRegistry[Any], record: Any, doing: str = "purging") -> None:
    if getattr(record, registry.active):
        raise TenantActive(
            f"tenant {getattr(record, registry.key)!r} is active: suspend it before {doing} "
            "it, so that no request writes while its rows move"
        )


def refuse_renaming_apart(placement: Placement | None, key: Any) -> None:
    """A tenant in a schema or database of its own is named by its key there: renaming it
    would leave its place under the old name."""
    if placement is not None and placement.strategy is not Strategy.SHARED:
        raise TenancyMisuse(
            f"tenant {key} is in a {placement.strategy.value} of its own, named by its key: "
            "move it to the shared tables, rename it, and move it back"
        )


def refused_rename(key: Any) -> TenancyMisuse:
    return TenancyMisuse(
        f"renaming tenant {key!r} was refused by the database, and nothing changed: foreign "
        "keys that hold a tenant key need ON UPDATE CASCADE (or DEFERRABLE on PostgreSQL), "
        "and row-level security policies refuse rows moving to another tenant (rename as a "
        "role that bypasses them)"
    )


def checked_key(tenancy: Tenancy, key: Any) -> Any:
    """A key of the app's type; a string is held to the key pattern, as a request's would be."""
    return tenancy.keys.parse(key) if isinstance(key, str) else tenancy.keys.coerce(key)


def found(record: Any) -> Any:
    if record is None:
        raise TenantNotFound()
    return record


def _now() -> datetime:
    return datetime.now(timezone.utc)


def is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function)


async def maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value
