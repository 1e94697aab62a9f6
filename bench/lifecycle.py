"""Export, import and purge of one large tenant: time and peak memory, run by hand.

    python bench/lifecycle.py                        # SQLite file, 10,000 / 50,000 / 100,000 rows
    python bench/lifecycle.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/lifecycle.py --sizes 1000,10000     # shorter

For each size N the tables are dropped and created again, then seeded with Core ``insert()``
from a plain connection (not through the kit): tenant ``measured`` with N rows spread over five
tenant models (customers 10%, their invoices 30%, the invoices' payments 20%, notes on the
customers 20%, events 20%; foreign keys with the tenant on both sides, text, integer, datetime
and JSON columns), and tenant ``other`` with ``--other-rows`` rows that must stay untouched.
Then, each in a fresh process of its own (this script again, with ``--child``):

    export dir       tenancy.tenants.export("measured", DIR)          JSON Lines files
    export zip       tenancy.tenants.export("measured", FILE.zip)     the same, deflated
    load all (ref)   every row of the tenant fetched into lists: what NOT streaming costs
    import           tenancy.tenants.import_(DIR, "imported")        new ids, one transaction
    purge 1 tx       suspend, then tenancy.tenants.purge("measured")  one transaction
    purge resumable  suspend, then purge("imported", resumable=True) a commit per batch

A child sets up its engine and ``Tenancy`` and reads the tenant's record (so the baseline holds
the imports and an open connection), takes its resident set (``VmRSS``), resets its peak
(``/proc/self/clear_refs``), runs the operation, and reports its wall time and its peak
resident set during it (``VmHWM``). ``growth`` is that peak minus the resident set just before
the operation: what the operation itself needed. Not ``ru_maxrss``: on Linux a child's starts
at its parent's resident set when forked, so it would show the parent's size (which grows with
N as it seeds), not the child's. Elsewhere than Linux the bench falls back to it.
Memory that stays flat as N grows means the rows are streamed; the reference row shows what
growth with N looks like. After the run the parent checks the row counts: ``imported`` got the
N rows, both purged tenants have none and ``other`` kept all of its rows.

On PostgreSQL the tables are ANALYZEd after the seed and after the import (outside the
measurements), as autovacuum would do on a live database. On a server database the bench
creates, and drops at the end, six tables named ``bench_lifecycle_*``.
"""

# No "from __future__ import annotations": SQLModel reads the real annotations.

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, ForeignKeyConstraint, event, func, insert, text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, create_engine, select

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from fastapi_tenancy import (  # noqa: E402
    Tenancy,
    TenantRegistry,
    TenantScoped,
    tenant_foreign_key,
    tenant_unique,
)

PREFIX = "bench_lifecycle"
SIZES = (10_000, 50_000, 100_000)
MEASURED, OTHER, IMPORTED = "measured", "other", "imported"
SEED_BATCH = 10_000
# Share of a tenant's rows per table; invoices, payments and notes hang off customers.
SHARES = {"customer": 0.1, "invoice": 0.3, "payment": 0.2, "note": 0.2, "event": 0.2}
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)

bench_registry = registry()


class BenchModel(SQLModel, registry=bench_registry):
    """The bench's tables: their own registry and MetaData, apart from any other."""


class Org(BenchModel, table=True):
    __tablename__ = f"{PREFIX}_org"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, max_length=63)
    name: str = Field(max_length=100)
    active: bool = True


class Customer(BenchModel, TenantScoped, table=True):
    __tablename__ = f"{PREFIX}_customer"
    __table_args__ = (
        tenant_unique("id"),
        ForeignKeyConstraint(["tenant_id"], [f"{PREFIX}_org.slug"]),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    email: str = Field(max_length=254)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    notes: str
    profile: dict[str, Any] = Field(sa_type=JSON)


class Invoice(BenchModel, TenantScoped, table=True):
    __tablename__ = f"{PREFIX}_invoice"
    __table_args__ = (
        tenant_unique("id"),
        tenant_foreign_key("customer_id", f"{PREFIX}_customer.id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(index=True)
    number: str = Field(max_length=32)
    amount_cents: int
    currency: str = Field(max_length=3)
    status: str = Field(max_length=16)
    issued_at: datetime = Field(sa_type=DateTime(timezone=True))
    lines: dict[str, Any] = Field(sa_type=JSON)


class Payment(BenchModel, TenantScoped, table=True):
    __tablename__ = f"{PREFIX}_payment"
    __table_args__ = (tenant_foreign_key("invoice_id", f"{PREFIX}_invoice.id"),)

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(index=True)
    amount_cents: int
    method: str = Field(max_length=16)
    reference: str = Field(max_length=64)
    paid_at: datetime = Field(sa_type=DateTime(timezone=True))


class Note(BenchModel, TenantScoped, table=True):
    __tablename__ = f"{PREFIX}_note"
    __table_args__ = (tenant_foreign_key("customer_id", f"{PREFIX}_customer.id"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(index=True)
    author: str = Field(max_length=100)
    body: str
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class Event(BenchModel, TenantScoped, table=True):
    __tablename__ = f"{PREFIX}_event"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    payload: dict[str, Any] = Field(sa_type=JSON)
    occurred_at: datetime = Field(sa_type=DateTime(timezone=True))


TENANT_MODELS = (Customer, Invoice, Payment, Note, Event)
TABLES = [Org.__table__, *(m.__table__ for m in TENANT_MODELS)]


# --------------------------------------------------------------------------------------------
# Database


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_foreign_keys)
        return engine
    return create_engine(url)


def _sqlite_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def reset(engine: Engine) -> None:
    bench_registry.metadata.drop_all(engine, tables=TABLES)
    bench_registry.metadata.create_all(engine, tables=TABLES)


def drop(engine: Engine) -> None:
    bench_registry.metadata.drop_all(engine, tables=TABLES)


def analyze(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in TABLES:
            conn.execute(text(f"ANALYZE {table.name}"))


def split(total: int) -> dict[str, int]:
    """Rows per table for a tenant of ``total`` rows (the remainder goes to events)."""
    counts = {name: int(total * share) for name, share in SHARES.items()}
    counts["customer"] = max(counts["customer"], 1)
    counts["event"] += total - sum(counts.values())
    return counts


def seed(engine: Engine, tenants: dict[str, int]) -> None:
    """``tenants``: key -> row count. Ids are given here, then sequences moved past them."""
    next_id = dict.fromkeys(SHARES, 1)
    with engine.begin() as conn:
        conn.execute(
            insert(Org.__table__),
            [{"slug": key, "name": f"Org {key}", "active": True} for key in tenants],
        )
        for key, total in tenants.items():
            counts = split(total)
            first = {name: next_id[name] for name in SHARES}
            for name, count in counts.items():
                table = TABLE_BY_SHARE[name]
                for start in range(0, count, SEED_BATCH):
                    rows = [
                        ROW_MAKERS[name](key, first, counts, first[name] + i, i)
                        for i in range(start, min(start + SEED_BATCH, count))
                    ]
                    conn.execute(insert(table), rows)
                next_id[name] += count
        if engine.dialect.name == "postgresql":
            for table in TABLES:
                sequence = func.pg_get_serial_sequence(table.name, "id")
                conn.execute(select(func.setval(sequence, func.max(table.c.id))))


def _customer(key: str, first: dict[str, int], counts: dict[str, int], id_: int, i: int) -> dict:
    return {
        "id": id_,
        "tenant_id": key,
        "name": f"Customer {i} of {key}",
        "email": f"customer{i}@{key}.example.com",
        "created_at": EPOCH + timedelta(minutes=i),
        "notes": f"Customer {i}: prefers email, invoices at month end, net 30. " * 2,
        "profile": {"segment": ("smb", "mid", "enterprise")[i % 3], "score": i % 100},
    }


def _invoice(key: str, first: dict[str, int], counts: dict[str, int], id_: int, i: int) -> dict:
    return {
        "id": id_,
        "tenant_id": key,
        "customer_id": first["customer"] + i % counts["customer"],
        "number": f"INV-{key}-{i:08d}",
        "amount_cents": 1000 + (i * 37) % 100_000,
        "currency": "EUR",
        "status": ("draft", "sent", "paid")[i % 3],
        "issued_at": EPOCH + timedelta(hours=i),
        "lines": {"items": [{"sku": f"SKU-{i % 50}", "qty": 1 + i % 5, "unit": 1999}]},
    }


def _payment(key: str, first: dict[str, int], counts: dict[str, int], id_: int, i: int) -> dict:
    return {
        "id": id_,
        "tenant_id": key,
        "invoice_id": first["invoice"] + i % counts["invoice"],
        "amount_cents": 1000 + (i * 37) % 100_000,
        "method": ("card", "transfer", "cash")[i % 3],
        "reference": f"pay_{key}_{i:010d}_{(i * 7919) % 1_000_003:07d}",
        "paid_at": EPOCH + timedelta(hours=i, minutes=30),
    }


def _note(key: str, first: dict[str, int], counts: dict[str, int], id_: int, i: int) -> dict:
    return {
        "id": id_,
        "tenant_id": key,
        "customer_id": first["customer"] + i % counts["customer"],
        "author": f"agent{i % 20}@{key}.example.com",
        "body": f"Call {i}: discussed the renewal, follow up next week about the discount. " * 2,
        "created_at": EPOCH + timedelta(minutes=3 * i),
    }


def _event(key: str, first: dict[str, int], counts: dict[str, int], id_: int, i: int) -> dict:
    return {
        "id": id_,
        "tenant_id": key,
        "kind": ("login", "invoice.sent", "payment.received", "export")[i % 4],
        "payload": {"ip": f"10.0.{i % 256}.{i % 200}", "agent": "Mozilla/5.0", "n": i},
        "occurred_at": EPOCH + timedelta(seconds=17 * i),
    }


TABLE_BY_SHARE = {
    "customer": Customer.__table__,
    "invoice": Invoice.__table__,
    "payment": Payment.__table__,
    "note": Note.__table__,
    "event": Event.__table__,
}
ROW_MAKERS = {
    "customer": _customer,
    "invoice": _invoice,
    "payment": _payment,
    "note": _note,
    "event": _event,
}


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per tenant over the five tenant tables, and the org records (``org:<key>``)."""
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for model in TENANT_MODELS:
            table = model.__table__
            query = select(table.c.tenant_id, func.count()).group_by(table.c.tenant_id)
            for tenant, n in conn.execute(query):
                counts[tenant] = counts.get(tenant, 0) + n
        for (slug,) in conn.execute(select(Org.__table__.c.slug)):
            counts[f"org:{slug}"] = 1
    return counts


# --------------------------------------------------------------------------------------------
# One operation, in a process of its own


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (Linux): ``VmRSS`` now, ``VmHWM`` its peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Start ``VmHWM`` again from the current resident set (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def child(op: str, url: str, workdir: Path) -> dict[str, Any]:
    engine = make_engine(url)
    tenancy = Tenancy(engine, resolvers=[], registry=TenantRegistry(Org, key="slug"))
    tenants = tenancy.tenants
    target = IMPORTED if op == "purge-resumable" else MEASURED
    if op.startswith("purge"):
        tenants.suspend(target)
    tenants.get(target)  # imports done, a connection open: the baseline
    peak_reset = reset_peak()
    before, maxrss_before = status_kib("VmRSS"), maxrss_kib()
    start = time.perf_counter()
    if op == "export-dir":
        rows = tenants.export(MEASURED, workdir / "export").total
    elif op == "export-zip":
        rows = tenants.export(MEASURED, workdir / "export.zip").total
    elif op == "load-all":
        rows = load_all(tenancy)
    elif op == "import":
        rows = tenants.import_(workdir / "export", IMPORTED, name="Imported").total
    elif op == "purge":
        rows = tenants.purge(MEASURED, batch_size=1000).total
    elif op == "purge-resumable":
        rows = tenants.purge(IMPORTED, batch_size=1000, resumable=True).total
    else:
        raise SystemExit(f"unknown operation {op!r}")
    seconds = time.perf_counter() - start
    hwm, maxrss = status_kib("VmHWM"), maxrss_kib()
    engine.dispose()
    if before is None or hwm is None or not peak_reset:
        # Not Linux: ru_maxrss, which also counts the peak before the operation.
        before, hwm = before or maxrss_before, maxrss
    return {
        "rows": rows,
        "seconds": seconds,
        "rss_before_kib": before,
        "peak_kib": hwm,
        "maxrss_before_kib": maxrss_before,
        "maxrss_kib": maxrss,
    }


def load_all(tenancy: Tenancy) -> int:
    """The reference: every row of the tenant fetched into memory at once, as tuples."""
    held = []
    with tenancy.session(tenant=MEASURED) as session:
        for model in TENANT_MODELS:
            columns = [getattr(model, c.name) for c in model.__table__.columns]
            held.append(session.exec(select(*columns)).all())
    return sum(len(rows) for rows in held)


OPERATIONS = {
    "export-dir": "export dir",
    "export-zip": "export zip",
    "load-all": "load all (ref)",
    "import": "import",
    "purge": "purge 1 tx",
    "purge-resumable": "purge resumable",
}


def run_child(op: str, url: str, workdir: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", op, "--database-url", url]
    command += ["--workdir", str(workdir)]
    # our own file, our arguments
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"operation {op} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def output_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.iterdir()) / 2**20


# --------------------------------------------------------------------------------------------
# The run


def versions() -> str:
    names = ("sqlalchemy", "sqlmodel", "psycopg")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}, " + ", ".join(found)


def database_label(engine: Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return "PostgreSQL " + conn.execute(text("SHOW server_version")).scalar_one()
        if engine.dialect.name == "sqlite":
            version = conn.execute(text("SELECT sqlite_version()")).scalar_one()
            return f"SQLite {version} (file)"
    return engine.dialect.name


def run_size(url: str, engine: Engine, size: int, other: int, tmp: Path) -> list[dict[str, Any]]:
    workdir = tmp / f"size-{size}"
    workdir.mkdir()
    reset(engine)
    started = time.perf_counter()
    seed(engine, {OTHER: other, MEASURED: size})
    analyze(engine)
    print(f"N={size:,}: seeded in {time.perf_counter() - started:.1f} s", flush=True)
    before = row_counts(engine)
    expected_other = before.get(OTHER)
    if before.get(MEASURED) != size or expected_other != other:
        raise SystemExit(f"seed wrote {before}, not {size} + {other} rows")
    results = []
    for op in OPERATIONS:
        if op == "purge":
            analyze(engine)  # after the import: fresh statistics for both purges
        result = run_child(op, url, workdir)
        result.update(op=op, size=size)
        if op == "export-dir":
            result["output_mib"] = output_mib(workdir / "export")
        elif op == "export-zip":
            result["output_mib"] = output_mib(workdir / "export.zip")
        if result["rows"] != size:
            raise SystemExit(f"{op} handled {result['rows']} rows, not {size}")
        results.append(result)
        print(
            f"  {OPERATIONS[op]:<16} {result['seconds']:8.2f} s, peak "
            f"{result['peak_kib'] / 1024:.1f} MiB",
            flush=True,
        )
    after = row_counts(engine)
    leftover = {k: v for k, v in after.items() if k != OTHER and k != f"org:{OTHER}"}
    if after.get(OTHER) != other or leftover:
        raise SystemExit(f"after the purges: {after} (expected only {other} rows of {OTHER})")
    shutil.rmtree(workdir)
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    print()
    head = (
        f"{'operation':<16} {'rows':>8} {'seconds':>8} {'rows/s':>8} {'RSS before':>10} "
        f"{'peak RSS':>9} {'growth':>7} {'output':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        growth = (r["peak_kib"] - r["rss_before_kib"]) / 1024
        out = f"{r['output_mib']:.1f}" if "output_mib" in r else "-"
        print(
            f"{OPERATIONS[r['op']]:<16} {r['size']:>8,} {r['seconds']:>8.2f} "
            f"{r['size'] / r['seconds']:>8,.0f} {r['rss_before_kib'] / 1024:>10.1f} "
            f"{r['peak_kib'] / 1024:>9.1f} {growth:>7.1f} {out:>7}"
        )
    print()
    print("RSS before: resident MiB just before the operation (imports, engine, one connection);")
    print("peak RSS: the highest resident MiB during it (VmHWM, reset just before); growth =")
    print("peak - before; output: MiB written")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="lifecycle.py",
        description="Time and peak memory of exporting, importing and purging a large tenant.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (sync driver); default: a SQLite file in a temporary directory",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in SIZES),
        help="comma-separated row counts of the measured tenant",
    )
    parser.add_argument("--other-rows", type=int, default=10_000, help="rows of the other tenant")
    parser.add_argument("--child", choices=OPERATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = child(args.child, args.database_url, Path(args.workdir))
        print(json.dumps(result))
        return

    sizes = [int(s) for s in args.sizes.split(",") if s]
    tmp = Path(tempfile.mkdtemp(prefix="tenancy-lifecycle-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(url)
    try:
        print("fastapi_tenancy lifecycle: export, import and purge of one tenant")
        print(f"  versions : {versions()}")
        print(f"  database : {database_label(engine)}")
        print(
            f"  data     : N rows of tenant {MEASURED!r} over 5 tables, beside "
            f"{args.other_rows:,} rows of {OTHER!r}"
        )
        print(f"  machine  : {os.cpu_count()} CPUs, {platform.platform()}")
        print("  each operation in a fresh process; purge batch_size=1000")
        print(flush=True)
        results = []
        for size in sizes:
            results += run_size(url, engine, size, args.other_rows, tmp)
    finally:
        drop(engine)
        engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(results)


if __name__ == "__main__":
    main(sys.argv[1:])
