"""What does PostgreSQL row-level security cost a tenant's queries? Run by hand::

    python bench/rls.py                                   # local server, 1,000 x 1,000 rows
    python bench/rls.py --database-url postgresql+psycopg://postgres@db:5432/test
    python bench/rls.py --rtt-ms 0.5                      # add 0.5 ms to every round trip

The URL's role must be able to create roles (it builds the data and two roles, and drops them
all at the end). One table of 1,000 tenants x 1,000 rows (built with ``generate_series``), an
index on ``(tenant_id, id)``, the kit's policies. Two roles read it: ``bench_app_*``, ordinary,
to whom the policies apply, and ``bench_plain_*``, with ``BYPASSRLS``, for whom the same table
has no row-level security in effect. Every request is what a route does: a new session, one
query, the rows fetched as ORM objects, the session closed. The setups:

    hand-written  a plain SQLModel Session, ``.where(Item.tenant_id == tenant)`` written by hand
    orm           Tenancy(engine): the kit's ORM scoping adds the filter (no RLS in effect)
    rls           Tenancy(engine, rls=True), ORM scoping off: the policies alone filter
    both          Tenancy(engine, rls=True), a tenant session: both walls
    rls-separate  as rls, RowLevelSecurity(with_begin=False): the settings in a message of their own

and the queries: ``list`` (a tenant's first 50 rows by id) and ``by-id`` (one row by primary
key). Setups are measured in interleaved rounds, tenants and ids drawn at random; the table
shows p50 and p99 latency, their ratio to the hand-written query's, and the client's CPU time
per request (``cpu us``: the Python cost, steadier than latency on a busy machine). A relay
between driver and server counts round trips per request (and adds ``--rtt-ms`` to each), for
psycopg 3 and, for comparison, asyncpg.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import selectors
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastapi_tenancy import Access, SessionScope, Tenancy, TenantScoped
from fastapi_tenancy.postgres import RowLevelSecurity, apply_rls

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SETUPS = ("hand-written", "orm", "rls", "both", "rls-separate")
QUERIES = ("list", "by-id")

bench_registry = registry()


class BenchModel(SQLModel, registry=bench_registry):
    """This benchmark's own registry."""


class Item(BenchModel, TenantScoped, table=True):
    __tablename__ = "bench_rls_item"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    amount: int = 0


# --------------------------------------------------------------------------------------------
# A relay that counts round trips and can slow each one down


class Relay:
    """Forward ``127.0.0.1:port`` to the server; count client turns; delay each answer."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.target, self.delay, self.round_trips = (host, port), delay, 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ)
        selector.register(server, selectors.EVENT_READ)
        last = "server"
        with contextlib.suppress(OSError):
            while True:
                for key, _ in selector.select():
                    sock: Any = key.fileobj
                    data = sock.recv(65536)
                    if not data:
                        client.close()
                        server.close()
                        return
                    if sock is client:
                        if last == "server":
                            self.round_trips += 1
                        last = "client"
                        server.sendall(data)
                    else:
                        if self.delay and last == "client":
                            time.sleep(self.delay)
                        last = "server"
                        client.sendall(data)

    def close(self) -> None:
        self._listener.close()


# --------------------------------------------------------------------------------------------
# Data


def build(owner: Engine, schema: str, app: str, plain: str, tenants: int, rows: int) -> None:
    q = owner.dialect.identifier_preparer.quote
    with owner.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {q(schema)}"))
        conn.execute(text(f"SET LOCAL search_path = {q(schema)}"))
        conn.execute(
            text(
                "CREATE TABLE bench_rls_item (id bigint PRIMARY KEY, tenant_id varchar(63) "
                "NOT NULL, name varchar(50) NOT NULL, amount int NOT NULL DEFAULT 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO bench_rls_item (id, tenant_id, name, amount) "
                "SELECT (t - 1) * :rows + r, 't' || lpad(t::text, 5, '0'), 'item ' || r, r "
                "FROM generate_series(1, :tenants) AS t, generate_series(1, :rows) AS r"
            ),
            {"tenants": tenants, "rows": rows},
        )
        conn.execute(text("CREATE INDEX ON bench_rls_item (tenant_id, id)"))
        apply_rls(conn, [Item.__table__])  # type: ignore[list-item]
        for role, extra in ((app, ""), (plain, " BYPASSRLS")):
            conn.execute(text(f"CREATE ROLE {q(role)} LOGIN{extra}"))
            conn.execute(text(f"GRANT USAGE ON SCHEMA {q(schema)} TO {q(role)}"))
            conn.execute(text(f"GRANT SELECT ON bench_rls_item TO {q(role)}"))
    with owner.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text(f"VACUUM ANALYZE {q(schema)}.bench_rls_item")
        )


def drop(owner: Engine, schema: str, roles: list[str]) -> None:
    q = owner.dialect.identifier_preparer.quote
    with owner.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {q(schema)} CASCADE"))
        for role in roles:
            if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).all():
                conn.execute(text(f"DROP OWNED BY {q(role)}"))
                conn.execute(text(f"DROP ROLE {q(role)}"))


# --------------------------------------------------------------------------------------------
# Requests


Request = Callable[[str, int], object]


def check(condition: bool, found: object) -> None:
    if not condition:
        raise RuntimeError(f"unexpected rows: {found!r}")


def requests(setup: str, url_for: Callable[[str], URL], app: str, plain: str) -> dict[str, Request]:
    """The two queries of one setup, each a whole request: session, query, rows, close."""
    role = plain if setup in ("hand-written", "orm") else app
    engine = create_engine(url_for(role), pool_size=4)

    def list_query(tenant: str | None) -> Any:
        query = select(Item).order_by(Item.id).limit(50)
        return query if tenant is None else query.where(Item.tenant_id == tenant)

    def by_id_query(tenant: str | None, item_id: int) -> Any:
        query = select(Item).where(Item.id == item_id)
        return query if tenant is None else query.where(Item.tenant_id == tenant)

    if setup == "hand-written":

        def session(tenant: str) -> Session:
            return Session(engine)

        hand = True
    else:
        rls: bool | RowLevelSecurity = False
        if setup in ("rls", "both"):
            rls = True
        elif setup == "rls-separate":
            rls = RowLevelSecurity(with_begin=False)
        tenancy = Tenancy(engine, resolvers=[], rls=rls)
        access = Access.TENANT if setup in ("orm", "both") else Access.UNSCOPED

        def session(tenant: str) -> Session:
            return tenancy.make_session(SessionScope(tenant, access))

        hand = False

    def run_list(tenant: str, item_id: int) -> object:
        with session(tenant) as s:
            found = s.execute(list_query(tenant if hand else None)).scalars().all()
            check(len(found) == 50 and found[0].tenant_id == tenant, found[:1])
            return found

    def run_by_id(tenant: str, item_id: int) -> object:
        with session(tenant) as s:
            found = s.execute(by_id_query(tenant if hand else None, item_id)).scalars().all()
            check(len(found) == 1 and found[0].tenant_id == tenant, found)
            return found

    return {"list": run_list, "by-id": run_by_id}


def draw(tenants: int, rows: int, rng: random.Random) -> tuple[str, int]:
    t = rng.randint(1, tenants)
    return f"t{t:05d}", (t - 1) * rows + rng.randint(1, rows)


def measure(
    table: dict[str, dict[str, Request]], tenants: int, rows: int, per_cell: int, rounds: int
) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], float]]:
    """Latency samples per (setup, query), and the client's CPU seconds per request."""
    rng = random.Random(7)  # noqa: S311  (reproducible draws, not secrets)
    samples: dict[tuple[str, str], list[float]] = {(s, q): [] for s in table for q in QUERIES}
    cpu: dict[tuple[str, str], float] = dict.fromkeys(samples, 0.0)
    for setup in table:  # warm-up: connections, statement caches, psycopg's prepared statements
        for query in QUERIES:
            for _ in range(50):
                table[setup][query](*draw(tenants, rows, rng))
    order = list(table)
    for r in range(rounds):
        for setup in order[r % len(order) :] + order[: r % len(order)]:
            for query in QUERIES:
                run = table[setup][query]
                cell = samples[setup, query]
                cpu_start = time.process_time()
                for _ in range(per_cell // rounds):
                    args = draw(tenants, rows, rng)
                    start = time.perf_counter()
                    run(*args)
                    cell.append(time.perf_counter() - start)
                cpu[setup, query] += time.process_time() - cpu_start
    return samples, {key: spent / len(samples[key]) for key, spent in cpu.items()}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def round_trips(run: Request, relay: Relay, tenants: int, rows: int) -> float:
    rng = random.Random(3)  # noqa: S311
    for _ in range(10):
        run(*draw(tenants, rows, rng))
    before = relay.round_trips
    for _ in range(20):
        run(*draw(tenants, rows, rng))
    return (relay.round_trips - before) / 20


async def asyncpg_round_trips(
    url: URL, relay: Relay, schema: str, app: str, plain: str
) -> dict[str, float]:
    """Round trips per request on asyncpg: a plain session against the kit with RLS on."""
    base = url.set(drivername="postgresql+asyncpg", host="127.0.0.1", port=relay.port)
    base = base.difference_update_query(["options"])
    args = {"server_settings": {"search_path": schema}}
    plain_engine = create_async_engine(base.set(username=plain), connect_args=args, pool_size=2)
    app_engine = create_async_engine(base.set(username=app), connect_args=args, pool_size=2)
    kit = Tenancy(app_engine, resolvers=[], rls=True)
    from sqlmodel.ext.asyncio.session import AsyncSession

    async def bare() -> None:
        async with AsyncSession(plain_engine) as s:
            (await s.exec(select(Item).where(Item.tenant_id == "t00001").limit(50))).all()

    async def rls() -> None:
        async with kit.make_async_session(SessionScope("t00001", Access.UNSCOPED)) as s:
            (await s.exec(select(Item).limit(50))).all()

    result = {}
    for name, work in (("asyncpg hand-written", bare), ("asyncpg rls", rls)):
        for _ in range(5):
            await work()
        before = relay.round_trips
        for _ in range(10):
            await work()
        result[name] = (relay.round_trips - before) / 10
    await plain_engine.dispose()
    await app_engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000, help="rows per tenant")
    parser.add_argument("--requests", type=int, default=2000, help="per setup and query")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="added to every round trip")
    args = parser.parse_args()

    server = make_url(args.database_url)
    if "+" not in server.drivername:
        server = server.set(drivername="postgresql+psycopg")
    tag = secrets.token_hex(3)
    schema, app, plain = f"bench_rls_{tag}", f"bench_app_{tag}", f"bench_plain_{tag}"
    owner = create_engine(server)
    relay = Relay(server.host or "127.0.0.1", server.port or 5432, args.rtt_ms / 1000)
    options = " ".join(filter(None, [server.query.get("options"), f"-csearch_path={schema}"]))

    def url_for(role: str, relayed: bool = True) -> URL:
        url = server.set(username=role).update_query_dict({"options": options})
        return url.set(host="127.0.0.1", port=relay.port) if relayed else url

    try:
        started = time.perf_counter()
        build(owner, schema, app, plain, args.tenants, args.rows)
        print(
            f"built {args.tenants:,} tenants x {args.rows:,} rows in "
            f"{time.perf_counter() - started:.1f} s; PostgreSQL "
            f"{owner.dialect.server_version_info}, {args.requests} requests per cell, "
            f"rtt +{args.rtt_ms} ms",
            flush=True,
        )
        # Latency is measured directly unless --rtt-ms asks for the relay; round trips always
        # through it, on engines of their own.
        delayed = args.rtt_ms > 0
        table = {
            setup: requests(setup, lambda role: url_for(role, delayed), app, plain)
            for setup in SETUPS
        }
        counted = {setup: requests(setup, url_for, app, plain) for setup in SETUPS}
        trips = {
            setup: round_trips(counted[setup]["list"], relay, args.tenants, args.rows)
            for setup in SETUPS
        }
        trips.update(asyncio.run(asyncpg_round_trips(server, relay, schema, app, plain)))
        samples, cpu = measure(table, args.tenants, args.rows, args.requests, args.rounds)
    finally:
        relay.close()
        drop(owner, schema, [app, plain])
        owner.dispose()

    base = {q: samples["hand-written", q] for q in QUERIES}
    print()
    print(
        f"{'setup':<14}{'query':<7}{'p50 ms':>9}{'p99 ms':>9}{'p50 x':>8}{'p99 x':>8}"
        f"{'cpu us':>8}{'RT':>5}"
    )
    for setup in SETUPS:
        for query in QUERIES:
            cell = samples[setup, query]
            p50, p99 = percentile(cell, 50), percentile(cell, 99)
            b50, b99 = percentile(base[query], 50), percentile(base[query], 99)
            print(
                f"{setup:<14}{query:<7}{p50 * 1e3:>9.3f}{p99 * 1e3:>9.3f}"
                f"{p50 / b50:>8.2f}{p99 / b99:>8.2f}{cpu[setup, query] * 1e6:>8.0f}"
                f"{trips[setup]:>5.1f}"
            )
    print()
    print("round trips per request (list):")
    for name, count in trips.items():
        print(f"  {name:<22}{count:.1f}")
    everything = [value for cell in samples.values() for value in cell]
    print(f"\nmean of all samples: {statistics.fmean(everything) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
