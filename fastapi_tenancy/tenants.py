"""``tenancy.tenants``: the life of a tenant on a sync engine.

Create, read, list, suspend, resume, purge, export, import, clone and rename tenants of the
app's :class:`~fastapi_tenancy.TenantRegistry`, and run a job for each of them. The async twin
is :class:`~fastapi_tenancy.async_tenants.AsyncTenants`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

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
    release,
    restart_sequences,
)
from .isolation.placement import Placement, Strategy
from .jobs import JobReport, OnDone, run_for_each_tenant
from .purge import PurgeReport, PurgeStep, log_purge, purge_plan
from .registry import (
    RecordT,
    TenantRegistry,
    checked_key,
    found,
    import_plan,
    is_async,
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

__all__ = ["Tenants"]


class Tenants(Generic[RecordT]):
    """Create, read, suspend, resume and purge tenants on a sync engine: ``tenancy.tenants``."""

    def __init__(self, tenancy: Tenancy, registry: TenantRegistry[RecordT]) -> None:
        for hook in (registry.before_create, registry.after_create, registry.before_purge):
            if hook is not None and is_async(hook):
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
        registry, key = self.registry, checked_key(self.tenancy, key)
        placement, made = self._provide(key, fields)
        try:
            with self.tenancy.make_session(
                self.tenancy.whole_tenant_scope(key, placement)
            ) as session:
                record = self._add_record(session, key, fields)
                if registry.after_create is not None:
                    with with_tenant(key, source="registry"):
                        registry.after_create(record, session)
                session.commit()
        except BaseException:
            if placement is not None and made:
                release(self.tenancy, placement)
            raise
        self.tenancy.tenant_changed_sync(key)
        return record

    def _provide(self, key: Any, fields: dict[str, Any]) -> tuple[Placement | None, bool]:
        """A new tenant's placement, read from its fields, and its own place made (with
        whether it is new: dropped again if the creation fails)."""
        placement = self.tenancy.placement_of(key, self.registry.new_record(key, dict(fields)))
        if placement is None:
            return None, False
        return placement, provide(self.tenancy, self.tenancy.keys.format(key), placement)

    def _add_record(self, session: Any, key: Any, fields: dict[str, Any]) -> RecordT:
        registry = self.registry
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
        return record

    def get(self, key: Any) -> RecordT:
        """The record of tenant ``key``, active or not; :class:`TenantNotFound` if none."""
        with Session(self._engine, expire_on_commit=False) as session:
            record: RecordT = found(
                session.exec(self.registry.by_key(checked_key(self.tenancy, key))).first()
            )
        return record

    def list(self, *, active: bool | None = None) -> list[RecordT]:
        """Every tenant's record by key; only the active (or suspended) ones with ``active``."""
        with Session(self._engine, expire_on_commit=False) as session:
            return list(session.exec(self.registry.listing(active)).all())

    def for_each(
        self,
        function: Callable[[Any], object],
        *,
        concurrency: int = 4,
        on_done: OnDone | None = None,
    ) -> JobReport:
        """Call ``function(key)`` once per active tenant, bound to it, ``concurrency`` at once;
        a failure is logged and reported, never stops the others (see :mod:`.jobs`)."""
        keys = [getattr(record, self.registry.key) for record in self.list(active=True)]
        return run_for_each_tenant(keys, function, concurrency=concurrency, on_done=on_done)

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
        progress: Progress | None = None,
    ) -> PurgeReport:
        """Delete every row of suspended tenant ``key`` from every tenant model, then its
        record; audited on ``fastapi_tenancy.audit``.

        ``dry_run`` counts and deletes nothing (an active tenant too). Rows go ``batch_size``
        at a time, in one transaction, or committed batch by batch with ``resumable`` (a purge
        interrupted then is finished by the next); ``progress(n)`` hears the rows each batch
        deleted. The registry's ``before_purge(record, session)`` runs in the transaction that
        deletes the record, just before (rows of global tables that point at the tenant). An
        active tenant is :class:`TenantActive`: suspend it first, so no request writes while
        its rows go.
        """
        key = checked_key(self.tenancy, key)
        record = self.get(key)
        if not dry_run:
            refuse_active(self.registry, record)
        placement = self.tenancy.placement_of(key, record)
        with self._engine.connect() as connection:
            steps = purge_plan(connection)
        report = PurgeReport(key, dry_run)
        if placement is not None and placement.strategy is not Strategy.SHARED and not dry_run:
            # Its own place goes whole, first: a purge that fails later is finished by the next.
            placed = placed_only(steps)
            scope = self.tenancy.whole_tenant_scope(key, placement)
            with self.tenancy.make_session(scope) as session:
                for step in placed:
                    report.rows[step.table.name] = session.exec(step.count(key)).one()
            release(self.tenancy, placement)
            steps = [step for step in steps if step not in placed]
        with self.tenancy.make_session(self.tenancy.whole_tenant_scope(key, placement)) as session:
            for step in steps:
                report.rows[step.table.name] = (
                    session.exec(step.count(key)).one()
                    if dry_run
                    else _purge_step_sync(session, step, key, batch_size, resumable, progress)
                )
            if not dry_run:
                if self.registry.before_purge is not None:
                    with with_tenant(key, source="registry"):
                        self.registry.before_purge(record, session)
                session.exec(self.registry.delete(key))
                session.commit()
        log_purge(report)
        if not dry_run:
            self.tenancy.tenant_changed_sync(key)
        return report

    def export(
        self, key: Any, path: str | Path, *, progress: Progress | None = None
    ) -> TransferReport:
        """Write every row of tenant ``key`` as JSON Lines into directory ``path`` (a zip if it
        ends in ``.zip``), one file per tenant model, read in one snapshot; audited.

        Rows are streamed, so memory stays flat however large the tenant; ``progress(n)``
        hears each batch. See :mod:`fastapi_tenancy.transfer` for the format.
        """
        key = checked_key(self.tenancy, key)
        record = self.get(key)
        placement = self.tenancy.placement_of(key, record)
        with self._engine.connect() as connection:
            copies = [TableCopy(step) for step in reversed(purge_plan(connection))]
        report = TransferReport(key, Path(path))
        with (
            ExportWriter(path) as writer,
            self.tenancy.make_session(self.tenancy.whole_tenant_scope(key, placement)) as session,
        ):
            session.bind = self._engine.execution_options(**snapshot_options(self._engine))
            if needs_explicit_begin(self._engine):
                run_own_statement(session, BEGIN)
            for copy in copies:
                rows = session.exec(copy.select(key), execution_options={"yield_per": BATCH_SIZE})
                report.rows[copy.table.name] = _write_rows(writer, copy, rows, progress)
            writer.manifest(key, self.registry.record_fields(record), report.rows)
        log_transfer("exported", report, f"to {report.path}")
        return report

    def import_(
        self,
        path: str | Path,
        key: Any,
        *,
        progress: Progress | None = None,
        **fields: Any,
    ) -> TransferReport:
        """Create tenant ``key`` from export ``path``: its record (the export's fields, updated
        by ``fields``; the limit and ``before_create`` apply, ``after_create`` does not) and
        every row, with new ids and foreign keys following them, in one transaction; audited.
        """
        key = checked_key(self.tenancy, key)
        with self._engine.connect() as connection:
            steps = purge_plan(connection)
        reader = ExportReader(path)
        report = TransferReport(key, Path(path))
        placement, made = None, False
        try:
            plan = import_plan(reader, steps)
            ids = IdMap(key, self.registry.key_column(), [copy for copy, _ in plan])
            record_fields = self.registry.imported_fields(reader, fields)
            placement, made = self._provide(key, record_fields)
            scope = self.tenancy.whole_tenant_scope(key, placement)
            with self.tenancy.make_session(scope) as session:
                self._add_record(session, key, record_fields)
                _copy_rows(session, reader, plan, ids, report, progress)
                session.commit()
        except BaseException:
            if placement is not None and made:
                release(self.tenancy, placement)
            raise
        finally:
            reader.close()
        log_transfer("imported", report, f"from {report.path}")
        self.tenancy.tenant_changed_sync(key)
        return report

    def clone(self, template: Any, key: Any, **fields: Any) -> TransferReport:
        """Create tenant ``key`` as a copy of tenant ``template``'s rows (its export, imported
        under the new key): a template tenant for new sign-ups."""
        with tempfile.TemporaryDirectory(prefix="tenant-clone-") as directory:
            self.export(template, Path(directory) / "export")
            return self.import_(Path(directory) / "export", key, **fields)

    def rename(self, key: Any, new_key: Any) -> RenameReport:
        """Move suspended tenant ``key`` and every row of it to ``new_key``, in one
        transaction, inside ``mutable_tenant()``; audited. The tenant stays suspended.

        Foreign keys that hold a tenant key must follow: ``ON UPDATE CASCADE`` (or
        ``DEFERRABLE`` on PostgreSQL; SQLite defers them itself), and with row-level security
        the engine's role must bypass the policies; else the move is refused and nothing
        changes. :class:`TenantExists` if ``new_key`` is taken.
        """
        key, new_key = checked_key(self.tenancy, key), checked_key(self.tenancy, new_key)
        record = self.get(key)
        refuse_active(self.registry, record, "renaming")
        refuse_renaming_apart(self.tenancy.placement_of(key, record), key)
        with self._engine.connect() as connection:
            steps = purge_plan(connection)
        report = RenameReport(key, new_key)
        with self.tenancy.make_session(self.tenancy.whole_tenant_scope(key)) as session:
            for statement in defer_foreign_keys(self._engine):
                run_own_statement(session, statement)
            for step in steps:
                report.rows[step.table.name] = session.exec(step.count(key)).one()
            try:
                if session.exec(self.registry.by_key(new_key)).first() is not None:
                    raise TenantExists()
                session.exec(self.registry.rekey(key, new_key))
                with mutable_tenant(reason=f"renaming tenant {key} to {new_key}"):
                    for step in reversed(steps):
                        session.exec(step.move(key, new_key))
                session.commit()
            except (WriteConflict, InternalError, DBAPIError) as error:
                raise refused_rename(key) from error
        log_transfer("renamed", report, f"to {new_key}")
        self.tenancy.tenant_changed_sync(key)
        self.tenancy.tenant_changed_sync(new_key)
        return report

    def move(
        self, key: Any, strategy: Strategy | str, *, progress: Progress | None = None
    ) -> TransferReport:
        """Move tenant ``key``'s rows of the tables in the tenant schema placeholder to
        ``strategy`` (the shared tables, a schema or a database of its own), then name it in
        the record's ``Isolation(field=...)``; audited.

        The tenant is suspended while its rows are copied (and resumed if it was active).
        Into its own new place rows keep their ids; into the shared tables they get new ones,
        foreign keys following, since other tenants' rows may hold theirs. The old place goes
        only once the record names the new one: a failure before leaves the tenant where it
        was (the new place dropped), a failure after leaves only a copy nobody reads.
        """
        tenancy = self.tenancy
        field = isolation_of(tenancy).field
        if field is None:
            raise TenancyMisuse(
                "moving a tenant writes its strategy into its record: give Isolation(field=...)"
            )
        key = checked_key(tenancy, key)
        record = self.get(key)
        source, target = move_places(tenancy, key, record, Strategy(strategy))
        active = bool(getattr(record, self.registry.active))
        with tempfile.TemporaryDirectory(prefix="tenant-move-") as directory:
            report = TransferReport(key, Path(directory) / "export")
            if source == target:
                return report
            if active:
                self.suspend(key)
            try:
                self.export(key, report.path)
                self._copy_in(key, report, target, progress)
                self._update_record(
                    key, lambda changed: setattr(changed, field, target.strategy.value)
                )
                self._leave(key, source)
            finally:
                if active:
                    self.resume(key)
        log_transfer("moved", report, f"from {source.strategy.value} to {target.strategy.value}")
        return report

    def _copy_in(
        self, key: Any, report: TransferReport, target: Placement, progress: Progress | None
    ) -> None:
        """Copy the exported rows of the placed tables into ``target``, made for them (and
        dropped again if the copy fails)."""
        tenancy = self.tenancy
        made = provide(tenancy, tenancy.keys.format(key), target)
        reader = ExportReader(report.path)
        try:
            with self._engine.connect() as connection:
                steps = placed_only(purge_plan(connection))
            plan = [(copy, table) for copy, table in import_plan(reader, steps, partial=True)]
            keep_ids = target.strategy is not Strategy.SHARED
            ids = None if keep_ids else IdMap(key, self.registry.key_column(), [c for c, _ in plan])
            with tenancy.make_session(tenancy.whole_tenant_scope(key, target)) as session:
                _copy_rows(session, reader, plan, ids, report, progress)
                session.commit()
            if keep_ids:
                restart_sequences(tenancy, target, [copy.table for copy, _ in plan])
        except BaseException:
            if made:
                release(tenancy, target)
            raise
        finally:
            reader.close()

    def _leave(self, key: Any, source: Placement) -> None:
        """Drop the place a tenant moved out of: its rows of the shared tables, or its own."""
        if source.strategy is not Strategy.SHARED:
            release(self.tenancy, source)
            return
        with self._engine.connect() as connection:
            steps = placed_only(purge_plan(connection))
        scope = self.tenancy.whole_tenant_scope(key, source)
        with self.tenancy.make_session(scope) as session:
            for step in steps:
                session.exec(step.delete_all(key))
            session.commit()

    def _set_active(self, key: Any, active: bool) -> RecordT:
        return self._update_record(key, lambda record: self.registry.mark(record, active))

    def _update_record(self, key: Any, change: Callable[[Any], None]) -> RecordT:
        key = checked_key(self.tenancy, key)
        with Session(self._engine, expire_on_commit=False) as session:
            record: RecordT = found(
                session.exec(self.registry.by_key(key).with_for_update()).first()
            )
            change(record)
            session.add(record)
            session.commit()
        self.tenancy.tenant_changed_sync(key)
        return record


def _copy_rows(
    session: Any,
    reader: ExportReader,
    plan: list[tuple[TableCopy, dict[str, Any]]],
    ids: IdMap | None,
    report: TransferReport,
    progress: Progress | None,
) -> None:
    """Insert the rows of ``reader``'s tables, parents first: with new ids (``ids``), or as
    they are (``None``, into a tenant's own empty place)."""
    for copy, table in plan:
        report.rows[copy.table.name] = 0
        for batch in reader.batches(table, copy.batch_size):
            if ids is None:
                session.exec(copy.insert(False), params=batch)
            else:
                rows = [ids.rewrite(copy, values) for values in batch]
                result = session.exec(copy.insert(ids.remembers(copy)), params=rows)
                ids.learn(copy, batch, rows, result)
            report.rows[copy.table.name] += len(batch)
            if progress is not None:
                progress(len(batch))


def _write_rows(
    writer: ExportWriter, copy: TableCopy, rows: Iterable[Any], progress: Progress | None
) -> int:
    count = 0
    with writer.open(f"{copy.table.name}.jsonl") as out:
        for row in rows:
            out.write(copy.line(row))
            count += 1
            if progress is not None and count % BATCH_SIZE == 0:
                progress(BATCH_SIZE)
    if progress is not None and count % BATCH_SIZE:
        progress(count % BATCH_SIZE)
    return count


def _purge_step_sync(
    session: Any,
    step: PurgeStep,
    key: Any,
    batch_size: int,
    resumable: bool,
    progress: Progress | None,
) -> int:
    batch = step.batch(key, batch_size)
    if batch is None:
        deleted = int(session.exec(step.delete_all(key)).rowcount)
        if resumable:
            session.commit()
        _heard(progress, deleted)
        return deleted
    deleted = 0
    while ids := list(session.exec(batch).all()):
        count = int(session.exec(step.delete_batch(key, ids)).rowcount)
        deleted += count
        if resumable:
            session.commit()
        _heard(progress, count)
    return deleted


def _heard(progress: Progress | None, count: int) -> None:
    if progress is not None and count:
        progress(count)
