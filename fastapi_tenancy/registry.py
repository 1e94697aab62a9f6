"""The tenants table and the life of a tenant in it: create, suspend, resume.

The app keeps its own tenants model; :class:`TenantRegistry` names its columns (the key, the
active flag, optional creation and suspension times) and the rules of creation: a limit on the
number of tenants, a hook before the row is written (validate, refuse, fill in fields) and one
after, run in the same transaction in a session scoped to the new tenant (seed its rows). The
tenancy's lookup reads the same table, and every change reaches every worker's lookup cache
through ``tenant_changes`` (see :mod:`fastapi_tenancy.changes`).

``tenancy.tenants`` is a :class:`Tenants` on a sync engine; ``tenancy.async_tenants`` an
:class:`AsyncTenants` on an async one.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Engine, delete, func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Session, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .context import with_tenant
from .exceptions import (
    AlreadyExists,
    TenancyMisuse,
    TenantExists,
    TenantLimitReached,
    TenantNotFound,
)
from .lookup import TenantTableLookup
from .purge import PurgeReport, PurgeStep, log_purge, purge_plan

if TYPE_CHECKING:
    from .tenancy import Tenancy

__all__ = ["AsyncTenants", "TenantRegistry", "Tenants"]

RecordT = TypeVar("RecordT")

BeforeCreate = Callable[[Any, dict[str, Any]], "Awaitable[None] | None"]
AfterCreate = Callable[[Any, Any], "Awaitable[None] | None"]


@dataclass(frozen=True)
class TenantRegistry(Generic[RecordT]):
    """Where the tenants are, and how a tenant is created.

    ``model`` is the app's SQLModel table of tenants; ``key`` and ``active`` name its key
    column (unique) and active flag; ``created_at`` and ``suspended_at``, if given, name
    timezone-aware datetime columns the kit fills in. ``before_create(key, fields)`` may change
    ``fields`` or raise a :class:`TenancyError` to refuse; ``after_create(record, session)``
    runs in the creating transaction with the new tenant bound (``get_current_tenant()``,
    ``carry_tenant`` see it) and a session scoped to it (a failure rolls the whole creation
    back). ``max_tenants`` counts every row of the table, suspended ones
    included, in the creating transaction: two creates racing at the limit may both pass; take
    a lock in ``before_create`` if the limit is a contract.
    """

    model: type[RecordT]
    key: str = "slug"
    active: str = "active"
    created_at: str | None = None
    suspended_at: str | None = None
    max_tenants: int | None = None
    before_create: BeforeCreate | None = None
    after_create: AfterCreate | None = None

    def lookup(self) -> TenantTableLookup[RecordT]:
        """The lookup that reads this table (``Tenancy`` uses it when given no ``lookup``)."""
        return TenantTableLookup(self.model, key=self.key, active=self.active)

    def new_record(self, key: Any, fields: dict[str, Any]) -> RecordT:
        values: dict[str, Any] = {self.active: True, **fields, self.key: key}
        if self.created_at is not None:
            values.setdefault(self.created_at, _now())
        return self.model(**values)

    def by_key(self, key: Any) -> Any:
        return select(self.model).where(getattr(self.model, self.key) == key)

    def count(self) -> Any:
        return select(func.count()).select_from(self.model)

    def delete(self, key: Any) -> Any:
        return delete(self.model).where(getattr(self.model, self.key) == key)

    def mark(self, record: Any, active: bool) -> None:
        setattr(record, self.active, active)
        if self.suspended_at is not None:
            setattr(record, self.suspended_at, None if active else _now())


class Tenants(Generic[RecordT]):
    """Create, read, suspend, resume and purge tenants on a sync engine: ``tenancy.tenants``."""

    def __init__(self, tenancy: Tenancy, registry: TenantRegistry[RecordT]) -> None:
        for hook in (registry.before_create, registry.after_create):
            if hook is not None and _is_async(hook):
                raise TenancyMisuse("this Tenancy has a sync engine: its tenant hooks must be sync")
        if not isinstance(tenancy.engine, Engine):
            raise TenancyMisuse("Tenants needs a Tenancy on a sync Engine: use AsyncTenants")
        self.tenancy = tenancy
        self.registry = registry
        self._engine = tenancy.engine

    def create(self, key: Any, **fields: Any) -> RecordT:
        """Create tenant ``key`` with ``fields``, through both hooks, in one transaction.

        Raises :class:`TenantExists` if the key is taken, :class:`TenantLimitReached` at the
        limit, or what ``before_create`` raises; then every worker forgets any cached miss of it.
        """
        registry, key = self.registry, _checked_key(self.tenancy, key)
        with self.tenancy.session(tenant=key) as session:
            limit = registry.max_tenants
            if limit is not None and session.exec(registry.count()).one() >= limit:
                raise TenantLimitReached()
            if registry.before_create is not None:
                registry.before_create(key, fields)
            record = registry.new_record(key, fields)
            session.add(record)
            try:
                session.flush()
            except AlreadyExists as error:
                raise TenantExists() from error
            if registry.after_create is not None:
                with with_tenant(key, source="registry"):
                    registry.after_create(record, session)
            session.commit()
        self.tenancy.tenant_changed_sync(key)
        return record

    def get(self, key: Any) -> RecordT:
        """The record of tenant ``key``, active or not; :class:`TenantNotFound` if none."""
        with Session(self._engine, expire_on_commit=False) as session:
            record: RecordT = _found(
                session.exec(self.registry.by_key(_checked_key(self.tenancy, key))).first()
            )
        return record

    def suspend(self, key: Any) -> RecordT:
        """Switch tenant ``key`` off: every worker answers ``403 tenant_inactive`` at once
        (with ``tenant_changes``; else within the lookup's ``ttl``)."""
        return self._set_active(key, False)

    def resume(self, key: Any) -> RecordT:
        """Switch tenant ``key`` back on."""
        return self._set_active(key, True)

    def purge(
        self,
        key: Any,
        *,
        dry_run: bool = False,
        batch_size: int = 1000,
        resumable: bool = False,
    ) -> PurgeReport:
        """Delete every row of suspended tenant ``key`` from every tenant model, then its
        record; audited on ``fastapi_tenancy.audit``.

        ``dry_run`` counts and deletes nothing. Rows go ``batch_size`` at a time, in one
        transaction, or committed batch by batch with ``resumable`` (a purge interrupted then
        is finished by the next). An active tenant is refused: suspend it first, so that no
        request writes while it goes.
        """
        key = _checked_key(self.tenancy, key)
        _refuse_active(self.registry, self.get(key))
        with self._engine.connect() as connection:
            steps = purge_plan(connection)
        report = PurgeReport(key, dry_run)
        with self.tenancy.session(tenant=key) as session:
            for step in steps:
                report.rows[step.table.name] = (
                    session.exec(step.count(key)).one()
                    if dry_run
                    else _purge_step_sync(session, step, key, batch_size, resumable)
                )
            if not dry_run:
                session.exec(self.registry.delete(key))
                session.commit()
        log_purge(report)
        if not dry_run:
            self.tenancy.tenant_changed_sync(key)
        return report

    def _set_active(self, key: Any, active: bool) -> RecordT:
        key = _checked_key(self.tenancy, key)
        with Session(self._engine, expire_on_commit=False) as session:
            record: RecordT = _found(
                session.exec(self.registry.by_key(key).with_for_update()).first()
            )
            self.registry.mark(record, active)
            session.add(record)
            session.commit()
        self.tenancy.tenant_changed_sync(key)
        return record


class AsyncTenants(Generic[RecordT]):
    """Async twin of :class:`Tenants`, for a Tenancy on an ``AsyncEngine``
    (``tenancy.async_tenants``); hooks may be sync or async."""

    def __init__(self, tenancy: Tenancy, registry: TenantRegistry[RecordT]) -> None:
        if not isinstance(tenancy.engine, AsyncEngine):
            raise TenancyMisuse("AsyncTenants needs a Tenancy on an AsyncEngine: use Tenants")
        self.tenancy = tenancy
        self.registry = registry
        self._engine = tenancy.engine

    async def create(self, key: Any, **fields: Any) -> RecordT:
        """See :meth:`Tenants.create`."""
        registry, key = self.registry, _checked_key(self.tenancy, key)
        async with self.tenancy.async_session(tenant=key) as session:
            limit = registry.max_tenants
            if limit is not None and (await session.exec(registry.count())).one() >= limit:
                raise TenantLimitReached()
            if registry.before_create is not None:
                await _maybe_await(registry.before_create(key, fields))
            record = registry.new_record(key, fields)
            session.add(record)
            try:
                await session.flush()
            except AlreadyExists as error:
                raise TenantExists() from error
            if registry.after_create is not None:
                with with_tenant(key, source="registry"):
                    await _maybe_await(registry.after_create(record, session))
            await session.commit()
        await self.tenancy.tenant_changed(key)
        return record

    async def get(self, key: Any) -> RecordT:
        """See :meth:`Tenants.get`."""
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            result = await session.exec(self.registry.by_key(_checked_key(self.tenancy, key)))
            record: RecordT = _found(result.first())
        return record

    async def suspend(self, key: Any) -> RecordT:
        """See :meth:`Tenants.suspend`."""
        return await self._set_active(key, False)

    async def resume(self, key: Any) -> RecordT:
        """See :meth:`Tenants.resume`."""
        return await self._set_active(key, True)

    async def purge(
        self,
        key: Any,
        *,
        dry_run: bool = False,
        batch_size: int = 1000,
        resumable: bool = False,
    ) -> PurgeReport:
        """See :meth:`Tenants.purge`."""
        key = _checked_key(self.tenancy, key)
        _refuse_active(self.registry, await self.get(key))
        async with self._engine.connect() as connection:
            steps = await connection.run_sync(purge_plan)
        report = PurgeReport(key, dry_run)
        async with self.tenancy.async_session(tenant=key) as session:
            for step in steps:
                if dry_run:
                    report.rows[step.table.name] = (await session.exec(step.count(key))).one()
                    continue
                report.rows[step.table.name] = await _purge_step_async(
                    session, step, key, batch_size, resumable
                )
            if not dry_run:
                await session.exec(self.registry.delete(key))
                await session.commit()
        log_purge(report)
        if not dry_run:
            await self.tenancy.tenant_changed(key)
        return report

    async def _set_active(self, key: Any, active: bool) -> RecordT:
        key = _checked_key(self.tenancy, key)
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            result = await session.exec(self.registry.by_key(key).with_for_update())
            record: RecordT = _found(result.first())
            self.registry.mark(record, active)
            session.add(record)
            await session.commit()
        await self.tenancy.tenant_changed(key)
        return record


def _purge_step_sync(
    session: Any, step: PurgeStep, key: Any, batch_size: int, resumable: bool
) -> int:
    batch = step.batch(key, batch_size)
    if batch is None:
        deleted = int(session.exec(step.delete_all(key)).rowcount)
        if resumable:
            session.commit()
        return deleted
    deleted = 0
    while ids := list(session.exec(batch).all()):
        deleted += int(session.exec(step.delete_batch(key, ids)).rowcount)
        if resumable:
            session.commit()
    return deleted


async def _purge_step_async(
    session: Any, step: PurgeStep, key: Any, batch_size: int, resumable: bool
) -> int:
    batch = step.batch(key, batch_size)
    if batch is None:
        deleted = int((await session.exec(step.delete_all(key))).rowcount)
        if resumable:
            await session.commit()
        return deleted
    deleted = 0
    while ids := list((await session.exec(batch)).all()):
        deleted += int((await session.exec(step.delete_batch(key, ids))).rowcount)
        if resumable:
            await session.commit()
    return deleted


def _refuse_active(registry: TenantRegistry[Any], record: Any) -> None:
    if getattr(record, registry.active):
        raise TenancyMisuse(
            f"tenant {getattr(record, registry.key)!r} is active: suspend it before purging "
            "it, so that no request writes while its rows go"
        )


def _checked_key(tenancy: Tenancy, key: Any) -> Any:
    """A key of the app's type; a string is held to the key pattern, as a request's would be."""
    return tenancy.keys.parse(key) if isinstance(key, str) else tenancy.keys.coerce(key)


def _found(record: Any) -> Any:
    if record is None:
        raise TenantNotFound()
    return record


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function)


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value
