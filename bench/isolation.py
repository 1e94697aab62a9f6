"""What does physical isolation cost? Shared tables, a schema per tenant, a database per tenant.

Run by hand, never by the test suite::

    python bench/isolation.py                                         # PostgreSQL, the full run
    python bench/isolation.py --tenants 10,1000 --migrate-schemas 100 --seconds 3   # shorter
    python bench/isolation.py --database-url mysql+pymysql://root@127.0.0.1:3306/test

Needs a server database (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) whose
role may create schemas and databases (a superuser). One run prints one report of two parts.

1. Requests. Four apps serve ``GET /docs-list``, the 20 rows (``--rows``) of one tenant as JSON,
   at each tenant count of ``--tenants`` (10, 1,000, 10,000):

       bare      FastAPI + SQLModel, tenant from the X-Tenant-ID header, filter written by hand,
                 on the shared table
       shared    Tenancy(engine, resolvers=[HeaderResolver()], isolation=Isolation()): every
                 tenant in the shared tables (the placeholder translated to the default schema)
       schema    the same with Isolation(default="schema"): every tenant in a schema of its own
       database  the same with Isolation(default="database", database_url=...): every tenant in
                 a database of its own, its engine from the default EngineCache (32 engines)

   Each app runs in its own uvicorn process (one worker), fresh for each tenant count. Requests
   cycle over all the tenants (every request another tenant, the cycle carried on from one
   slice to the next), from a separate Python load generator (one keep-alive connection per
   thread). Setups are measured in interleaved rounds (A B C D, then D C B A); results are
   medians over the rounds. After the load, the server's resident memory (VmRSS) and the
   private memory of its PostgreSQL backends (RssAnon, found by application_name; only when
   the server runs on this machine).

   The schemas (and tables, and rows) are made once per run, in batches of many statements per
   transaction, growing with the tenant counts; databases are made with ``create_storage``,
   only up to ``--max-databases`` tenants (a PostgreSQL database is several MB and ~50 ms to
   make, ~200 ms to drop): larger counts print "not measured".

2. Migrations. ``migrate_tenants`` over ``--migrate-schemas`` empty schemas (1,000) with an
   Alembic environment of three revisions written to a temporary directory, once per value of
   ``--migrate-jobs`` (1 and 4), the schemas dropped and made again in between.

Everything it makes is named ``bench_iso_*`` (schemas, databases, tables) and dropped at the
end, and at the start (what an interrupted run left). See bench/README.md.
"""

import argparse
import contextlib
import functools
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PREFIX = "bench_iso_"  # every schema, database and table of the bench
DATABASE_PREFIX = "bench_iso_d_"  # the databases of the database setup
MIGRATE_PREFIX = "bench_iso_m_"  # the schemas of the migration part
DOC_TABLE = "bench_iso_doc"
NOTE_TABLE = "bench_iso_note"
SETUPS = ("bare", "shared", "schema", "database")
ROUTE = "/docs-list"
DEFAULT_BASE_PORT = 8791
BATCH = 100  # schemas per transaction (each takes ~10 locks: stay far below the lock table)
MAX_ENGINES = 32  # EngineCache's default bound, used as is by the database setup


def key_of(index: int) -> str:
    """Tenant ``index``'s key; all of one length, so every tenant's answer has one size."""
    return f"t{index:05d}"


def doc_id(tenant: int, row: int, rows: int) -> int:
    """Row ``row`` of tenant ``tenant`` has this id in every place, so answers are equal."""
    return tenant * rows + row + 1


# --------------------------------------------------------------------------------------------
# The models: the kit's two tenant tables in the placeholder schema (documents, and notes
# pointing at them), and the bare app's model of the shared documents table.


@functools.cache
def kit_models() -> tuple[type[Any], type[Any]]:
    from sqlmodel import Field

    from fastapi_tenancy import TenantScoped
    from fastapi_tenancy.isolation import TENANT_SCHEMA

    class Doc(TenantScoped, table=True):
        __tablename__ = DOC_TABLE
        __table_args__ = {"schema": TENANT_SCHEMA}  # noqa: RUF012

        id: int | None = Field(default=None, primary_key=True)
        title: str = Field(max_length=100)
        body: str = Field(max_length=255)

    class Note(TenantScoped, table=True):
        __tablename__ = NOTE_TABLE
        __table_args__ = {"schema": TENANT_SCHEMA}  # noqa: RUF012

        id: int | None = Field(default=None, primary_key=True)
        doc_id: int | None = Field(default=None, foreign_key=f"{TENANT_SCHEMA}.{DOC_TABLE}.id")
        body: str = Field(max_length=255)

    return Doc, Note


@functools.cache
def bare_model() -> type[Any]:
    from sqlmodel import Field, SQLModel

    class Doc(SQLModel, table=True):
        __tablename__ = DOC_TABLE

        tenant_id: str = Field(index=True, max_length=63)
        id: int | None = Field(default=None, primary_key=True)
        title: str = Field(max_length=100)
        body: str = Field(max_length=255)

    return Doc


def tenant_database_url(url: str) -> Any:
    """The database strategy's ``database_url``: ``bench_iso_d_<key>`` on the same server (the
    URL's query, with its application_name, kept; apart from the schemas' names, which on MySQL
    are databases too)."""
    from sqlalchemy.engine import make_url

    base = make_url(url)

    def database_url(key: str, record: Any) -> Any:
        return base.set(database=DATABASE_PREFIX + key)

    return database_url


def build_app(setup: str, url: str) -> Any:
    from fastapi import Depends, FastAPI, Header
    from sqlmodel import Session, create_engine, select

    engine = create_engine(url)  # the SQLModel tutorial's engine, the same for every setup
    app = FastAPI()

    if setup == "bare":
        doc = bare_model()

        def get_session() -> Iterator[Session]:
            with Session(engine) as session:
                yield session

        session_dep = Annotated[Session, Depends(get_session)]

        @app.get(ROUTE)
        def list_docs(session: session_dep, x_tenant_id: Annotated[str, Header()]) -> Any:
            statement = select(doc).where(doc.tenant_id == x_tenant_id).order_by(doc.id)
            return session.exec(statement).all()

        return app

    from fastapi_tenancy import HeaderResolver, Tenancy, TenantSession
    from fastapi_tenancy.isolation import Isolation

    doc, _ = kit_models()
    isolation = Isolation(
        default=setup, schema_prefix=PREFIX, database_url=tenant_database_url(url)
    )
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], isolation=isolation)
    tenancy.install(app)

    @app.get(ROUTE)
    def list_docs_kit(session: TenantSession) -> Any:
        return session.exec(select(doc).order_by(doc.id)).all()

    return app


def serve(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="isolation.py serve")
    parser.add_argument("setup", choices=SETUPS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args(argv)
    import uvicorn

    app = build_app(args.setup, args.database_url)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------------------------
# The database: shared tables, schemas, databases; all named bench_iso_*.


def engine_of(url: str) -> Any:
    from sqlalchemy import create_engine

    return create_engine(url)


def is_postgres(engine: Any) -> bool:
    return bool(engine.dialect.name == "postgresql")


def quote(engine: Any, name: str) -> str:
    return str(engine.dialect.identifier_preparer.quote(name))


def ddl_for(engine: Any, schema: str | None) -> list[str]:
    """CREATE TABLE and CREATE INDEX of the two tenant tables, in ``schema`` (None: the
    default schema), as SQL text."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    statements = []
    for model in kit_models():
        table = model.__table__
        for ddl in [CreateTable(table), *(CreateIndex(index) for index in table.indexes)]:
            compiled = ddl.compile(
                dialect=engine.dialect,
                schema_translate_map={"tenant": schema},
                render_schema_translate=True,
            )
            statements.append(str(compiled).strip())
    return statements


def rows_sql(engine: Any, schema: str | None, tenant: int, rows: int) -> str:
    """One INSERT of tenant ``tenant``'s documents (our own generated text: no quoting)."""
    key = key_of(tenant)
    target = f"{quote(engine, schema)}.{DOC_TABLE}" if schema else DOC_TABLE
    values = ", ".join(
        f"('{key}', {doc_id(tenant, j, rows)}, 'document {j} of {key}', "
        f"'Row {j} of the documents of tenant {key}, kept wherever the tenant lives.')"
        for j in range(rows)
    )
    return f"INSERT INTO {target} (tenant_id, id, title, body) VALUES {values}"  # noqa: S608


def seed_shared(engine: Any, count: int, rows: int) -> None:
    """The shared tables, made again with ``count`` tenants' rows, interleaved by tenant."""
    drop_shared(engine)
    with engine.begin() as conn:
        for statement in ddl_for(engine, None):
            conn.exec_driver_sql(statement)
        key = [key_of(k) for k in range(count)]
        # row j of every tenant, then row j + 1: a tenant's rows are scattered over the table
        for j in range(rows):
            for start in range(0, count, 1000):
                values = ", ".join(
                    f"('{key[k]}', {doc_id(k, j, rows)}, 'document {j} of {key[k]}', "
                    f"'Row {j} of the documents of tenant {key[k]}, kept wherever the tenant "
                    "lives.')"
                    for k in range(start, min(start + 1000, count))
                )
                conn.exec_driver_sql(
                    f"INSERT INTO {DOC_TABLE} (tenant_id, id, title, body) VALUES {values}"  # noqa: S608
                )
        if is_postgres(engine):
            conn.exec_driver_sql(f"ANALYZE {DOC_TABLE}")


def drop_shared(engine: Any) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {NOTE_TABLE}")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {DOC_TABLE}")


def make_schemas(
    engine: Any, prefix: str, indexes: range, rows: int, *, tables: bool = True
) -> float:
    """Schemas ``prefix<key>`` of tenants ``indexes``, with the tenant tables and ``rows``
    rows each when ``tables``, ``BATCH`` per transaction; returns the seconds it took."""
    started = time.perf_counter()
    postgres = is_postgres(engine)
    ddl = ddl_for(engine, "__schema__") if tables else []
    marker = quote(engine, "__schema__")
    for start in range(indexes.start, indexes.stop, BATCH):
        statements = []
        for k in range(start, min(start + BATCH, indexes.stop)):
            schema = prefix + key_of(k)
            quoted = quote(engine, schema)
            statements.append(f"CREATE SCHEMA {quoted}")
            statements.extend(s.replace(marker, quoted) for s in ddl)
            if tables and rows:
                statements.append(rows_sql(engine, schema, k, rows))
        with engine.begin() as conn:
            if postgres:  # one round trip for the whole batch
                conn.exec_driver_sql(";\n".join(statements))
            else:  # MySQL: DDL commits on its own; one statement at a time
                for statement in statements:
                    conn.exec_driver_sql(statement)
    return time.perf_counter() - started


def bench_schemas(engine: Any, prefix: str) -> list[str]:
    """The schemas (MySQL: databases) named ``prefix*``."""
    from sqlalchemy import text

    pattern = prefix.replace("_", "\\_") + "%"
    with engine.connect() as conn:
        if is_postgres(engine):
            query = "SELECT nspname FROM pg_namespace WHERE nspname LIKE :p ORDER BY 1"
        else:
            query = "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE :p"
        return [row[0] for row in conn.execute(text(query), {"p": pattern})]


def drop_schemas(engine: Any, prefix: str) -> float:
    """Drop every schema named ``prefix*`` (on PostgreSQL the same names as databases are the
    database setup's: never listed here), ``BATCH`` per transaction."""
    started = time.perf_counter()
    names = bench_schemas(engine, prefix)
    if not is_postgres(engine):  # MySQL: a schema is a database; the database setup's too
        return drop_databases(engine, prefix) + (time.perf_counter() - started)
    for start in range(0, len(names), BATCH):
        batch = names[start : start + BATCH]
        with engine.begin() as conn:
            conn.exec_driver_sql(
                ";\n".join(f"DROP SCHEMA IF EXISTS {quote(engine, n)} CASCADE" for n in batch)
            )
    return time.perf_counter() - started


def bench_databases(engine: Any, prefix: str) -> list[str]:
    from sqlalchemy import text

    pattern = prefix.replace("_", "\\_") + "%"
    with engine.connect() as conn:
        if is_postgres(engine):
            query = "SELECT datname FROM pg_database WHERE datname LIKE :p ORDER BY 1"
        else:
            query = "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE :p"
        return [row[0] for row in conn.execute(text(query), {"p": pattern})]


def drop_databases(engine: Any, prefix: str) -> float:
    """Drop every database named ``prefix*``, four at a time."""
    started = time.perf_counter()
    names = bench_databases(engine, prefix)
    force = " WITH (FORCE)" if is_postgres(engine) else ""

    def drop(name: str) -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote(engine, name)}{force}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(drop, names))
    return time.perf_counter() - started


def make_databases(engine: Any, url: str, indexes: range, rows: int) -> float:
    """Databases ``bench_iso_d_<key>`` of tenants ``indexes`` through the kit's
    ``create_storage`` (CREATE DATABASE, then the tenant tables), and their rows; four at a
    time. Returns the seconds it took."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from fastapi_tenancy.isolation import Isolation, Strategy
    from fastapi_tenancy.isolation.storage import create_storage

    isolation = Isolation(schema_prefix=PREFIX, database_url=tenant_database_url(url))
    tables = [model.__table__ for model in kit_models()]
    started = time.perf_counter()

    def make(k: int) -> None:
        placement = isolation.placement(key_of(k), Strategy.DATABASE)
        create_storage(engine, placement, tables)
        own = create_engine(placement.url, poolclass=NullPool)
        try:
            with own.begin() as conn:
                conn.exec_driver_sql(rows_sql(own, None, k, rows))
        finally:
            own.dispose()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(make, indexes))
    return time.perf_counter() - started


def clean_up(engine: Any) -> None:
    """Drop everything named bench_iso_*: schemas, databases, shared tables."""
    drop_shared(engine)
    drop_databases(engine, DATABASE_PREFIX)
    drop_schemas(engine, PREFIX)


# --------------------------------------------------------------------------------------------
# The load generator: threads with a keep-alive connection each, cycling over the tenants.


def loadgen(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="isolation.py loadgen")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--start", type=int, default=0, help="where in the cycle to start")
    args = parser.parse_args(argv)
    n = args.tenants
    headers = [{"X-Tenant-ID": key_of(k)} for k in range(n)]
    latencies: list[list[float]] = [[] for _ in range(args.connections)]
    errors = [0] * args.connections
    start = time.perf_counter()
    deadline = start + args.seconds

    def worker(index: int) -> None:
        # thread k sends start + k, start + k + c, ...: together they walk the cycle in order
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        mine = latencies[index]
        i = args.start + index
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                conn.request("GET", ROUTE, headers=headers[i % n])
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[index] += 1
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
                continue
            mine.append(time.perf_counter() - t0)
            i += args.connections
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    samples = sorted(x for per in latencies for x in per) or [0.0]

    def pct(p: float) -> int:
        return round(samples[min(len(samples) - 1, int(p / 100 * len(samples)))] * 1e6)

    result = {
        "requests": sum(len(per) for per in latencies),
        "seconds": elapsed,
        "p50_us": pct(50),
        "p99_us": pct(99),
        "errors": sum(errors),
    }
    print("BENCHJSON " + json.dumps(result), flush=True)


def run_load(port: int, seconds: float, connections: int, tenants: int, start: int) -> Any:
    cmd = [
        sys.executable,
        __file__,
        "loadgen",
        "--port",
        str(port),
        "--seconds",
        str(seconds),
        "--connections",
        str(connections),
        "--tenants",
        str(tenants),
        "--start",
        str(start),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            return json.loads(line[len("BENCHJSON ") :])
    raise RuntimeError(f"load generator failed on port {port}:\n{done.stdout}\n{done.stderr}")


# --------------------------------------------------------------------------------------------
# Servers, memory, verification.


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def fetch(port: int, tenant: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", ROUTE, headers={"X-Tenant-ID": tenant})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def app_url(url: str, setup: str) -> str:
    """``url`` with an application_name naming the setup, to find its backends (PostgreSQL)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    named = parsed.update_query_dict({"application_name": f"{PREFIX}{setup}"})
    return named.render_as_string(hide_password=False)


@contextlib.contextmanager
def servers(ports: dict[str, int], url: str) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for setup, port in ports.items():
            procs[setup] = subprocess.Popen(  # noqa: S603 (our own file, our arguments)
                [
                    sys.executable,
                    __file__,
                    "serve",
                    setup,
                    "--port",
                    str(port),
                    "--database-url",
                    app_url(url, setup),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        for setup, port in ports.items():
            while True:
                if procs[setup].poll() is not None:
                    raise RuntimeError(f"the {setup} server exited with {procs[setup].returncode}")
                try:
                    status, body = fetch(port, key_of(0), timeout=5)
                    if status == 200:
                        break
                    raise RuntimeError(f"the {setup} server answered {status}: {body[:300]!r}")
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {setup} server did not come up on port {port}")
                time.sleep(0.2)
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def proc_kib(pid: int, field: str = "VmRSS") -> int | None:
    """``field`` of /proc/<pid>/status in KiB; None where it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def backend_kib(engine: Any, setup: str) -> tuple[int, int] | None:
    """(number, summed RssAnon KiB) of the PostgreSQL backends of ``setup``'s server: the
    memory each backend keeps of its own (catalog caches, plans), shared buffers left out.
    None off PostgreSQL, or when the backends' /proc cannot be read (a remote server)."""
    if not is_postgres(engine):
        return None
    from sqlalchemy import text

    with engine.connect() as conn:
        pids = [
            row[0]
            for row in conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"),
                {"a": f"{PREFIX}{setup}"},
            )
        ]
    sizes = [proc_kib(pid, "RssAnon") for pid in pids]
    if not pids or any(size is None for size in sizes):
        return None
    return len(pids), sum(s for s in sizes if s is not None)


def verify(ports: dict[str, int], count: int, rows: int) -> int:
    """Every setup answers the same ``rows`` rows of the asked tenant (the same JSON, of the
    same size; the kit's keys come in another order), for a few tenants across the range;
    returns the answer's size."""
    size = 0
    for k in sorted({0, count // 2, count - 1}):
        key = key_of(k)
        bodies = {}
        for setup, port in ports.items():
            status, body = fetch(port, key)
            if status != 200:
                raise SystemExit(f"verify: {setup} answered {status} for {key}: {body[:300]!r}")
            data = json.loads(body)
            if len(data) != rows or any(row.get("tenant_id") != key for row in data):
                raise SystemExit(f"verify: {setup} returned {len(data)} rows for {key}")
            bodies[setup] = body
        parsed = {setup: json.loads(body) for setup, body in bodies.items()}
        sizes = {len(body) for body in bodies.values()}
        if len(sizes) != 1 or any(p != next(iter(parsed.values())) for p in parsed.values()):
            shown = "\n".join(f"  {s}: {b[:160]!r}" for s, b in bodies.items())
            raise SystemExit(f"verify: the setups' answers differ for {key}:\n{shown}")
        size = len(next(iter(bodies.values())))
    return size


# --------------------------------------------------------------------------------------------
# Part 1: requests at each tenant count.


def measure_count(
    args: argparse.Namespace, engine: Any, url: str, count: int, setups: list[str]
) -> dict[str, Any]:
    """Serve, verify, warm up and measure ``setups`` with ``count`` tenants in place."""
    ports = {s: args.base_port + i for i, s in enumerate(SETUPS) if s in setups}
    busy = [p for p in ports.values() if not port_free(p)]
    if busy:
        raise SystemExit(f"ports in use on 127.0.0.1: {busy} (pick another --base-port)")
    sent = dict.fromkeys(setups, 0)
    samples: dict[str, list[dict[str, Any]]] = {s: [] for s in setups}
    out: dict[str, Any] = {"samples": samples, "rss": {}, "rss_warm": {}, "backends": {}}
    with servers(ports, url) as procs:
        out["size"] = verify(ports, count, args.rows)
        for setup in setups:
            sample = run_load(ports[setup], args.warmup, args.connections, count, sent[setup])
            sent[setup] += sample["requests"]
            out["rss_warm"][setup] = proc_kib(procs[setup].pid)
        for r in range(args.rounds):
            order = setups if r % 2 == 0 else setups[::-1]
            for setup in order:
                sample = run_load(ports[setup], args.seconds, args.connections, count, sent[setup])
                sent[setup] += sample["requests"]
                samples[setup].append(sample)
            line = ", ".join(
                f"{s} {samples[s][-1]['requests'] / samples[s][-1]['seconds']:.0f}" for s in setups
            )
            print(f"  {count} tenants, round {r + 1}/{args.rounds}: {line} req/s", flush=True)
        for setup in setups:
            out["rss"][setup] = proc_kib(procs[setup].pid)
            out["backends"][setup] = backend_kib(engine, setup)
        out["sent"] = sent
    return out


def requests_part(
    args: argparse.Namespace, engine: Any, url: str, counts: list[int], setups: list[str]
) -> tuple[dict[int, Any], list[str]]:
    results: dict[int, Any] = {}
    notes: list[str] = []
    made_schemas = 0
    made_databases = 0
    for count in counts:
        started = time.perf_counter()
        seed_shared(engine, count, args.rows)
        print(
            f"shared tables: {count} tenants x {args.rows} rows in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        here = list(setups)
        if "schema" in here and count > made_schemas:
            seconds = make_schemas(engine, PREFIX, range(made_schemas, count), args.rows)
            made = count - made_schemas
            notes.append(
                f"schemas: {made} made (2 tables, {args.rows} rows each) in "
                f"{seconds:.1f} s, {seconds * 1e3 / made:.1f} ms each, {BATCH} per transaction"
            )
            print(notes[-1], flush=True)
            made_schemas = count
        if "database" in here:
            if count > args.max_databases:
                here.remove("database")
            elif count > made_databases:
                seconds = make_databases(engine, url, range(made_databases, count), args.rows)
                made = count - made_databases
                notes.append(
                    f"databases: {made} made with create_storage (+ {args.rows} rows each) in "
                    f"{seconds:.1f} s, {seconds * 1e3 / made:.0f} ms each, 4 at a time"
                )
                print(notes[-1], flush=True)
                made_databases = count
        results[count] = measure_count(args, engine, url, count, here)
    if made_databases:
        seconds = drop_databases(engine, DATABASE_PREFIX)
        notes.append(
            f"databases: {made_databases} dropped in {seconds:.1f} s, "
            f"{seconds * 1e3 / made_databases:.0f} ms each, 4 at a time"
        )
    if made_schemas:
        seconds = drop_schemas(engine, PREFIX)
        notes.append(
            f"schemas: {made_schemas} dropped in {seconds:.1f} s, "
            f"{seconds * 1e3 / made_schemas:.1f} ms each"
        )
    return results, notes


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def print_requests(
    args: argparse.Namespace, results: dict[int, Any], counts: list[int], setups: list[str]
) -> None:
    print()
    print(
        f"Requests: GET {ROUTE}, {args.rows} rows of one tenant, every request another tenant; "
        f"medians of {args.rounds} rounds x {args.seconds:g} s"
    )
    print("p50/shared, p50/bare: the setup's median p50 over that of shared, of bare (same run,")
    print("same tenant count; < 1: faster); rps/shared: its median req/s over shared's (< 1:")
    print("slower); RSS: the server's VmRSS after warm-up -> after the load;")
    print("pg: its PostgreSQL backends (count) and their private memory (RssAnon), after the load")
    head = (
        f"{'tenants':>7} {'setup':<9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p50/shared':>10} {'p50/bare':>8} {'rps/shared':>10} {'RSS MiB':>13} {'pg MiB':>10}"
    )
    print(head)
    print("-" * len(head))
    for count in counts:
        res = results[count]
        med: dict[str, dict[str, float]] = {}
        for setup, samples in res["samples"].items():
            med[setup] = {
                "rps": statistics.median(s["requests"] / s["seconds"] for s in samples),
                "p50": statistics.median(s["p50_us"] for s in samples),
                "p99": statistics.median(s["p99_us"] for s in samples),
                "errors": sum(s["errors"] for s in samples),
            }
        for setup in setups:
            if setup not in med:
                reason = f"not measured: {count:,} databases > --max-databases {args.max_databases}"
                print(f"{count:>7} {setup:<9} {reason}")
                continue
            m = med[setup]
            vs_shared = f"{m['p50'] / med['shared']['p50']:.3f}x" if "shared" in med else "-"
            vs_bare = f"{m['p50'] / med['bare']['p50']:.3f}x" if "bare" in med else "-"
            rps_shared = f"{m['rps'] / med['shared']['rps']:.3f}x" if "shared" in med else "-"
            rss = f"{mib(res['rss_warm'][setup])}->{mib(res['rss'][setup])}"
            backends = res["backends"].get(setup)
            pg = "-" if backends is None else f"{backends[0]}: {backends[1] / 1024:.1f}"
            errors = f"  !! {m['errors']:.0f} errors" if m["errors"] else ""
            print(
                f"{count:>7} {setup:<9} {m['rps']:>7.0f} {m['p50'] / 1e3:>7.2f} "
                f"{m['p99'] / 1e3:>7.2f} {vs_shared:>10} {vs_bare:>8} {rps_shared:>10} {rss:>13} "
                f"{pg:>10}{errors}"
            )
        if "database" in med and count > MAX_ENGINES:
            print(
                f"{'':>7} (database: {count:,} tenants cycled through an EngineCache of "
                f"{MAX_ENGINES}: each request makes an engine and opens a connection)"
            )


# --------------------------------------------------------------------------------------------
# Part 2: migrations.

REVISIONS = {
    "0001_docs.py": """
        import sqlalchemy as sa
        from alembic import op

        revision = "0001"
        down_revision = None


        def upgrade():
            op.create_table(
                "bench_iso_doc",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("tenant_id", sa.String(63), nullable=False, index=True),
                sa.Column("title", sa.String(100), nullable=False),
                schema="tenant",
            )
        """,
    "0002_notes.py": """
        import sqlalchemy as sa
        from alembic import op

        revision = "0002"
        down_revision = "0001"


        def upgrade():
            op.create_table(
                "bench_iso_note",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("tenant_id", sa.String(63), nullable=False, index=True),
                sa.Column("doc_id", sa.Integer, sa.ForeignKey("tenant.bench_iso_doc.id")),
                sa.Column("body", sa.String(255), nullable=False),
                schema="tenant",
            )
        """,
    # No op.add_column / alter_column / drop_column here: Alembic renders ALTER TABLE with the
    # schema name as written, never through schema_translate_map, so an ALTER on the
    # placeholder fails ("schema tenant does not exist"), or alters the template schema.
    "0003_indexes.py": """
        from alembic import op

        revision = "0003"
        down_revision = "0002"


        def upgrade():
            op.create_index(
                "ix_bench_iso_doc_title", "bench_iso_doc", ["title"], schema="tenant"
            )
            op.create_index(
                "ix_bench_iso_note_doc_id", "bench_iso_note", ["doc_id"], schema="tenant"
            )
        """,
}


def write_environment(directory: Path, url: str) -> Path:
    """A tenant migration environment with three revisions; its alembic.ini."""
    scripts = directory / "tenant_migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(
        "from fastapi_tenancy.isolation.migrations import run_tenant_migrations\n\n"
        "run_tenant_migrations()\n"
    )
    (scripts / "script.py.mako").write_text("")
    for name, body in REVISIONS.items():
        (scripts / "versions" / name).write_text(textwrap.dedent(body))
    ini = directory / "alembic.ini"
    ini.write_text(
        f"[alembic]\nscript_location = {scripts}\nsqlalchemy.url = {url.replace('%', '%%')}\n"
    )
    return ini


def migrations_part(
    engine: Any, url: str, count: int, jobs_list: list[int]
) -> list[tuple[int, float, float, int]]:
    """(jobs, seconds to make the schemas, seconds to migrate, failures) per jobs value."""
    from fastapi_tenancy.isolation import Isolation, Strategy
    from fastapi_tenancy.isolation.migrations import migrate_tenants

    isolation = Isolation(schema_prefix=MIGRATE_PREFIX)
    tenants = [(key_of(k), isolation.placement(key_of(k), Strategy.SCHEMA)) for k in range(count)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tenancy-iso-mig-") as tmp:
        ini = write_environment(Path(tmp), url)
        for jobs in jobs_list:
            drop_schemas(engine, MIGRATE_PREFIX)
            made = make_schemas(engine, MIGRATE_PREFIX, range(count), 0, tables=False)
            started = time.perf_counter()
            results = migrate_tenants(tenants, url=url, config_file=ini, jobs=jobs)
            seconds = time.perf_counter() - started
            failed = [r for r in results if r.status != "migrated" or r.after != "0003"]
            if failed:
                print(f"!! jobs={jobs}: {len(failed)} tenants not migrated, the first: {failed[0]}")
            print(f"  migrated {count} schemas with jobs={jobs} in {seconds:.1f} s", flush=True)
            rows.append((jobs, made, seconds, len(failed)))
            if not failed:
                check_migrated(engine, tenants[-1][1].schema)
    return rows


def check_migrated(engine: Any, schema: str | None) -> None:
    """The last tenant's schema has both tables and the revision 0003."""
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names(schema=schema))
        version = conn.execute(
            text(f"SELECT version_num FROM {quote(engine, schema or '')}.alembic_version")  # noqa: S608
        ).scalar()
    if names != {DOC_TABLE, NOTE_TABLE, "alembic_version"} or version != "0003":
        raise SystemExit(f"migrations: {schema} holds {sorted(names)} at {version}")


def print_migrations(count: int, rows: list[tuple[int, float, float, int]]) -> None:
    print()
    print(
        f"Migrations: migrate_tenants over {count:,} empty schemas, 3 revisions "
        "(create a table; a second with a foreign key; two indexes)"
    )
    head = f"{'jobs':>4} {'seconds':>8} {'tenants/s':>9} {'ms/tenant':>9} {'failed':>6}"
    print(head)
    print("-" * len(head))
    for jobs, _, seconds, failed in rows:
        print(
            f"{jobs:>4} {seconds:>8.1f} {count / seconds:>9.1f} "
            f"{seconds * 1e3 / count:>9.1f} {failed:>6}"
        )


# --------------------------------------------------------------------------------------------
# The parent.


def versions() -> str:
    names = ("fastapi", "starlette", "pydantic", "sqlmodel", "sqlalchemy", "uvicorn", "alembic")
    parts = [f"python {platform.python_version()}"]
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} -")
    return ", ".join(parts)


def library_version() -> str:
    """Where fastapi_tenancy comes from, and its commit (marked when its files have changes)."""
    import fastapi_tenancy

    root = Path(fastapi_tenancy.__file__).resolve().parent.parent
    try:
        head = subprocess.run(  # noqa: S603 (git, our arguments)
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 (git, our arguments)
            ["git", "-C", str(root), "status", "--porcelain", "fastapi_tenancy"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"fastapi_tenancy from {root}"
    return f"fastapi_tenancy from {root}, commit {head}" + (" + changes" if dirty else "")


def server_version(engine: Any) -> str:
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("SELECT version()").scalar()).split(" on ")[0]


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so servers, schemas and databases are cleaned up."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def run(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="isolation.py",
        description="Cost of shared, schema and database isolation: requests and migrations.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database-url", default=DEFAULT_URL, help="a server database (sync)")
    parser.add_argument(
        "--tenants", default="10,1000,10000", help="tenant counts, comma-separated; '' to skip"
    )
    parser.add_argument("--rows", type=int, default=20, help="rows per tenant")
    parser.add_argument("--rounds", type=int, default=5, help="measuring rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per setup per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per setup")
    parser.add_argument("--connections", type=int, default=4, help="concurrent connections")
    parser.add_argument(
        "--setups", default=",".join(SETUPS), help="comma-separated subset of " + ",".join(SETUPS)
    )
    parser.add_argument(
        "--max-databases",
        type=int,
        default=1000,
        help="the database setup runs only at tenant counts up to this many databases",
    )
    parser.add_argument(
        "--migrate-schemas", type=int, default=1000, help="schemas to migrate; 0 to skip"
    )
    parser.add_argument("--migrate-jobs", default="1,4", help="jobs values, comma-separated")
    parser.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("BENCH_BASE_PORT", DEFAULT_BASE_PORT)),
        help="first of four ports on 127.0.0.1 (env BENCH_BASE_PORT)",
    )
    args = parser.parse_args(argv)
    counts = sorted({int(c) for c in args.tenants.split(",") if c.strip()})
    setups = [s for s in SETUPS if s in args.setups.split(",")]
    if set(args.setups.split(",")) - set(SETUPS):
        parser.error(f"unknown setups in {args.setups!r}")
    if args.database_url.startswith("sqlite"):
        parser.error("give a server database: PostgreSQL, or MariaDB / MySQL")
    jobs_list = [int(j) for j in args.migrate_jobs.split(",") if j.strip()]
    _exit_on_sigterm()

    url = args.database_url
    engine = engine_of(url)
    started = time.perf_counter()
    header = [
        "fastapi_tenancy isolation: shared tables, a schema per tenant, a database per tenant",
        f"  versions : {versions()}",
        f"  library  : {library_version()}",
        f"  database : {engine.url.render_as_string(hide_password=True)} "
        f"({server_version(engine)})",
        "  server   : uvicorn, 1 worker, access log off, a fresh process per tenant count",
        f"  load     : python http.client (separate process), {args.connections} threads, one "
        "keep-alive connection each, every request the next tenant",
        f"  run      : {args.rounds} rounds x {args.seconds:g} s per setup, interleaved; warm-up "
        f"{args.warmup:g} s per setup",
        f"  machine  : {os.cpu_count()} CPUs, {platform.platform()}, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
    for line in header:
        print(line, flush=True)
    results: dict[int, Any] = {}
    notes: list[str] = []
    migrations: list[tuple[int, float, float, int]] = []
    migration_error = None
    try:
        clean_up(engine)
        if counts and setups:
            results, notes = requests_part(args, engine, url, counts, setups)
        if args.migrate_schemas > 0:
            try:
                migrations = migrations_part(engine, url, args.migrate_schemas, jobs_list)
            except Exception as error:  # keep the requests' report
                migration_error = " ".join(str(error).split())[:500]
    finally:
        clean_up(engine)
        left = bench_schemas(engine, PREFIX) + bench_databases(engine, PREFIX)
        if left:
            print(f"!! left behind: {left[:10]}")
        engine.dispose()
    print()
    for line in header:
        print(line)
    if results:
        size = next(iter(results.values()))["size"]
        print(f"  response : {size} bytes, verified equal across setups")
        print_requests(args, results, counts, setups)
        for note in notes:
            print(f"  {note}")
    if migrations:
        print_migrations(args.migrate_schemas, migrations)
    if migration_error:
        print(f"!! migrations failed: {migration_error}")
    print()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"whole run: {time.perf_counter() - started:.0f} s; load average at the end {load}")


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        serve(argv[1:])
    elif argv[:1] == ["loadgen"]:
        loadgen(argv[1:])
    else:
        run(argv)


if __name__ == "__main__":
    main()
