"""A tenant's rows out as JSON Lines, and back in under another key with new ids.

An export is a directory (or a zip of the same files): one ``<table>.jsonl`` per tenant model,
a JSON object per row keyed by column name, parents before children, and a ``manifest.json``
written last (the tenant, its record's fields, each table's file and row count), so a broken
export is refused rather than half imported. Rows are streamed from the database
(``yield_per``), never loaded whole, and read in one snapshot transaction.

An import writes every row into a new tenant in one transaction, through a session scoped to it
(the wall proves each insert). A single-column primary key the database or the model generates
(an autoincrement integer, a column default, a SQLModel ``default_factory=uuid4``) gets a fresh
value, and every foreign key
pointing at a row of the export follows it; the tenant column, and references to the tenant
key, get the new key. Other values are kept. Values that JSON lacks travel as text (times in ISO
8601, UUIDs, decimals) or base64 (bytes), and are read back by the column's Python type.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import io
import json
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Column, Engine, Table, insert, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapper
from sqlmodel import select

from .context import audit_logger
from .exceptions import TenancyMisuse
from .purge import PurgeStep
from .wall.compiler import tenant_column_name

__all__ = ["EXPORT_FORMAT", "RenameReport", "TransferReport"]

EXPORT_FORMAT = "fastapi-tenancy-export/1"
MANIFEST = "manifest.json"
BATCH_SIZE = 1000

Progress = Callable[[int], object]
BEGIN = text("BEGIN")
DEFER_SQLITE = text("PRAGMA defer_foreign_keys = ON")
DEFER_POSTGRES = text("SET CONSTRAINTS ALL DEFERRED")


@dataclass
class TransferReport:
    """What an export wrote or an import read: rows per table (parents first) and where."""

    tenant: Any
    path: Path
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every row, the tenant's record aside."""
        return sum(self.rows.values())


@dataclass
class RenameReport:
    """What a rename moved: rows per table, counted before the move, from one key to another."""

    tenant: Any
    new_key: Any
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every row, the tenant's record aside."""
        return sum(self.rows.values())


class TableCopy:
    """How one tenant model's rows are read, written and given new ids."""

    def __init__(self, step: PurgeStep) -> None:
        self.model = step.model
        self.table = step.table
        mapper: Mapper[Any] = inspect(step.model)
        self.columns: list[Column[Any]] = [c for c in step.table.columns]
        self.attributes = {c.name: mapper.get_property_by_column(c).key for c in self.columns}
        self.tenant_column = step.model.tenant_column().property.columns[0].name
        primary = list(step.table.primary_key.columns)
        single = primary[0] if len(primary) == 1 and primary[0].name != self.tenant_column else None
        # A key the model makes in Python (SQLModel's default_factory): made here for each row.
        self.make_key = (
            None
            if single is None
            else _key_factory(step.model, self.attributes[single.name], single)
        )
        self.fresh_key = (
            single.name
            if single is not None and (self.make_key is not None or _generated(single))
            else None
        )
        # A row may reference a row of its own table imported just before it: one at a time.
        references_itself = any(fk.column.table is step.table for fk in step.table.foreign_keys)
        self.batch_size = 1 if references_itself else BATCH_SIZE

    def select(self, key: Any) -> Any:
        """The tenant's rows, every column, in primary key order."""
        own = self.model.tenant_column() == key
        order = [getattr(self.model, self.attributes[c.name]) for c in self.table.primary_key]
        return (
            select(*(getattr(self.model, self.attributes[c.name]) for c in self.columns))
            .where(own)
            .order_by(*order)
        )

    def line(self, row: Any) -> str:
        values = dict(zip((c.name for c in self.columns), row, strict=True))
        return json.dumps(values, default=_to_json, separators=(",", ":")) + "\n"

    def insert(self, returning: bool) -> Any:
        """The insert of a batch; ``returning`` the new ids, in the batch's order."""
        statement = insert(self.model)
        if returning and self.fresh_key is not None and self.make_key is None:
            column = getattr(self.model, self.attributes[self.fresh_key])
            statement = statement.returning(column, sort_by_parameter_order=True)
        return statement


class IdMap:
    """Old primary key to new, for the tables an import's rows reference, and the rewriting of
    one row of the export."""

    def __init__(self, key: Any, registry_key: Column[Any] | None, copies: list[TableCopy]):
        self.key = key
        self.ids: dict[str, dict[Any, Any]] = {}
        # Per table, once: each foreign key column and what it gets, the new tenant key
        # (None) or the new id of a row of the named table.
        self._references: dict[str, list[tuple[str, str | None]]] = {}
        for copy in copies:
            self._references[copy.table.name] = [
                (
                    fk.parent.name,
                    None if _names_tenant(fk.column, registry_key) else fk.column.table.name,
                )
                for fk in copy.table.foreign_keys
                if fk.parent.name != copy.tenant_column
            ]
        self._referenced = {
            target for references in self._references.values() for _, target in references if target
        }

    def remembers(self, copy: TableCopy) -> bool:
        """Whether the new ids of ``copy``'s rows are needed: some row references them."""
        return copy.fresh_key is not None and copy.table.name in self._referenced

    def rewrite(self, copy: TableCopy, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` (by column name, decoded) as insert parameters (by attribute)."""
        row = {name: _from_json(copy.table.c[name], value) for name, value in values.items()}
        row[copy.tenant_column] = self.key
        for local, target in self._references[copy.table.name]:
            if row.get(local) is None:
                continue
            if target is None:
                row[local] = self.key
            else:
                new = self.ids.get(target, {}).get(row[local])
                if new is not None:
                    row[local] = new
        if copy.make_key is not None:
            row[copy.fresh_key] = copy.make_key()  # type: ignore[index]
        elif copy.fresh_key is not None:
            row.pop(copy.fresh_key)
        return {copy.attributes[name]: value for name, value in row.items()}

    def learn(
        self, copy: TableCopy, batch: list[dict[str, Any]], rows: list[dict[str, Any]], result: Any
    ) -> None:
        """Remember the new ids of ``batch``, inserted as ``rows``: made here, or returned by the
        insert in the batch's order."""
        if not self.remembers(copy):
            return
        column = copy.table.c[copy.fresh_key]  # type: ignore[index]
        old = [_from_json(column, values[column.name]) for values in batch]
        if copy.make_key is not None:
            new = [row[copy.attributes[column.name]] for row in rows]
        else:
            new = list(result.scalars())
        self.ids.setdefault(copy.table.name, {}).update(zip(old, new, strict=True))


def _names_tenant(target: Column[Any], registry_key: Column[Any] | None) -> bool:
    """Whether a foreign key pointing at ``target`` holds a tenant key."""
    return target is registry_key or tenant_column_name(target.table) == target.name


class ExportWriter:
    """Writes an export's files into a directory or, for a ``.zip`` path, a zip archive."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stack = ExitStack()
        self._zip: zipfile.ZipFile | None = None
        if self.path.suffix == ".zip":
            try:
                archive = zipfile.ZipFile(self.path, "x", compression=zipfile.ZIP_DEFLATED)
            except FileExistsError as error:
                raise TenancyMisuse(f"{self.path} exists: an export never overwrites") from error
            self._zip = self._stack.enter_context(archive)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            if any(self.path.iterdir()):
                raise TenancyMisuse(f"export directory {self.path} is not empty")

    def __enter__(self) -> ExportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def open(self, name: str) -> IO[str]:
        if self._zip is not None:
            return io.TextIOWrapper(self._zip.open(name, "w"), encoding="utf-8")
        return (self.path / name).open("x", encoding="utf-8")

    def manifest(self, tenant: Any, record: dict[str, Any], rows: dict[str, int]) -> None:
        manifest = {
            "format": EXPORT_FORMAT,
            "tenant": tenant,
            "record": record,
            "tables": [
                {"name": name, "file": f"{name}.jsonl", "rows": n} for name, n in rows.items()
            ],
        }
        with self.open(MANIFEST) as out:
            json.dump(manifest, out, default=_to_json, indent=2)


class ExportReader:
    """Reads an export written by :class:`ExportWriter`, refusing one without its manifest."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        try:
            if self.path.suffix == ".zip":
                self._zip = zipfile.ZipFile(self.path)
            with self._open(MANIFEST) as source:
                manifest = json.load(source)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            self.close()
            raise TenancyMisuse(
                f"{self.path} is not a complete tenant export: no readable {MANIFEST}"
            ) from error
        if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
            self.close()
            raise TenancyMisuse(f"{self.path} is not a {EXPORT_FORMAT} export")
        self.manifest: dict[str, Any] = manifest

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    @property
    def tables(self) -> list[dict[str, Any]]:
        return list(self.manifest["tables"])

    def batches(self, table: dict[str, Any], size: int) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        with self._open(table["file"]) as source:
            for line in source:
                batch.append(json.loads(line))
                if len(batch) == size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _open(self, name: str) -> IO[str]:
        if self._zip is not None:
            return io.TextIOWrapper(self._zip.open(name), encoding="utf-8")
        return (self.path / name).open(encoding="utf-8")


def record_fields(record: Any, registry_table: Table, skip: set[str]) -> dict[str, Any]:
    """The tenant record's own fields, for the manifest: not its key, flags, times or id."""
    mapper: Mapper[Any] = inspect(type(record))
    return {
        attribute: getattr(record, attribute)
        for column in registry_table.columns
        if not column.primary_key
        and (attribute := mapper.get_property_by_column(column).key) not in skip
    }


def decoded_fields(registry_model: type[Any], fields: dict[str, Any]) -> dict[str, Any]:
    """A manifest's record fields, read back by the registry columns' types."""
    mapper: Mapper[Any] = inspect(registry_model)
    columns = {mapper.get_property_by_column(c).key: c for c in mapper.columns}
    return {
        name: _from_json(columns[name], value) if name in columns else value
        for name, value in fields.items()
    }


def log_transfer(action: str, report: TransferReport | RenameReport, where: object) -> None:
    """Audit an export, an import or a rename of a tenant's rows on ``fastapi_tenancy.audit``."""
    audit_logger.warning(
        "%s tenant %s: %s rows (%s) %s",
        action,
        report.tenant,
        report.total,
        ", ".join(f"{table} {count}" for table, count in report.rows.items()) or "no tables",
        where,
    )


def snapshot_options(engine: Engine | AsyncEngine) -> dict[str, Any]:
    """Execution options that make one transaction read one snapshot of the database."""
    if engine.dialect.name in ("postgresql", "mysql", "mariadb"):
        return {"isolation_level": "REPEATABLE READ"}
    return {}


def needs_explicit_begin(engine: Engine | AsyncEngine) -> bool:
    """SQLite's drivers begin no transaction before a SELECT: an export begins one itself
    (:data:`BEGIN`), so its reads of every table see one state of the file."""
    return engine.dialect.name == "sqlite"


def defer_foreign_keys(engine: Engine | AsyncEngine) -> list[Any]:
    """Statements that put foreign key checks off to the commit, for this transaction only,
    where the database can: SQLite all of them, PostgreSQL its ``DEFERRABLE`` ones."""
    if engine.dialect.name == "sqlite":
        return [BEGIN, DEFER_SQLITE]  # the pragma lasts for the transaction it runs in
    if engine.dialect.name == "postgresql":
        return [DEFER_POSTGRES]
    return []


def _key_factory(model: type[Any], attribute: str, column: Column[Any]) -> Callable[[], Any] | None:
    """The model's own maker of this key's values, when the column has no default of its own."""
    if column.default is not None:
        return None
    field = getattr(model, "model_fields", {}).get(attribute)
    factory = getattr(field, "default_factory", None)
    return factory if callable(factory) else None


def _generated(column: Column[Any]) -> bool:
    """Whether the database or the model makes this key's value (so an import may make anew)."""
    if column.default is not None and getattr(column.default, "is_callable", False):
        return True
    return column.autoincrement is True or (
        column.autoincrement == "auto" and _python_type(column) is int and not column.foreign_keys
    )


def _python_type(column: Column[Any]) -> type[Any] | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def _to_json(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot export a value of type {type(value).__name__}")


def _from_json(column: Column[Any], value: Any) -> Any:
    kind = _python_type(column)
    if value is None or kind is None or isinstance(value, kind):
        return value
    if kind in (dt.datetime, dt.date, dt.time):
        return kind.fromisoformat(value)
    if kind is uuid.UUID:
        return uuid.UUID(value)
    if kind is decimal.Decimal:
        return decimal.Decimal(value)
    if kind is bytes:
        return base64.b64decode(value)
    if issubclass(kind, enum.Enum):
        return kind(value)
    return value
