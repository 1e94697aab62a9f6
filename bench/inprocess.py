"""In-process A/B of the kit against hand-written scoping, for noisy machines.

``overhead.py`` measures over real HTTP with a separate load generator, as users run apps. On a
small shared machine its rounds can swing by 50%, which buries a few percent of overhead. This
script runs the bare and the kit apps in ONE process against one database, through httpx's ASGI
transport, alternating them in small batches (40 requests, order flipped every round), so
whatever slows the machine slows both alike. It prints per-request time, the kit/bare
throughput ratio (total and the median of per-round ratios) and the overhead in microseconds.

    python bench/inprocess.py                                   # SQLite file, 30 rounds
    python bench/inprocess.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

It creates (and drops first) two tables, ``bench_bare_project`` and ``bench_kit_project``.
"""

# No "from __future__ import annotations": the routes' Annotated aliases are local variables,
# which FastAPI could not resolve from strings.
import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, FastAPI, Header
from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, create_engine, select

from fastapi_tenancy import HeaderResolver, JWTClaimResolver, Tenancy, TenantScoped, TenantSession

SECRET = "bench-secret-" + "x" * 32
TENANTS = [f"tenant-{i}" for i in range(8)]
ROWS_PER_TENANT = 50
BATCH = 40


class BareProject(SQLModel, table=True):
    __tablename__ = "bench_bare_project"

    tenant_id: str = Field(index=True, nullable=False, max_length=63)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    description: str = Field(max_length=255)


class KitProject(TenantScoped, table=True):
    __tablename__ = "bench_kit_project"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    description: str = Field(max_length=255)


def seed(engine: Engine) -> None:
    tables = [BareProject.__table__, KitProject.__table__]  # type: ignore[attr-defined]
    SQLModel.metadata.drop_all(engine, tables=tables)
    SQLModel.metadata.create_all(engine, tables=tables)
    with Session(engine) as session:
        for i in range(ROWS_PER_TENANT):
            for tenant in TENANTS:
                fields = {"name": f"project {i}", "description": "d" * 40}
                session.add(BareProject(tenant_id=tenant, **fields))
                session.add(KitProject(tenant_id=tenant, **fields))
        session.commit()


def bare_app(engine: Engine, *, token: bool) -> FastAPI:
    app = FastAPI()

    def get_session() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    session_dep = Annotated[Session, Depends(get_session)]

    async def tenant_from_header(x_tenant_id: Annotated[str, Header()]) -> str:
        return x_tenant_id

    async def tenant_from_token(authorization: Annotated[str, Header()]) -> str:
        claims = jwt.decode(
            authorization.removeprefix("Bearer "),
            SECRET,
            algorithms=["HS256"],
            options={"require": ["exp"]},
        )
        return str(claims["tenant"])

    tenant_dep = Annotated[str, Depends(tenant_from_token if token else tenant_from_header)]

    @app.get("/projects")
    def list_projects(session: session_dep, tenant: tenant_dep) -> Any:
        return session.exec(select(BareProject).where(BareProject.tenant_id == tenant)).all()

    return app


def kit_app(engine: Engine, *, token: bool) -> FastAPI:
    app = FastAPI()
    resolver = JWTClaimResolver(key=SECRET, algorithms=["HS256"]) if token else HeaderResolver()
    Tenancy(engine, resolvers=[resolver]).install(app)

    @app.get("/projects")
    def list_projects(session: TenantSession) -> Any:
        return session.exec(select(KitProject)).all()

    return app


def request_headers(token: bool) -> list[dict[str, str]]:
    if not token:
        return [{"X-Tenant-ID": tenant} for tenant in TENANTS]
    exp = time.time() + 3600
    return [
        {"Authorization": "Bearer " + jwt.encode({"tenant": t, "exp": exp}, SECRET, "HS256")}
        for t in TENANTS
    ]


async def batch(client: httpx.AsyncClient, headers: list[dict[str, str]], count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        response = await client.get("/projects", headers=headers[i % len(headers)])
        if response.status_code != 200 or len(response.json()) != ROWS_PER_TENANT:
            raise SystemExit(f"unexpected answer: {response.status_code} {response.text[:200]}")
    return time.perf_counter() - started


async def measure(engine: Engine, rounds: int) -> None:
    columns = ("pair", "bare us/req", "kit us/req", "ratio", "paired", "us/req")
    print("{:8} {:>12} {:>11} {:>7} {:>7} {:>8}".format(*columns))
    for token in (False, True):
        headers = request_headers(token)
        apps = {"bare": bare_app(engine, token=token), "kit": kit_app(engine, token=token)}
        clients = {
            name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")
            for name, app in apps.items()
        }
        for client in clients.values():
            await batch(client, headers, 100)  # warm-up: caches, compiled statements
        totals = {"bare": 0.0, "kit": 0.0}
        paired = []
        for number in range(rounds):
            order = ("bare", "kit") if number % 2 == 0 else ("kit", "bare")
            elapsed = {name: await batch(clients[name], headers, BATCH) for name in order}
            for name, seconds in elapsed.items():
                totals[name] += seconds
            paired.append(elapsed["bare"] / elapsed["kit"])
        for client in clients.values():
            await client.aclose()
        count = rounds * BATCH
        bare_us, kit_us = totals["bare"] / count * 1e6, totals["kit"] / count * 1e6
        print(
            f"{'jwt' if token else 'header':8} {bare_us:12.0f} {kit_us:11.0f} "
            f"{totals['bare'] / totals['kit']:6.3f}x {statistics.median(paired):6.3f}x "
            f"{kit_us - bare_us:+8.0f}"
        )
    print("ratio = kit throughput / bare throughput (> 1: kit faster); paired = median of rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{Path(folder) / 'bench.db'}"
        connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
        engine = create_engine(url, connect_args=connect_args)
        seed(engine)
        print(f"database: {engine.dialect.name}; {len(TENANTS)} tenants x {ROWS_PER_TENANT} rows;")
        print(f"{args.rounds} rounds x {BATCH} requests per app, interleaved, one process")
        try:
            asyncio.run(measure(engine, args.rounds))
        finally:
            tables = [BareProject.__table__, KitProject.__table__]  # type: ignore[attr-defined]
            SQLModel.metadata.drop_all(engine, tables=tables)
            engine.dispose()


if __name__ == "__main__":
    main()
