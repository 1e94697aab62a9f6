"""``fastapi-tenancy tenants ...``: list, create, suspend, resume, purge, export, import, clone
and rename the tenants of the app's ``TenantRegistry``.

Each command calls the matching method of ``tenancy.tenants`` (or ``tenancy.async_tenants``)
and prints one line saying what it did, with the rows per table where rows moved.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import enum
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, inspect

from ..isolation.placement import Strategy
from ..transfer import ExportReader
from .arguments import positive_int
from .errors import CliError, UsageError
from .progress import meter
from .runtime import Runtime

__all__ = ["add_parser"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def add_parser(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    """Add ``tenants`` and its actions to the ``commands`` of the main parser."""
    tenants = commands.add_parser(
        "tenants",
        parents=common,
        help="list, create, suspend, resume, purge, export, import, clone, rename or move tenants",
        description="The tenants of the app's TenantRegistry.",
    )
    actions = tenants.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, parents=common, help=help, description=help[0].upper() + help[1:] + "."
        )
        parser.set_defaults(handler=handler)
        return parser

    listing = action("list", "print every tenant, key first", _list)
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--active", action="store_true", help="only the active tenants")
    which.add_argument("--suspended", action="store_true", help="only the suspended tenants")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    create = action("create", "create a tenant, through the registry's limit and hooks", _create)
    create.add_argument("key", metavar="KEY")
    _add_fields(create)

    action("suspend", "suspend a tenant: its requests are refused", _suspend).add_argument(
        "key", metavar="KEY"
    )
    action("resume", "resume a suspended tenant", _resume).add_argument("key", metavar="KEY")

    purge = action("purge", "delete every row of a suspended tenant, then its record", _purge)
    purge.add_argument("key", metavar="KEY")
    purge.add_argument("--dry-run", action="store_true", help="count the rows; delete nothing")
    purge.add_argument(
        "--resumable", action="store_true", help="commit each batch (a rerun finishes it)"
    )
    purge.add_argument("--batch-size", type=positive_int, default=1000, metavar="N")
    purge.add_argument(
        "--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)"
    )

    export = action("export", "write a tenant's rows as JSON Lines", _export)
    export.add_argument("key", metavar="KEY")
    export.add_argument("path", metavar="PATH", help="an empty or new directory, or a .zip")

    imports = action("import", "create a tenant from an export", _import)
    imports.add_argument("path", metavar="PATH")
    imports.add_argument("key", metavar="KEY")
    _add_fields(imports)

    clone = action("clone", "create a tenant as a copy of another's rows", _clone)
    clone.add_argument("template", metavar="TEMPLATE")
    clone.add_argument("key", metavar="KEY")
    _add_fields(clone)

    rename = action("rename", "move a suspended tenant and its rows to a new key", _rename)
    rename.add_argument("key", metavar="KEY")
    rename.add_argument("new_key", metavar="NEW_KEY")

    move = action(
        "move",
        "move a tenant's rows to the shared tables, or a schema or database of its own",
        _move,
    )
    move.add_argument("key", metavar="KEY")
    move.add_argument("strategy", choices=[strategy.value for strategy in Strategy])


def _add_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        dest="fields",
        help="a field of the tenant's record, read by its column's type (repeatable)",
    )


def _list(args: argparse.Namespace, runtime: Runtime) -> int:
    registry = runtime.registry
    active = True if args.active else False if args.suspended else None
    records = runtime.wait(runtime.tenants.list(active=active))
    names = [registry.key, registry.active]
    names += [a.key for a in inspect(registry.model).column_attrs if a.key not in names]
    rows = [{name: getattr(record, name) for name in names} for record in records]
    if args.json:
        for row in rows:
            print(json.dumps(row, default=_json_value))
        return 0
    if not rows:
        print("no tenants")
        return 0
    cells = [names] + [[_cell(row[name]) for name in names] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(names))]
    for line in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return 0


def _create(args: argparse.Namespace, runtime: Runtime) -> int:
    key = runtime.key(args.key)
    fields = _fields(runtime, args.fields)
    with runtime.naming(taken=key):
        runtime.wait(runtime.tenants.create(key, **fields))
    print(f"created tenant {runtime.spell(key)}")
    return 0


def _suspend(args: argparse.Namespace, runtime: Runtime) -> int:
    return _switch(args, runtime, suspend=True)


def _resume(args: argparse.Namespace, runtime: Runtime) -> int:
    return _switch(args, runtime, suspend=False)


def _switch(args: argparse.Namespace, runtime: Runtime, *, suspend: bool) -> int:
    key = runtime.key(args.key)
    operation = runtime.tenants.suspend if suspend else runtime.tenants.resume
    with runtime.naming(missing=key):
        runtime.wait(operation(key))
    print(f"{'suspended' if suspend else 'resumed'} tenant {runtime.spell(key)}")
    return 0


def _purge(args: argparse.Namespace, runtime: Runtime) -> int:
    key = runtime.key(args.key)
    spelled, tenants = runtime.spell(key), runtime.tenants
    with runtime.naming(missing=key):
        counted = runtime.wait(tenants.purge(key, dry_run=True))
    if args.dry_run:
        print(
            f"dry run: purging tenant {spelled} would delete {counted.total} rows "
            f"({_per_table(counted.rows)})"
        )
        return 0
    if not args.yes:
        _confirm_purge(spelled, counted.total)
    label = f"purging tenant {spelled}"
    with runtime.naming(missing=key), _meter(runtime, label, counted.total) as progress:
        report = runtime.wait(
            tenants.purge(
                key,
                batch_size=args.batch_size,
                resumable=args.resumable,
                progress=progress.update,
            )
        )
    print(f"purged tenant {spelled}: {report.total} rows ({_per_table(report.rows)})")
    return 0


def _confirm_purge(spelled: str, rows: int) -> None:
    if not sys.stdin.isatty():
        raise CliError(
            f"purging tenant {spelled} deletes its {rows} rows for good: add --yes, or run it "
            "at a terminal and type the key when asked"
        )
    typed = input(f"Purge tenant {spelled} and its {rows} rows for good? Type its key: ")
    if typed.strip() != spelled:
        raise CliError(f"purge of tenant {spelled} cancelled: the key typed did not match")


def _export(args: argparse.Namespace, runtime: Runtime) -> int:
    key = runtime.key(args.key)
    spelled = runtime.spell(key)
    with runtime.naming(missing=key), _meter(runtime, f"exporting tenant {spelled}") as progress:
        report = runtime.wait(runtime.tenants.export(key, args.path, progress=progress.update))
    print(
        f"exported tenant {spelled} to {report.path}: {report.total} rows "
        f"({_per_table(report.rows)})"
    )
    return 0


def _import(args: argparse.Namespace, runtime: Runtime) -> int:
    key = runtime.key(args.key)
    spelled = runtime.spell(key)
    fields = _fields(runtime, args.fields)
    total = _rows_in_export(args.path)
    label = f"importing tenant {spelled}"
    with runtime.naming(taken=key), _meter(runtime, label, total) as progress:
        report = runtime.wait(
            runtime.tenants.import_(args.path, key, progress=progress.update, **fields)
        )
    print(
        f"imported tenant {spelled} from {report.path}: {report.total} rows "
        f"({_per_table(report.rows)})"
    )
    return 0


def _clone(args: argparse.Namespace, runtime: Runtime) -> int:
    template, key = runtime.key(args.template), runtime.key(args.key)
    fields = _fields(runtime, args.fields)
    with runtime.naming(missing=template, taken=key):
        report = runtime.wait(runtime.tenants.clone(template, key, **fields))
    print(
        f"cloned tenant {runtime.spell(template)} as {runtime.spell(key)}: {report.total} rows "
        f"({_per_table(report.rows)})"
    )
    return 0


def _rename(args: argparse.Namespace, runtime: Runtime) -> int:
    key, new_key = runtime.key(args.key), runtime.key(args.new_key)
    with runtime.naming(missing=key, taken=new_key):
        report = runtime.wait(runtime.tenants.rename(key, new_key))
    print(
        f"renamed tenant {runtime.spell(key)} to {runtime.spell(new_key)}: {report.total} rows "
        f"({_per_table(report.rows)}); it stays suspended until resumed"
    )
    return 0


def _move(args: argparse.Namespace, runtime: Runtime) -> int:
    key = runtime.key(args.key)
    with runtime.naming(missing=key), _meter(runtime, f"moving tenant {args.key}") as progress:
        report = runtime.wait(runtime.tenants.move(key, args.strategy, progress=progress.update))
    print(
        f"moved tenant {runtime.spell(key)} to {args.strategy}: {report.total} rows "
        f"({_per_table(report.rows)})"
    )
    return 0


def _meter(runtime: Runtime, label: str, total: int | None = None) -> Any:
    return meter(label, total=total, enabled=runtime.progress)


def _rows_in_export(path: str) -> int:
    reader = ExportReader(path)
    try:
        return sum(int(table.get("rows", 0)) for table in reader.tables)
    finally:
        reader.close()


def _per_table(rows: dict[str, int]) -> str:
    return ", ".join(f"{table} {count}" for table, count in rows.items()) or "no tables"


def _fields(runtime: Runtime, pairs: list[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` pairs, each value read by the type of its column."""
    registry = runtime.registry
    columns = {a.key: a.columns[0] for a in inspect(registry.model).column_attrs}
    fixed = {registry.key, registry.active}
    fields: dict[str, Any] = {}
    for pair in pairs:
        name, equals, raw = pair.partition("=")
        if not equals:
            raise UsageError(f"--set takes FIELD=VALUE, not {pair!r}")
        if name in fixed:
            raise UsageError(f"--set cannot set {name}: the command does")
        column = columns.get(name)
        if column is None:
            raise UsageError(
                f"--set {name}: the tenants table has no such field (it has "
                f"{', '.join(n for n in columns if n not in fixed)})"
            )
        fields[name] = _value(name, column, raw)
    return fields


def _value(name: str, column: Column[Any], raw: str) -> Any:
    try:
        kind: type[Any] | None = column.type.python_type
    except NotImplementedError:
        kind = None
    if kind is str:
        return raw
    if raw in ("", "null") and column.nullable:
        return None
    parse = _PARSERS.get(kind) if kind is not None else None
    if parse is None and isinstance(kind, type) and issubclass(kind, enum.Enum):
        parse = kind
    if parse is None:  # JSON, or a type of its own: JSON if it reads as JSON, else the text
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    try:
        return parse(raw)
    except (ValueError, ArithmeticError):
        shown = getattr(kind, "__name__", "value")
        raise UsageError(f"--set {name}: {raw!r} is not of type {shown}") from None


def _boolean(raw: str) -> bool:
    if raw.lower() not in _TRUE | _FALSE:
        raise ValueError(raw)
    return raw.lower() in _TRUE


_PARSERS: dict[type[Any], Callable[[str], Any]] = {
    bool: _boolean,
    int: int,
    float: float,
    decimal.Decimal: decimal.Decimal,
    uuid.UUID: uuid.UUID,
    dt.datetime: dt.datetime.fromisoformat,
    dt.date: dt.date.fromisoformat,
    dt.time: dt.time.fromisoformat,
}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)
