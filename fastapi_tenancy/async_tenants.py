"""``tenancy.async_tenants``: the life of a tenant on an ``AsyncEngine``.

The async twin of :class:`~fastapi_tenancy.tenants.Tenants`: the same operations, awaited;
the creation hooks may be ``async def``.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic

import anyio.to_thread
from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from .context import mutable_tenant, with_tenant
from .exceptions import (
    AlreadyExists,
    InternalError,
    TenancyMisuse,
    TenantExists,
    TenantLimitReached,
    WriteConflict,
)
from .isolation.lifecycle import (
    isolation_of,
    move_places,
    placed_only,
    provide,
    release_async,
    restart_sequences,
)
from .isolation.placement import Placement, Strategy
from .isolation.storage import present_placed_tables
from .jobs import JobReport, OnDone, run_for_each_tenant_async
from .purge import PurgeReport, PurgeStep, log_purge, purge_plan
from .registry import (
    RecordT,
    TenantRegistry,
    checked_key,
    found,
    import_plan,
    maybe_await,
    refuse_active,
    refuse_renaming_apart,
    refused_rename,
    run_own_statement,
)
from .transfer import (
    BATCH_SIZE,
    BEGIN,
    ExportReader,
    ExportWriter,
    IdMap,
    Progress,
    RenameReport,
    TableCopy,
    TransferReport,
    defer_foreign_keys,
    log_transfer,
    needs_explicit_begin,
    snapshot_options,
)

if TYPE_CHECKING:
    from .tenancy import Tenancy

__all__ = ["AsyncTenants"]


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
        registry, key = self.registry, checked_key(self.tenancy, key)
        placement, made = await self._provide(key, fields)
        try:
            async with self.tenancy.make_async_session(
                self.tenancy.whole_tenant_scope(key, placement)
            ) as session:
                record = await self._add_record(session, key, fields)
                if registry.after_create is not None:
                    with with_tenant(key, source="registry"):
                        await maybe_await(registry.after_create(record, session))
                await session.commit()
        except BaseException:
            if placement is not None and made:
                await release_async(self.tenancy, placement)
            raise
        await self.tenancy.tenant_changed(key)
        return record

    async def _provide(self, key: Any, fields: dict[str, Any]) -> tuple[Placement | None, bool]:
        """See :meth:`Tenants._provide`; the place is made in a worker thread."""
        placement = self.tenancy.placement_of(key, self.registry.new_record(key, dict(fields)))
        if placement is None:
            return None, False
        spelled = self.tenancy.keys.format(key)
        tables = await self._present_placed_tables()
        made = await anyio.to_thread.run_sync(provide, self.tenancy, spelled, placement, tables)
        return placement, made

    async def _present_placed_tables(self) -> list[Table]:
        """The placed tables whose shared copy is in the app's database, read on the app's own
        engine (its connection settings, the default schema among them)."""
        async with self._engine.connect() as connection:
            return await connection.run_sync(present_placed_tables)

    async def _add_record(self, session: Any, key: Any, fields: dict[str, Any]) -> RecordT:
        registry = self.registry
        limit = registry.max_tenants
        if limit is not None and (await session.exec(registry.count())).one() >= limit:
            raise TenantLimitReached()
        if registry.before_create is not None:
            await maybe_await(registry.before_create(key, fields))
        record = registry.new_record(key, fields)
        session.add(record)
        try:
            await session.flush()
        except AlreadyExists as error:
            raise TenantExists() from error
        return record

    async def get(self, key: Any) -> RecordT:
        """See :meth:`Tenants.get`."""
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            result = await session.exec(self.registry.by_key(checked_key(self.tenancy, key)))
            record: RecordT = found(result.first())
        return record

    async def list(self, *, active: bool | None = None) -> list[RecordT]:
        """See :meth:`Tenants.list`."""
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            return list((await session.exec(self.registry.listing(active))).all())

    async def for_each(
        self,
        function: Callable[[Any], Awaitable[object]],
        *,
        concurrency: int = 4,
        on_done: OnDone | None = None,
    ) -> JobReport:
        """See :meth:`Tenants.for_each`; ``function`` is awaited."""
        keys = [getattr(record, self.registry.key) for record in await self.list(active=True)]
        return await run_for_each_tenant_async(
            keys, function, concurrency=concurrency, on_done=on_done
        )

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
        progress: Progress | None = None,
    ) -> PurgeReport:
        """See :meth:`Tenants.purge`; ``before_purge`` may be async."""
        key = checked_key(self.tenancy, key)
        record = await self.get(key)
        if not dry_run:
            refuse_active(self.registry, record)
        placement = self.tenancy.placement_of(key, record)
        async with self._engine.connect() as connection:
            steps = await connection.run_sync(purge_plan)
        report = PurgeReport(key, dry_run)
        scope = self.tenancy.whole_tenant_scope(key, placement)
        if placement is not None and placement.strategy is not Strategy.SHARED and not dry_run:
            placed = placed_only(steps)
            async with self.tenancy.make_async_session(scope) as session:
                for step in placed:
                    report.rows[step.table.name] = (await session.exec(step.count(key))).one()
            await release_async(self.tenancy, placement)
            steps = [step for step in steps if step not in placed]
        async with self.tenancy.make_async_session(scope) as session:
            for step in steps:
                if dry_run:
                    report.rows[step.table.name] = (await session.exec(step.count(key))).one()
                    continue
                report.rows[step.table.name] = await _purge_step_async(
                    session, step, key, batch_size, resumable, progress
                )
            if not dry_run:
                if self.registry.before_purge is not None:
                    with with_tenant(key, source="registry"):
                        await maybe_await(self.registry.before_purge(record, session))
                await session.exec(self.registry.delete(key))
                await session.commit()
        log_purge(report)
        if not dry_run:
            await self.tenancy.tenant_changed(key)
        return report

    async def export(
        self, key: Any, path: str | Path, *, progress: Progress | None = None
    ) -> TransferReport:
        """See :meth:`Tenants.export`."""
        key = checked_key(self.tenancy, key)
        record = await self.get(key)
        placement = self.tenancy.placement_of(key, record)
        async with self._engine.connect() as connection:
            steps = await connection.run_sync(purge_plan)
        report = TransferReport(key, Path(path))
        with ExportWriter(path) as writer:
            async with self.tenancy.make_async_session(
                self.tenancy.whole_tenant_scope(key, placement)
            ) as session:
                engine = self._engine.sync_engine
                session.sync_session.bind = engine.execution_options(**snapshot_options(engine))
                if needs_explicit_begin(engine):
                    await run_own_statement(session, BEGIN)
                for copy in [TableCopy(step) for step in reversed(steps)]:
                    rows = await session.stream(
                        copy.select(key), execution_options={"yield_per": BATCH_SIZE}
                    )
                    report.rows[copy.table.name] = await _write_rows_async(
                        writer, copy, rows, progress
                    )
                writer.manifest(key, self.registry.record_fields(record), report.rows)
        log_transfer("exported", report, f"to {report.path}")
        return report

    async def import_(
        self,
        path: str | Path,
        key: Any,
        *,
        progress: Progress | None = None,
        **fields: Any,
    ) -> TransferReport:
        """See :meth:`Tenants.import_`; ``before_create`` may be async."""
        key = checked_key(self.tenancy, key)
        async with self._engine.connect() as connection:
            steps = await connection.run_sync(purge_plan)
        reader = ExportReader(path)
        report = TransferReport(key, Path(path))
        placement, made = None, False
        try:
            plan = import_plan(reader, steps)
            ids = IdMap(key, self.registry.key_column(), [copy for copy, _ in plan])
            record_fields = self.registry.imported_fields(reader, fields)
            placement, made = await self._provide(key, record_fields)
            async with self.tenancy.make_async_session(
                self.tenancy.whole_tenant_scope(key, placement)
            ) as session:
                await self._add_record(session, key, record_fields)
                await _copy_rows_async(session, reader, plan, ids, report, progress)
                await session.commit()
        except BaseException:
            if placement is not None and made:
                await release_async(self.tenancy, placement)
            raise
        finally:
            reader.close()
        log_transfer("imported", report, f"from {report.path}")
        await self.tenancy.tenant_changed(key)
        return report

    async def clone(self, template: Any, key: Any, **fields: Any) -> TransferReport:
        """See :meth:`Tenants.clone`."""
        with tempfile.TemporaryDirectory(prefix="tenant-clone-") as directory:
            await self.export(template, Path(directory) / "export")
            return await self.import_(Path(directory) / "export", key, **fields)

    async def rename(self, key: Any, new_key: Any) -> RenameReport:
        """See :meth:`Tenants.rename`."""
        key, new_key = checked_key(self.tenancy, key), checked_key(self.tenancy, new_key)
        record = await self.get(key)
        refuse_active(self.registry, record, "renaming")
        refuse_renaming_apart(self.tenancy.placement_of(key, record), key)
        async with self._engine.connect() as connection:
            steps = await connection.run_sync(purge_plan)
        report = RenameReport(key, new_key)
        async with self.tenancy.make_async_session(self.tenancy.whole_tenant_scope(key)) as session:
            for statement in defer_foreign_keys(self._engine):
                await run_own_statement(session, statement)
            for step in steps:
                report.rows[step.table.name] = (await session.exec(step.count(key))).one()
            try:
                if (await session.exec(self.registry.by_key(new_key))).first() is not None:
                    raise TenantExists()
                await session.exec(self.registry.rekey(key, new_key))
                async with mutable_tenant(reason=f"renaming tenant {key} to {new_key}"):
                    for step in reversed(steps):
                        await session.exec(step.move(key, new_key))
                await session.commit()
            except (WriteConflict, InternalError, DBAPIError) as error:
                raise refused_rename(key) from error
        log_transfer("renamed", report, f"to {new_key}")
        await self.tenancy.tenant_changed(key)
        await self.tenancy.tenant_changed(new_key)
        return report

    async def move(
        self, key: Any, strategy: Strategy | str, *, progress: Progress | None = None
    ) -> TransferReport:
        """See :meth:`Tenants.move`."""
        tenancy = self.tenancy
        field = isolation_of(tenancy).field
        if field is None:
            raise TenancyMisuse(
                "moving a tenant writes its strategy into its record: give Isolation(field=...)"
            )
        key = checked_key(tenancy, key)
        record = await self.get(key)
        source, target = move_places(tenancy, key, record, Strategy(strategy))
        active = bool(getattr(record, self.registry.active))
        with tempfile.TemporaryDirectory(prefix="tenant-move-") as directory:
            report = TransferReport(key, Path(directory) / "export")
            if source == target:
                return report
            if active:
                await self.suspend(key)
            try:
                await self.export(key, report.path)
                await self._copy_in(key, report, target, progress)
                value = target.strategy.value
                await self._update_record(key, lambda changed: setattr(changed, field, value))
                await self._leave(key, source)
            finally:
                if active:
                    await self.resume(key)
        log_transfer("moved", report, f"from {source.strategy.value} to {target.strategy.value}")
        return report

    async def _copy_in(
        self, key: Any, report: TransferReport, target: Placement, progress: Progress | None
    ) -> None:
        tenancy = self.tenancy
        spelled = tenancy.keys.format(key)
        tables = await self._present_placed_tables()
        made = await anyio.to_thread.run_sync(provide, tenancy, spelled, target, tables)
        reader = ExportReader(report.path)
        try:
            async with self._engine.connect() as connection:
                steps = placed_only(await connection.run_sync(purge_plan))
            plan = import_plan(reader, steps, partial=True)
            keep_ids = target.strategy is not Strategy.SHARED
            ids = None if keep_ids else IdMap(key, self.registry.key_column(), [c for c, _ in plan])
            scope = tenancy.whole_tenant_scope(key, target)
            async with tenancy.make_async_session(scope) as session:
                await _copy_rows_async(session, reader, plan, ids, report, progress)
                await session.commit()
            if keep_ids:
                copied = [copy.table for copy, _ in plan]
                await anyio.to_thread.run_sync(restart_sequences, tenancy, target, copied)
        except BaseException:
            if made:
                await release_async(tenancy, target)
            raise
        finally:
            reader.close()

    async def _leave(self, key: Any, source: Placement) -> None:
        if source.strategy is not Strategy.SHARED:
            await release_async(self.tenancy, source)
            return
        async with self._engine.connect() as connection:
            steps = placed_only(await connection.run_sync(purge_plan))
        scope = self.tenancy.whole_tenant_scope(key, source)
        async with self.tenancy.make_async_session(scope) as session:
            for step in steps:
                await session.exec(step.delete_all(key))
            await session.commit()

    async def _set_active(self, key: Any, active: bool) -> RecordT:
        return await self._update_record(key, lambda record: self.registry.mark(record, active))

    async def _update_record(self, key: Any, change: Callable[[Any], None]) -> RecordT:
        key = checked_key(self.tenancy, key)
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            result = await session.exec(self.registry.by_key(key).with_for_update())
            record: RecordT = found(result.first())
            change(record)
            session.add(record)
            await session.commit()
        await self.tenancy.tenant_changed(key)
        return record


async def _copy_rows_async(
    session: Any,
    reader: ExportReader,
    plan: list[tuple[TableCopy, dict[str, Any]]],
    ids: IdMap | None,
    report: TransferReport,
    progress: Progress | None,
) -> None:
    """Async twin of the sync lifecycle's row copy: new ids with ``ids``, else as they are."""
    for copy, table in plan:
        report.rows[copy.table.name] = 0
        for batch in reader.batches(table, copy.batch_size):
            if ids is None:
                await session.exec(copy.insert(False), params=batch)
            else:
                rows = [ids.rewrite(copy, values) for values in batch]
                result = await session.exec(copy.insert(ids.remembers(copy)), params=rows)
                ids.learn(copy, batch, rows, result)
            report.rows[copy.table.name] += len(batch)
            if progress is not None:
                progress(len(batch))


async def _write_rows_async(
    writer: ExportWriter, copy: TableCopy, rows: AsyncIterable[Any], progress: Progress | None
) -> int:
    count = 0
    with writer.open(f"{copy.table.name}.jsonl") as out:
        async for row in rows:
            out.write(copy.line(row))
            count += 1
            if progress is not None and count % BATCH_SIZE == 0:
                progress(BATCH_SIZE)
    if progress is not None and count % BATCH_SIZE:
        progress(count % BATCH_SIZE)
    return count


async def _purge_step_async(
    session: Any,
    step: PurgeStep,
    key: Any,
    batch_size: int,
    resumable: bool,
    progress: Progress | None,
) -> int:
    batch = step.batch(key, batch_size)
    if batch is None:
        deleted = int((await session.exec(step.delete_all(key))).rowcount)
        if resumable:
            await session.commit()
        _heard(progress, deleted)
        return deleted
    deleted = 0
    while ids := list((await session.exec(batch)).all()):
        count = int((await session.exec(step.delete_batch(key, ids))).rowcount)
        deleted += count
        if resumable:
            await session.commit()
        _heard(progress, count)
    return deleted


def _heard(progress: Progress | None, count: int) -> None:
    if progress is not None and count:
        progress(count)
