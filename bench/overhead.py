"""What does the kit cost per request? Bare FastAPI + SQLModel against fastapi_tenancy.

Run by hand, never by the test suite::

    python bench/overhead.py                                  # SQLite file, 5 rounds x 5 s
    python bench/overhead.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Six apps serve the same route, ``GET /projects``, answering the 50 rows of one tenant out of
8 x 50 as JSON:

    bare-header  FastAPI + SQLModel, tenant from the X-Tenant-ID header, filter written by hand
    bare-jwt     the same, tenant from the claim of an HS256 bearer token verified with PyJWT
    kit-header   Tenancy(engine, resolvers=[HeaderResolver()]) and a TenantSession route
    kit-jwt      the same with JWTClaimResolver(key=..., algorithms=["HS256"])
    kit-owner    kit-jwt with the rows owner-only: the model's owner_id is an owner_field()
                 (a row scope whose value is the token's sub), so every statement carries a
                 second scope; its twin is kit-jwt, on the same rows (each row is owned by
                 the user whose token asks for it)
    kit-rls      kit-header with Tenancy(..., rls=True), as an ordinary role (PostgreSQL only)

Each app runs in its own uvicorn process (one worker, 127.0.0.1, ports from --base-port or
BENCH_BASE_PORT). All are up at once and measured in interleaved rounds (one slice per app
per round, the order rotated each round) by a separate load generator: wrk when it is on PATH,
otherwise a Python process with one keep-alive http.client connection per thread. The tenant
alternates from request to request. Results are medians over the rounds.

The same file is the server (``overhead.py serve SETUP``) and the fallback load generator
(``overhead.py loadgen``); the parent process starts both.

On a busy machine, ``overhead.py count`` measures instructions per request instead, under
valgrind, calling each app in-process (``overhead.py drive SETUP``): slower, but the same
however busy the machine is. ``count`` also runs two variants of kit-header, compared with it:

    kit-audit    Tenancy(..., audit_statements=True), the audit logger at INFO into a NullHandler
    kit-tag      Tenancy(..., tag_statements=True)
    kit-policy   the model declares a named row policy every row meets (name != ''), so each
                 statement carries it and the wall proves it; the answers are kit-header's

and a pair for hierarchical tenants, on a tenants table whose records name a parent (every
bench tenant a child of one parent tenant that has no rows, so the answers do not change):

    kit-tenants  kit-header with TenantTableLookup over that table; the model reads its own rows
    kit-family   the same with TenantHierarchy(parent="parent_slug") and a model declaring
                 __tenant_reads__ = "ancestors": each request finds its tenant's family (one
                 ancestor) and reads with tenant_id IN (:fastapi_tenancy_ancestors_0,
                 :fastapi_tenancy_ancestors_1); its twin is kit-tenants (string keys only)

See bench/README.md.

``--key-type int`` or ``--key-type uuid`` (in every mode) keys the tenants by integers or UUIDs
instead of strings: the kit's model is ``TenantScoped[int]`` (``[UUID]``) and its ``Tenancy`` gets
``key_type=``; the bare apps' tenant column has that type and they parse the header or claim
themselves, with ``int(raw)`` (``UUID(raw)``).
"""

import argparse
import contextlib
import functools
import http.client
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import scale

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUPS = ("bare-header", "kit-header", "bare-jwt", "kit-jwt", "kit-owner", "kit-rls")
TWINS = (
    ("kit-header", "bare-header"),
    ("kit-jwt", "bare-jwt"),
    ("kit-owner", "kit-jwt"),
    ("kit-rls", "bare-header"),
)
JWT_SETUPS = ("bare-jwt", "kit-jwt", "kit-owner")
RLS_SETUP = "kit-rls"
# kit-header with one of the statement options on; measured by ``count`` only, against kit-header
OPTION_SETUPS = ("kit-audit", "kit-tag", "kit-policy")
OPTION_TWINS = (
    ("kit-audit", "kit-header"),
    ("kit-tag", "kit-header"),
    ("kit-policy", "kit-header"),
)
# hierarchical tenants, measured by ``count`` only: a lookup whose records name a parent, with
# and without TenantHierarchy; string keys only (the tenants table is keyed by slug)
FAMILY_SETUPS = ("kit-tenants", "kit-family")
FAMILY_TWINS = (("kit-family", "kit-tenants"),)
FAMILY_TABLE = "bench_overhead_family_tenant"
FAMILY_PARENT = "tenant-parent"  # every bench tenant's parent; it has no project rows
TABLE = "bench_overhead_project"
DEFAULT_BASE_PORT = 8731
SQLITE_DEFAULT = "sqlite (a file in a temporary directory)"
KEY_TYPES: dict[str, type] = {"str": str, "int": int, "uuid": uuid.UUID}


# --------------------------------------------------------------------------------------------
# The models and the five apps (used in the server processes; each defines one model only,
# because the bare model and the kit model map the same table). ``key`` is the tenant keys'
# type: str, int or uuid.UUID.


ROUTES = {
    "list": "GET /projects (the tenant's rows)",
    "by-id": "GET /projects/{id} (one row of the tenant; the kit's route calls session.get)",
}


def add_route(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--route", choices=ROUTES, default="list", help="the route driven")


def add_key_type(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-type", choices=KEY_TYPES, default="str", help="the type of the tenant keys"
    )


@functools.cache
def bare_model(key: type) -> type[Any]:
    from sqlmodel import Field, SQLModel

    class Project(SQLModel, table=True):
        __tablename__ = TABLE

        tenant_id: key = Field(  # type: ignore[valid-type]
            index=True, nullable=False, max_length=63 if key is str else None
        )
        id: int | None = Field(default=None, primary_key=True)
        name: str = Field(max_length=100)
        description: str = Field(max_length=255)
        owner_id: str = Field(max_length=255)

    return Project


@functools.cache
def family_tenant_model() -> type[Any]:
    """The tenants table of the family setups: scale's tenants plus the parent's slug."""
    from sqlmodel import Field, SQLModel

    class FamilyTenant(SQLModel, table=True):
        __tablename__ = FAMILY_TABLE

        id: int | None = Field(default=None, primary_key=True)
        slug: str = Field(unique=True, max_length=63)
        name: str = Field(max_length=100)
        active: bool = True
        parent_slug: str | None = Field(default=None, max_length=63)

    return FamilyTenant


@functools.cache
def kit_model(
    key: type, *, owner_only: bool = False, ancestors: bool = False, policy: bool = False
) -> type[Any]:
    from sqlmodel import Field

    from fastapi_tenancy import RowPolicy, TenantScoped

    if policy:

        class PolicyProject(TenantScoped[key], table=True):  # type: ignore[valid-type]
            __tablename__ = TABLE
            __row_policies__ = (RowPolicy("named", lambda cls: cls.name != ""),)

            id: int | None = Field(default=None, primary_key=True)
            name: str = Field(max_length=100)
            description: str = Field(max_length=255)
            owner_id: str = Field(max_length=255)

        return PolicyProject

    if ancestors:

        class FamilyProject(TenantScoped[key], table=True):  # type: ignore[valid-type]
            __tablename__ = TABLE
            __tenant_reads__ = "ancestors"

            id: int | None = Field(default=None, primary_key=True)
            name: str = Field(max_length=100)
            description: str = Field(max_length=255)
            owner_id: str = Field(max_length=255)

        return FamilyProject

    if owner_only:
        from fastapi_tenancy import owner_field

        class OwnedProject(TenantScoped[key], table=True):  # type: ignore[valid-type]
            __tablename__ = TABLE

            id: int | None = Field(default=None, primary_key=True)
            name: str = Field(max_length=100)
            description: str = Field(max_length=255)
            owner_id: str | None = owner_field()

        return OwnedProject

    class Project(TenantScoped[key], table=True):  # type: ignore[valid-type]
        __tablename__ = TABLE

        id: int | None = Field(default=None, primary_key=True)
        name: str = Field(max_length=100)
        description: str = Field(max_length=255)
        owner_id: str = Field(max_length=255)

    return Project


def make_engine(url: str) -> Any:
    from sqlmodel import create_engine

    # The SQLModel tutorial's engine; the same for all five apps.
    connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
    return create_engine(url, connect_args=connect_args)


def build_app(setup: str, url: str, secret: str, key: type) -> Any:
    from fastapi import Depends, FastAPI, Header, HTTPException
    from sqlmodel import Session, select

    engine = make_engine(url)
    app = FastAPI()

    if setup.startswith("bare-"):
        import jwt

        project = bare_model(key)

        def parse_key(raw: str) -> Any:
            # by hand, as a hand-written app does: str(raw) is raw, else int(raw) or UUID(raw)
            try:
                return key(raw)
            except ValueError:
                raise HTTPException(400, "invalid tenant key") from None

        def get_session() -> Iterator[Session]:
            with Session(engine) as session:
                yield session

        session_dep = Annotated[Session, Depends(get_session)]

        if setup == "bare-lookup":
            tenant_table = scale.tenant_model()

            def known_tenant(session: session_dep, x_tenant_id: Annotated[str, Header()]) -> Any:
                # by hand: the tenant must exist and be active, in the request's session
                record = session.exec(
                    select(tenant_table).where(tenant_table.slug == x_tenant_id)
                ).first()
                if record is None:
                    raise HTTPException(404, "unknown tenant")
                if not record.active:
                    raise HTTPException(403, "inactive tenant")
                return parse_key(x_tenant_id)

        def one_or_404(session: Session, project_id: int, tenant: Any) -> Any:
            found = session.exec(
                select(project).where(project.id == project_id, project.tenant_id == tenant)
            ).first()
            if found is None:
                raise HTTPException(404, "not found")
            return found

        if setup == "bare-header":

            @app.get("/projects")
            def list_projects(session: session_dep, x_tenant_id: Annotated[str, Header()]) -> Any:
                tenant = parse_key(x_tenant_id)
                return session.exec(select(project).where(project.tenant_id == tenant)).all()

            @app.get("/projects/{project_id}")
            def get_project(
                project_id: int, session: session_dep, x_tenant_id: Annotated[str, Header()]
            ) -> Any:
                tenant = parse_key(x_tenant_id)
                return one_or_404(session, project_id, tenant)

        elif setup == "bare-lookup":

            @app.get("/projects")
            def list_projects(
                session: session_dep, tenant: Annotated[Any, Depends(known_tenant)]
            ) -> Any:
                return session.exec(select(project).where(project.tenant_id == tenant)).all()

            @app.get("/projects/{project_id}")
            def get_project(
                project_id: int,
                session: session_dep,
                tenant: Annotated[Any, Depends(known_tenant)],
            ) -> Any:
                return one_or_404(session, project_id, tenant)

        else:

            async def tenant_from_token(authorization: Annotated[str, Header()]) -> Any:
                scheme, _, token = authorization.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise HTTPException(401, "bearer token required")
                try:
                    claims = jwt.decode(
                        token, secret, algorithms=["HS256"], options={"require": ["exp"]}
                    )
                except jwt.PyJWTError:
                    raise HTTPException(401, "invalid token") from None
                tenant = claims.get("tenant")
                if not isinstance(tenant, str):
                    raise HTTPException(401, "no tenant claim")
                return parse_key(tenant)

            @app.get("/projects")
            def list_projects(
                session: session_dep, tenant: Annotated[Any, Depends(tenant_from_token)]
            ) -> Any:
                return session.exec(select(project).where(project.tenant_id == tenant)).all()

            @app.get("/projects/{project_id}")
            def get_project(
                project_id: int,
                session: session_dep,
                tenant: Annotated[Any, Depends(tenant_from_token)],
            ) -> Any:
                return one_or_404(session, project_id, tenant)

        return app

    from fastapi_tenancy import (
        HeaderResolver,
        JWTClaimResolver,
        LookupCache,
        Tenancy,
        TenantHierarchy,
        TenantSession,
        TenantTableLookup,
    )

    project = kit_model(
        key,
        owner_only=setup == "kit-owner",
        ancestors=setup == "kit-family",
        policy=setup == "kit-policy",
    )
    resolver: Any = (
        JWTClaimResolver(key=secret, algorithms=["HS256"])
        if setup in JWT_SETUPS
        else HeaderResolver()
    )
    lookup: dict[str, Any] = {}
    if setup in scale.LOOKUP_SETUPS:
        lookup["lookup"] = TenantTableLookup(scale.tenant_model(), key="slug", active="active")
    if setup == "kit-preload":
        lookup["lookup_cache"] = LookupCache(preload=True, ttl=scale.PRELOAD_TTL)
    if setup in FAMILY_SETUPS:  # records kept an hour: no lookup falls in a measurement
        lookup["lookup"] = TenantTableLookup(family_tenant_model(), key="slug", active="active")
        lookup["lookup_cache"] = LookupCache(ttl=scale.PRELOAD_TTL)
    if setup == "kit-family":
        lookup["hierarchy"] = TenantHierarchy(parent="parent_slug")
    if setup == "kit-audit":  # every record made, and sent nowhere
        audit = logging.getLogger("fastapi_tenancy.audit")
        audit.setLevel(logging.INFO)
        audit.addHandler(logging.NullHandler())
        audit.propagate = False
    tenancy = Tenancy(
        engine,
        resolvers=[resolver],
        rls=setup == RLS_SETUP,
        key_type=key,
        audit_statements=setup == "kit-audit",
        tag_statements=setup == "kit-tag",
        **lookup,
    )
    tenancy.install(app)
    app.state.tenancy = tenancy

    @app.get("/projects")
    def list_projects(session: TenantSession) -> Any:  # type: ignore[no-redef]
        return session.exec(select(project)).all()

    @app.get("/projects/{project_id}")
    def get_project(project_id: int, session: TenantSession) -> Any:  # type: ignore[no-redef]
        found = session.get(project, project_id)
        if found is None:
            raise HTTPException(404, "not found")
        return found

    return app


def serve(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="overhead.py serve")
    parser.add_argument("setup", choices=SETUPS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    add_key_type(parser)
    args = parser.parse_args(argv)
    import uvicorn

    secret = os.environ["BENCH_JWT_SECRET"]
    app = build_app(args.setup, args.database_url, secret, KEY_TYPES[args.key_type])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------------------------
# The database: 8 tenants x 50 rows, interleaved so that a tenant's rows are scattered.


def tenant_names(count: int) -> list[str]:
    return [f"tenant-{i}" for i in range(count)]


def tenant_keys(names: list[str], key: type) -> list[Any]:
    """The tenants' keys: their names, the integers from 1, or UUIDs named after them."""
    if key is int:
        return list(range(1, len(names) + 1))
    if key is uuid.UUID:
        return [uuid.uuid5(uuid.NAMESPACE_DNS, name) for name in names]
    return names


def seed(url: str, names: list[str], rows: int, key: type) -> None:
    """The rows name their tenant by its name whatever its key: only tenant_id differs."""
    from sqlmodel import Session, SQLModel

    project = bare_model(key)
    keys = tenant_keys(names, key)
    engine = make_engine(url)
    project.__table__.drop(engine, checkfirst=True)
    SQLModel.metadata.create_all(engine, tables=[project.__table__])
    with Session(engine) as session:
        for i in range(rows * len(names)):
            tenant = names[i % len(names)]
            session.add(
                project(
                    tenant_id=keys[i % len(names)],
                    name=f"project {i // len(names)} of {tenant}",
                    description=f"Row {i} of the benchmark table, owned by {tenant}.",
                    owner_id=f"user-of-{keys[i % len(names)]}",  # the sub of its tenant's token
                )
            )
        session.commit()
    engine.dispose()


def drop(url: str, key: type) -> None:
    project = bare_model(key)
    engine = make_engine(url)
    with contextlib.suppress(Exception):
        project.__table__.drop(engine, checkfirst=True)
    engine.dispose()


def seed_family(url: str, names: list[str]) -> None:
    """The family setups' tenants table: the parent (a root, no project rows) and every bench
    tenant, each naming it as its parent."""
    from sqlalchemy import insert
    from sqlmodel import SQLModel

    tenant = family_tenant_model()
    engine = make_engine(url)
    tenant.__table__.drop(engine, checkfirst=True)
    SQLModel.metadata.create_all(engine, tables=[tenant.__table__])
    rows = [{"id": 1, "slug": FAMILY_PARENT, "name": "Parent", "parent_slug": None}] + [
        {"id": i + 2, "slug": name, "name": name, "parent_slug": FAMILY_PARENT}
        for i, name in enumerate(names)
    ]
    with engine.begin() as conn:
        conn.execute(insert(tenant.__table__), [{**row, "active": True} for row in rows])
    engine.dispose()


def drop_family(url: str) -> None:
    engine = make_engine(url)
    with contextlib.suppress(Exception):
        family_tenant_model().__table__.drop(engine, checkfirst=True)
    engine.dispose()


@contextlib.contextmanager
def rls_urls(url: str, setups: list[str], key: type) -> Iterator[dict[str, str]]:
    """Each setup's database URL. For kit-rls: row-level security on the seeded table (the
    kit's policies) and an ordinary role of its own, which reads it; dropped at the end."""
    urls = dict.fromkeys(setups, url)
    if RLS_SETUP not in setups:
        yield urls
        return
    from sqlalchemy import Column, MetaData, Table, create_engine, text
    from sqlalchemy.engine import make_url

    from fastapi_tenancy.postgres import apply_rls

    owner = create_engine(url)
    role = f"bench_overhead_app_{secrets.token_hex(3)}"
    quoted = owner.dialect.identifier_preparer.quote(role)
    marked = Table(
        TABLE,
        MetaData(),
        Column("tenant_id", bare_model(key).__table__.c.tenant_id.type),
        info={"fastapi_tenancy": "tenant_id"},
    )
    try:
        apply_rls(owner, [marked])
        with owner.begin() as conn:
            conn.execute(text(f"CREATE ROLE {quoted} LOGIN"))
            conn.execute(text(f"GRANT SELECT ON {TABLE} TO {quoted}"))
        urls[RLS_SETUP] = make_url(url).set(username=role).render_as_string(hide_password=False)
        yield urls
    finally:
        with owner.begin() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
                {"r": role},
            )
            conn.execute(text(f"DROP OWNED BY {quoted}"))
            conn.execute(text(f"DROP ROLE IF EXISTS {quoted}"))
        owner.dispose()


def choose_setups(
    parser: argparse.ArgumentParser, asked: str | None, url: str, known: Sequence[str] = SETUPS
) -> list[str]:
    """The setups to run: those asked for, or all of ``known`` that the database supports."""
    postgres = url.startswith("postgresql")
    if asked is None:
        if not postgres:
            print(f"({RLS_SETUP} needs PostgreSQL: pass --database-url postgresql+psycopg://...)")
        return [s for s in known if postgres or s != RLS_SETUP]
    names = asked.split(",")
    unknown = set(names) - set(known)
    if unknown or not names:
        parser.error(f"unknown setups: {sorted(unknown)}")
    if RLS_SETUP in names and not postgres:
        parser.error(f"{RLS_SETUP} needs PostgreSQL (--database-url postgresql+psycopg://...)")
    return [s for s in known if s in names]


# --------------------------------------------------------------------------------------------
# Requests: the headers each setup gets for each tenant, whose key travels as its string
# spelling, str(key).


def make_tokens(tenants: list[Any], secret: str) -> dict[Any, str]:
    import jwt

    exp = int(time.time()) + 7 * 24 * 3600
    return {
        t: jwt.encode(
            {"sub": f"user-of-{t}", "tenant": str(t), "exp": exp}, secret, algorithm="HS256"
        )
        for t in tenants
    }


def headers_for(setup: str, tenant: Any, tokens: dict[Any, str]) -> dict[str, str]:
    if setup not in JWT_SETUPS:
        return {"X-Tenant-ID": str(tenant)}
    return {"Authorization": f"Bearer {tokens[tenant]}"}


def fetch(port: int, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/projects", headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Load generators. Each returns {"requests", "seconds", "p50_us", "p99_us", "errors"}.

WRK_SCRIPT = """\
local variants = {{ {variants} }}
local n = #variants
local i = 0
local prepared = {{}}

init = function(args)
  for k = 1, n do
    prepared[k] = wrk.format("GET", "/projects", variants[k])
  end
end

request = function()
  i = i + 1
  return prepared[(i % n) + 1]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {{\\"requests\\": %d, \\"seconds\\": %.6f, \\"p50_us\\": %d, \\"p99_us\\": %d, "
    .. "\\"errors\\": %d}}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_wrk_script(
    directory: Path, setup: str, tenants: list[Any], tokens: dict[Any, str]
) -> Path:
    variants = []
    for tenant in tenants:
        pairs = ", ".join(
            f"[{lua_string(k)}] = {lua_string(v)}"
            for k, v in headers_for(setup, tenant, tokens).items()
        )
        variants.append("{ " + pairs + " }")
    path = directory / f"{setup}.lua"
    path.write_text(WRK_SCRIPT.format(variants=", ".join(variants)))
    return path


@dataclass
class LoadGen:
    kind: str  # "wrk" or "python"
    connections: int
    wrk_threads: int
    scripts: dict[str, Path] = field(default_factory=dict)
    variants: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(
                ["wrk", "--version"],  # noqa: S607 (wrk from PATH is the point)
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split("\n")[0]
            version = " ".join(version.split()[:2]) or "wrk"
            return (
                f"{version}, {self.wrk_threads} thread(s), {self.connections} keep-alive "
                "connections"
            )
        return (
            f"python http.client (separate process), {self.connections} threads, one keep-alive "
            "connection each"
        )

    def run(self, setup: str, port: int, seconds: float) -> dict[str, Any]:
        if self.kind == "wrk":
            cmd = [
                "wrk",
                f"-t{self.wrk_threads}",
                f"-c{self.connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "--latency",
                "-s",
                str(self.scripts[setup]),
                f"http://127.0.0.1:{port}/projects",
            ]
        else:
            cmd = [
                sys.executable,
                __file__,
                "loadgen",
                "--port",
                str(port),
                "--seconds",
                str(seconds),
                "--connections",
                str(self.connections),
                "--variants",
                json.dumps(self.variants[setup]),
            ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        for line in done.stdout.splitlines():
            if line.startswith("BENCHJSON "):
                return json.loads(line[len("BENCHJSON ") :])
        raise RuntimeError(
            f"load generator failed for {setup}:\n{done.stdout}\n{done.stderr}".rstrip()
        )


def loadgen(argv: Sequence[str]) -> None:
    """The fallback load generator: threads with one keep-alive connection each."""
    parser = argparse.ArgumentParser(prog="overhead.py loadgen")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--variants", required=True)
    args = parser.parse_args(argv)
    variants: list[dict[str, str]] = json.loads(args.variants)
    latencies: list[list[float]] = [[] for _ in range(args.connections)]
    errors = [0] * args.connections
    start = time.perf_counter()
    deadline = start + args.seconds

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
        mine = latencies[index]
        i = index
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                conn.request("GET", "/projects", headers=variants[i % len(variants)])
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[index] += 1
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
                continue
            mine.append(time.perf_counter() - t0)
            i += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    samples = sorted(x for per in latencies for x in per)
    if not samples:
        samples = [0.0]

    def pct(p: float) -> int:
        return round(samples[min(len(samples) - 1, int(p / 100 * len(samples)))] * 1e6)

    result = {
        "requests": len(samples),
        "seconds": elapsed,
        "p50_us": pct(50),
        "p99_us": pct(99),
        "errors": sum(errors),
    }
    print("BENCHJSON " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# The parent: seed, start the servers, verify, warm up, measure, print.


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def servers(
    ports: dict[str, int],
    urls: dict[str, str],
    key_type: str,
    secret: str,
    probe: dict[str, dict[str, str]],
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    env = {**os.environ, "BENCH_JWT_SECRET": secret, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for setup, port in ports.items():
            db_args = ["--database-url", urls[setup], "--key-type", key_type]
            procs[setup] = subprocess.Popen(  # noqa: S603 (our own file, our arguments)
                [sys.executable, __file__, "serve", setup, "--port", str(port), *db_args],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        for setup, port in ports.items():
            while True:
                if procs[setup].poll() is not None:
                    raise RuntimeError(f"the {setup} server exited with {procs[setup].returncode}")
                try:
                    status, _ = fetch(port, probe[setup], timeout=2)
                    if status == 200:
                        break
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


def verify(ports: dict[str, int], tenants: list[Any], tokens: dict[Any, str], rows: int) -> int:
    """All answer the same rows for each tenant; returns the response size in bytes."""
    from fastapi.encoders import jsonable_encoder

    size = 0
    for tenant in tenants:
        spelled = jsonable_encoder(tenant)  # the key in the JSON: "tenant-0", 1 or "0f6c..."
        answers: dict[str, list[Any]] = {}
        bodies: dict[str, bytes] = {}
        for setup, port in ports.items():
            status, body = fetch(port, headers_for(setup, tenant, tokens))
            if status != 200:
                raise SystemExit(f"verify: {setup} answered {status} for {tenant}: {body[:200]!r}")
            data = json.loads(body)
            if len(data) != rows or any(row.get("tenant_id") != spelled for row in data):
                raise SystemExit(
                    f"verify: {setup} returned {len(data)} rows for {tenant}, expected {rows} "
                    f"rows of {tenant} only"
                )
            answers[setup] = sorted(data, key=lambda row: row["id"])
            bodies[setup] = body
        reference = answers[SETUPS[0]]
        for setup in ports:
            if answers[setup] != reference:
                raise SystemExit(f"verify: {setup} and {SETUPS[0]} disagree for {tenant}")
        for kit, bare in TWINS:
            if kit in bodies and bare in bodies and len(bodies[kit]) != len(bodies[bare]):
                raise SystemExit(
                    f"verify: {kit} and {bare} bodies differ in size for {tenant} "
                    f"({len(bodies[kit])} vs {len(bodies[bare])} bytes)"
                )
        size = len(bodies[SETUPS[0]])
    return size


def versions() -> str:
    names = ("fastapi", "starlette", "pydantic", "sqlmodel", "sqlalchemy", "uvicorn", "pyjwt")
    parts = [f"python {platform.python_version()}"]
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} -")
    return ", ".join(parts)


def uvicorn_impl() -> str:
    loop = "uvloop" if _importable("uvloop") else "asyncio"
    http_impl = "httptools" if _importable("httptools") else "h11"
    return f"uvicorn loop {loop}, http {http_impl}, 1 worker, access log off"


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def database_label(url: str, sqlite_default: bool, key_type: str) -> str:
    """The database, and the type of the tenant keys unless they are strings."""
    from sqlalchemy.engine import make_url

    label = SQLITE_DEFAULT if sqlite_default else make_url(url).render_as_string(hide_password=True)
    return label if key_type == "str" else f"{label}, {key_type} tenant keys"


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def rps(sample: dict[str, Any]) -> float:
    return float(sample["requests"] / sample["seconds"])


def print_report(
    results: dict[str, list[dict[str, Any]]],
    order_log: list[list[str]],
    env_lines: list[str],
) -> None:
    med: dict[str, dict[str, Any]] = {}
    for setup, samples in results.items():
        rates = [rps(s) for s in samples]
        cpu = [s["cpu_us"] for s in samples if "cpu_us" in s]
        med[setup] = {
            "rps": statistics.median(rates),
            "p50": statistics.median(s["p50_us"] for s in samples),
            "p99": statistics.median(s["p99_us"] for s in samples),
            "cpu": statistics.median(cpu) if len(cpu) == len(samples) else None,
            "rps_min": min(rates),
            "rps_max": max(rates),
            "errors": sum(s["errors"] for s in samples),
            "requests": sum(s["requests"] for s in samples),
        }

    print()
    for line in env_lines:
        print(line)
    print()
    print("Per setup: medians over the rounds (range: min..max req/s of the rounds);")
    print("cpu µs/req: CPU time of the server process per request")
    head = (
        f"{'setup':<12} {'req/s':>8} {'range':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu µs/req':>10} {'requests':>9}"
    )
    print(head)
    print("-" * len(head))
    for setup in SETUPS:
        if setup not in med:
            continue
        m = med[setup]
        rng = f"{m['rps_min']:.0f}..{m['rps_max']:.0f}"
        cpu = "-" if m["cpu"] is None else f"{m['cpu']:.0f}"
        print(
            f"{setup:<12} {m['rps']:>8.1f} {rng:>11} {fmt_ms(m['p50']):>8} "
            f"{fmt_ms(m['p99']):>8} {cpu:>10} {m['requests']:>9.0f}"
        )
    errors = {s: m["errors"] for s, m in med.items() if m["errors"]}
    if errors:
        print(f"!! errors or non-2xx responses: {errors}")

    print()
    print("Kit against its bare twin. ratio = kit req/s / bare req/s (> 1: kit faster);")
    print("paired = median (min..max) of the per-round ratios, twins measured back to back;")
    print("µs/req = 1/rps_kit - 1/rps_bare; p50 and cpu: kit minus bare (> 0: kit slower)")
    head = (
        f"{'pair':<24} {'ratio':>7} {'paired':>7} {'range':>13} {'µs/req':>8} "
        f"{'p50 µs':>7} {'cpu µs':>7}"
    )
    print(head)
    print("-" * len(head))
    for kit, bare in TWINS:
        if kit not in med or bare not in med:
            continue
        ratio = med[kit]["rps"] / med[bare]["rps"]
        per_round = [rps(k) / rps(b) for k, b in zip(results[kit], results[bare], strict=True)]
        spread = f"{min(per_round):.3f}..{max(per_round):.3f}"
        overhead = 1e6 / med[kit]["rps"] - 1e6 / med[bare]["rps"]
        p50_diff = med[kit]["p50"] - med[bare]["p50"]
        cpu_diff = (
            "-"
            if med[kit]["cpu"] is None or med[bare]["cpu"] is None
            else f"{med[kit]['cpu'] - med[bare]['cpu']:+.0f}"
        )
        print(
            f"{kit + ' / ' + bare:<24} {ratio:>6.3f}x {statistics.median(per_round):>6.3f}x "
            f"{spread:>13} {overhead:>+8.1f} {p50_diff:>+7.0f} {cpu_diff:>7}"
        )
    print()
    print("Per round: req/s (cpu µs/req); order ABCD in odd rounds, DCBA in even ones")
    shown = [s for s in SETUPS if s in results]
    print(f"{'round':<6}" + "".join(f"{s:>18}" for s in shown))
    for r in range(len(order_log)):
        cells = []
        for s in shown:
            sample = results[s][r]
            cpu = f" ({sample['cpu_us']:.0f})" if "cpu_us" in sample else ""
            cells.append(f"{f'{rps(sample):.1f}{cpu}':>18}")
        print(f"{r + 1:<6}" + "".join(cells))


def _exit_on_sigterm() -> None:
    """Turn SIGTERM (timeout, kill) into SystemExit, so servers and files are cleaned up."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def run(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="overhead.py",
        description="Per-request overhead of fastapi_tenancy against hand-written FastAPI.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="measuring rounds")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per setup per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per setup")
    parser.add_argument("--connections", type=int, default=4, help="concurrent connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (sync driver); default: a SQLite file in a temporary directory",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("BENCH_BASE_PORT", DEFAULT_BASE_PORT)),
        help="first of five ports on 127.0.0.1 (env BENCH_BASE_PORT)",
    )
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--rows", type=int, default=50, help="rows per tenant")
    parser.add_argument(
        "--setups",
        default=None,
        help="comma-separated subset of " + ",".join(SETUPS) + " (default: all the database has)",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="after the warm-up, print the server pids and wait for Enter (to attach a profiler)",
    )
    add_key_type(parser)
    args = parser.parse_args(argv)
    key = KEY_TYPES[args.key_type]
    _exit_on_sigterm()

    setups = choose_setups(parser, args.setups, args.database_url or "sqlite")
    kind = args.loadgen
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "python"
    elif kind == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not on PATH")

    ports = {s: args.base_port + i for i, s in enumerate(SETUPS) if s in setups}
    busy = [p for p in ports.values() if not port_free(p)]
    if busy:
        parser.error(f"ports in use on 127.0.0.1: {busy} (pick another --base-port)")

    tmp = Path(tempfile.mkdtemp(prefix="tenancy-bench-"))
    try:
        sqlite_default = args.database_url is None
        url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
        names = tenant_names(args.tenants)
        tenants = tenant_keys(names, key)
        secret = secrets.token_hex(32)
        tokens = make_tokens(tenants, secret)

        gen = LoadGen(kind=kind, connections=args.connections, wrk_threads=args.wrk_threads)
        for setup in setups:
            gen.scripts[setup] = write_wrk_script(tmp, setup, tenants, tokens)
            gen.variants[setup] = [headers_for(setup, t, tokens) for t in tenants]

        env_lines = [
            "fastapi_tenancy overhead: GET /projects, "
            f"{args.rows} rows of one tenant out of {args.tenants} x {args.rows}, JSON",
            f"  versions : {versions()}",
            f"  server   : {uvicorn_impl()}, 127.0.0.1 ports {min(ports.values())}.."
            f"{max(ports.values())}",
            f"  database : {database_label(url, sqlite_default, args.key_type)}",
            f"  load     : {gen.describe()}, tenant alternating per request",
            f"  run      : {args.rounds} rounds x {args.seconds:g} s per setup, interleaved; "
            f"warm-up {args.warmup:g} s per setup",
            f"  machine  : {os.cpu_count()} CPUs, {platform.platform()}",
        ]
        for line in env_lines:
            print(line, flush=True)

        seed(url, names, args.rows, key)
        probe = {s: headers_for(s, tenants[0], tokens) for s in setups}
        with (
            rls_urls(url, setups, key) as urls,
            servers(ports, urls, args.key_type, secret, probe) as procs,
        ):
            size = verify(ports, tenants, tokens, args.rows)
            print(
                f"verified: the setups return the same {args.rows} rows ({size} bytes) for each "
                "tenant",
                flush=True,
            )
            env_lines.append(f"  response : {size} bytes, verified equal across setups")
            for setup in setups:
                gen.run(setup, ports[setup], args.warmup)
            print("warmed up", flush=True)
            if args.hold:
                for setup in setups:
                    print(f"  {setup}: pid {procs[setup].pid}, port {ports[setup]}")
                input("servers up; press Enter to measure... ")
            results: dict[str, list[dict[str, Any]]] = {s: [] for s in setups}
            order_log = []
            for r in range(args.rounds):
                # A B C D, then D C B A: twins stay next to each other and a linear drift
                # over the run weighs on every setup alike.
                order = setups if r % 2 == 0 else setups[::-1]
                order_log.append(order)
                for setup in order:
                    cpu_before = cpu_seconds(procs[setup].pid)
                    sample = gen.run(setup, ports[setup], args.seconds)
                    cpu_after = cpu_seconds(procs[setup].pid)
                    if cpu_before is not None and cpu_after is not None and sample["requests"]:
                        sample["cpu_us"] = (cpu_after - cpu_before) * 1e6 / sample["requests"]
                    results[setup].append(sample)
                line = ", ".join(
                    f"{s} {results[s][-1]['requests'] / results[s][-1]['seconds']:.0f}"
                    for s in setups
                )
                print(f"round {r + 1}/{args.rounds}: {line} req/s", flush=True)
    finally:
        if not sqlite_default:
            drop(url, key)
        shutil.rmtree(tmp, ignore_errors=True)
    print_report(results, order_log, env_lines)


# --------------------------------------------------------------------------------------------
# Instruction counts: a deterministic measure for noisy machines (valgrind, no HTTP server).


def drive(argv: Sequence[str]) -> None:
    """Call one setup's ASGI app in-process: warm-up, then N sequential requests."""
    parser = argparse.ArgumentParser(prog="overhead.py drive")
    parser.add_argument(
        "setup", choices=SETUPS + scale.LOOKUP_SETUPS + OPTION_SETUPS + FAMILY_SETUPS
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--distribution", choices=("cycle", *scale.DISTRIBUTIONS), default="cycle")
    add_route(parser)
    add_key_type(parser)
    args = parser.parse_args(argv)
    import asyncio
    import gc

    secret = os.environ["BENCH_JWT_SECRET"]
    key = KEY_TYPES[args.key_type]
    tenants = tenant_keys(tenant_names(args.tenants), key)
    count = len(tenants)
    sequence = scale.request_sequence(args.distribution, count, args.warmup, args.requests)
    asked = sorted(set(sequence))
    jwt_setup = args.setup in JWT_SETUPS
    tokens = make_tokens([tenants[k] for k in asked], secret) if jwt_setup else {}
    app = build_app(args.setup, args.database_url, secret, key)
    raw_headers = {
        k: [(b"host", b"127.0.0.1")]
        + [
            (name.lower().encode(), value.encode())
            for name, value in headers_for(args.setup, tenants[k], tokens).items()
        ]
        for k in asked
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    def path_of(i: int, k: int) -> str:
        """Request ``i``'s path, for tenant ``k``; by id, row ``i % rows`` of that tenant
        (rows are interleaved by tenant: row j of tenant k has the id j * count + k + 1)."""
        if args.route == "list":
            return "/projects"
        return f"/projects/{k + 1 + count * (i % args.rows)}"

    async def one(i: int) -> None:
        k = sequence[i]
        headers = raw_headers[k]
        path = path_of(i, k)
        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
        if status != [200]:
            raise SystemExit(f"drive: {args.setup} answered {status}")

    async def main() -> dict[str, Any]:
        async with lifespan(app):
            for i in range(args.warmup):
                await one(i)
            collections = [g["collections"] for g in gc.get_stats()]
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(args.warmup, args.warmup + args.requests):
                await one(i)
            n = max(args.requests, 1)
            result: dict[str, Any] = {
                "wall_us": (time.perf_counter() - wall) * 1e6 / n,
                "cpu_us": (time.process_time() - cpu) * 1e6 / n,
                # garbage collections per 1000 requests, by generation
                "gc": [
                    (g["collections"] - before) * 1000 / n
                    for g, before in zip(gc.get_stats(), collections, strict=True)
                ],
                "rss_kib": resident_kib(),
            }
            if args.setup == "kit-preload":
                started = time.perf_counter()
                await app.state.tenancy.lookup.reload()
                result["reload_ms"] = (time.perf_counter() - started) * 1e3
            return result

    print("BENCHJSON " + json.dumps(asyncio.run(main())), flush=True)


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> Any:
    """Run ``app``'s lifespan around the block, as a server does: its startup (the kit's checks
    and, for kit-preload, the load of every tenant) before the first request."""
    import asyncio

    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"drive: the app did not start: {started}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


def resident_kib() -> int:
    """This process's resident memory (VmRSS), in KiB; 0 where /proc is missing."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Workload:
    """What ``count`` drives: the route, the table's shape, the key type and how requests
    pick their tenant."""

    route: str
    tenants: int
    rows: int
    key_type: str
    distribution: str = "cycle"


def _drive_cmd(setup: str, url: str, requests: int, work: Workload) -> list[str]:
    return [
        sys.executable,
        __file__,
        "drive",
        setup,
        "--database-url",
        url,
        "--requests",
        str(requests),
        "--route",
        work.route,
        "--tenants",
        str(work.tenants),
        "--rows",
        str(work.rows),
        "--key-type",
        work.key_type,
        "--distribution",
        work.distribution,
    ]


def _instructions(setup: str, url: str, requests: int, work: Workload, env: dict[str, str]) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        *_drive_cmd(setup, url, requests, work),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise RuntimeError(f"valgrind failed for {setup}:\n{done.stderr[-2000:]}")


def _count_all(
    setups: list[str],
    urls: dict[str, str],
    requests: int,
    work: Workload,
    env: dict[str, str],
    native: dict[str, float],
    collections: dict[str, list[float]],
) -> dict[tuple[str, int], int]:
    """Native CPU per request (into ``native``, ``collections``) and valgrind counts per job."""
    for setup in setups:
        runs = []
        for _ in range(3):
            out = subprocess.run(  # noqa: S603
                _drive_cmd(setup, urls[setup], 1000, work),
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout
            runs.append(json.loads(out.split("BENCHJSON ", 1)[1]))
        native[setup] = min(r["cpu_us"] for r in runs)
        collections[setup] = runs[0]["gc"]
    jobs = [(s, n) for s in setups for n in (0, requests)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return dict(
            zip(
                jobs,
                pool.map(lambda j: _instructions(j[0], urls[j[0]], j[1], work, env), jobs),
                strict=True,
            )
        )


def count(argv: Sequence[str]) -> None:
    """Instructions per request under valgrind: the same on a busy machine as on a quiet one."""
    parser = argparse.ArgumentParser(
        prog="overhead.py count",
        description="Instructions per request of each setup (in-process ASGI, valgrind).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database-url", default=None, help="default: a SQLite file")
    parser.add_argument("--requests", type=int, default=300, help="measured requests")
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument(
        "--rows", type=int, default=None, help="rows per tenant (default: 50; 5 with --scale)"
    )
    parser.add_argument(
        "--setups",
        default=None,
        help="comma-separated subset of "
        + ",".join(SETUPS + OPTION_SETUPS + FAMILY_SETUPS)
        + " (default: all the database and key type have;"
        " with --scale, of " + ",".join(scale.SCALE_SETUPS) + ")",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="many tenants, with and without a lookup: see bench/scale.py",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, scale.SIZES)),
        help="with --scale: the tenant counts, comma-separated",
    )
    parser.add_argument(
        "--distributions",
        default=",".join(scale.DISTRIBUTIONS),
        help="with --scale: how requests pick their tenant (uniform, zipf)",
    )
    add_route(parser)
    add_key_type(parser)
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = 5 if args.scale else 50
    if not shutil.which("valgrind"):
        parser.error("valgrind is not on PATH (apt-get install valgrind)")
    _exit_on_sigterm()
    env = {
        **os.environ,
        "BENCH_JWT_SECRET": "k" * 64,
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    if args.scale:
        count_at_scale(parser, args, env)
        return
    key = KEY_TYPES[args.key_type]
    work = Workload(args.route, args.tenants, args.rows, args.key_type)
    known = SETUPS + OPTION_SETUPS + FAMILY_SETUPS
    if args.key_type != "str":
        if args.setups is not None and set(args.setups.split(",")) & set(FAMILY_SETUPS):
            parser.error(f"{', '.join(FAMILY_SETUPS)} key tenants by slug: leave --key-type at str")
        known = SETUPS + OPTION_SETUPS
    setups = choose_setups(parser, args.setups, args.database_url or "sqlite", known=known)
    family = bool(set(setups) & set(FAMILY_SETUPS))
    tmp = Path(tempfile.mkdtemp(prefix="tenancy-count-"))
    try:
        sqlite_default = args.database_url is None
        url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
        print(f"versions : {versions()}")
        print(f"database : {database_label(url, sqlite_default, args.key_type)}")
        route = ROUTES[args.route]
        print(f"route    : {route}")
        print(
            f"method   : in-process ASGI calls (no HTTP server), valgrind instruction counts of "
            f"runs with 0 and {args.requests} measured requests after the same warm-up, differenced"
        )
        seed(url, tenant_names(args.tenants), args.rows, key)
        if family:
            seed_family(url, tenant_names(args.tenants))
        native: dict[str, float] = {}
        collections: dict[str, list[float]] = {}
        with rls_urls(url, setups, key) as urls:
            counts = _count_all(setups, urls, args.requests, work, env, native, collections)
    finally:
        if not sqlite_default:
            drop(url, key)
            if family:
                drop_family(url)
        shutil.rmtree(tmp, ignore_errors=True)
    per = {s: (counts[(s, args.requests)] - counts[(s, 0)]) / args.requests for s in setups}
    # The fastest native speed seen, in µs per instruction: contention only slows a run down.
    us_per_instr = min(native[s] / per[s] for s in setups)
    print()
    print("instr/req: valgrind, deterministic; cpu µs/req: native, min of 3 runs of 1000")
    print("requests (noisy on a busy machine); gc: collections per 1000 requests, gen 0/1/2")
    head = f"{'setup':<12} {'instr/req':>11} {'cpu µs/req':>11} {'gc 0/1/2':>16}"
    print(head)
    print("-" * len(head))
    for setup in setups:
        gcs = "/".join(f"{x:g}" for x in collections[setup])
        print(f"{setup:<12} {per[setup] / 1e6:>10.3f}M {native[setup]:>11.0f} {gcs:>16}")
    print()
    print(f"≈ µs: the extra instructions at {us_per_instr * 1e3:.2f} ns/instruction (the fastest")
    print("native run above)")
    head = f"{'pair':<24} {'instr ratio':>11} {'extra instr':>12} {'≈ µs/req':>9}"
    print(head)
    print("-" * len(head))
    for kit, bare in TWINS + OPTION_TWINS + FAMILY_TWINS:
        if kit in per and bare in per:
            extra = per[kit] - per[bare]
            us = extra * us_per_instr
            print(
                f"{kit + ' / ' + bare:<24} {per[kit] / per[bare]:>10.3f}x "
                f"{extra / 1e3:>+11.0f}k {us:>+9.0f}"
            )


def count_at_scale(
    parser: argparse.ArgumentParser, args: argparse.Namespace, env: dict[str, str]
) -> None:
    """``count --scale``: every setup of bench/scale.py at every size and spread."""
    if args.key_type != "str":
        parser.error("--scale keys tenants by their names: leave --key-type at str")
    setups = scale.SCALE_SETUPS if args.setups is None else tuple(args.setups.split(","))
    unknown = set(setups) - set(scale.SCALE_SETUPS)
    if unknown:
        parser.error(f"unknown setups for --scale: {sorted(unknown)}")
    sizes = [int(size) for size in args.sizes.split(",")]
    spreads = args.distributions.split(",")
    if set(spreads) - set(scale.DISTRIBUTIONS):
        parser.error(f"--distributions: choose among {scale.DISTRIBUTIONS}")
    tmp = Path(tempfile.mkdtemp(prefix="tenancy-scale-"))
    sqlite_default = args.database_url is None
    url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    print(f"versions : {versions()}")
    print(f"database : {database_label(url, sqlite_default, args.key_type)}")
    print(f"route    : {ROUTES[args.route]}, {args.rows} rows per tenant")
    print(
        f"method   : in-process ASGI calls after the app's lifespan startup, valgrind "
        f"instruction counts of runs with 0 and {args.requests} measured requests after the "
        "same 50 warm-up requests, differenced"
    )
    per: dict[tuple[int, str, str], float] = {}
    native: dict[tuple[int, str, str], dict[str, Any]] = {}
    from concurrent.futures import ThreadPoolExecutor

    try:
        for size in sizes:
            scale.seed(url, size, args.rows, bare_model(str), make_engine)
            # the warm-up is the same for every spread: one run of 0 requests per setup
            jobs = [(spreads[0], setup, 0) for setup in setups] + [
                (spread, setup, args.requests) for spread in spreads for setup in setups
            ]

            def job(item: tuple[str, str, int], size: int = size) -> int:
                spread, setup, n = item
                work = Workload(args.route, size, args.rows, "str", spread)
                return _instructions(setup, url, n, work, env)

            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                counts = dict(zip(jobs, pool.map(job, jobs), strict=True))
            for spread in spreads:
                for setup in setups:
                    work = Workload(args.route, size, args.rows, "str", spread)
                    out = subprocess.run(  # noqa: S603
                        _drive_cmd(setup, url, 1000, work),
                        capture_output=True,
                        text=True,
                        env=env,
                        check=True,
                    ).stdout
                    native[(size, spread, setup)] = json.loads(out.split("BENCHJSON ", 1)[1])
                    grown = counts[(spread, setup, args.requests)] - counts[(spreads[0], setup, 0)]
                    per[(size, spread, setup)] = grown / args.requests
            print(f"  measured {size} tenants", flush=True)
    finally:
        if not sqlite_default:
            scale.drop(url, bare_model(str), make_engine)
        shutil.rmtree(tmp, ignore_errors=True)
    scale.print_report(sizes, spreads, setups, per, native, 50, args.requests)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        serve(argv[1:])
    elif argv[:1] == ["loadgen"]:
        loadgen(argv[1:])
    elif argv[:1] == ["drive"]:
        drive(argv[1:])
    elif argv[:1] == ["count"]:
        count(argv[1:])
    else:
        run(argv)


if __name__ == "__main__":
    main()
