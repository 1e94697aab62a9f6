"""Soak the example app as a service: thousands of mixed requests from several tenants' users.

Run by hand, never by the test suite::

    python bench/soak.py                         # SQLite file, 10,000 requests, 16 at a time
    python bench/soak.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/soak.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test --rls
    python bench/soak.py --database-url mysql+pymysql://root@127.0.0.1:3306/test
    python bench/soak.py --requests 2000 --concurrency 32 --port 8770 --seed 7

It starts ``python -m example_app --reset`` in a subprocess (uvicorn, one process, access log
to a file, on 127.0.0.1:``--port``), logs in as the seeded users, and sends ``--requests``
requests over real HTTP from ``--concurrency`` concurrent clients (httpx, asyncio). Each
client is one user acting in one tenant:

    alice (acme, tenant from her token)   bob (globex, token)   dave (initech, token)
    carol (acme, by X-Tenant-ID header)   carol (globex, by subdomain in the Host header)

and mixes: list, get, create, rename and delete projects, create and list tasks, plus attempts
on other tenants that must be refused: another tenant's project ids (GET, PATCH, DELETE, its
tasks), a header or host naming another tenant, a body naming another tenant.

Every row in a 2xx body is checked against the requester's tenant, and any 2xx to a
cross-tenant attempt is a leak. After the load it stops the server and reads the database
directly (as the ``--database-url`` role): every write answered 2xx must be there (creates,
renames), every delete answered 2xx must be gone, and no refused write may have landed.

It prints one table (statuses, 5xx, leaks, rows lost, p50/p95/p99 latency, throughput, the
server's resident memory before, during and after the load), then the server's warnings and
errors, and exits 1 on any leak or lost row. On a server database it drops the example app's
tables at start (``--reset``) and at the end (unless ``--keep``): give it a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8760
BASE_DOMAIN = "example.test"
RLS_ROLE = "example_app_rls"  # example_app.rls.DEFAULT_APP_ROLE
MAX_SHOWN = 10  # examples of each kind of failure printed


# --------------------------------------------------------------------------------------------
# Who sends the requests


@dataclass(frozen=True, slots=True)
class Actor:
    """A seeded user acting in one tenant; ``via`` is how the request names that tenant."""

    user: str
    email: str
    tenant: str
    via: str  # "token" (the token's claim), "header" (X-Tenant-ID) or "subdomain" (Host)

    @property
    def label(self) -> str:
        return f"{self.user}@{self.tenant} ({self.via})"


ACTORS = (
    Actor("alice", "alice@acme.test", "acme", "token"),
    Actor("bob", "bob@globex.test", "globex", "token"),
    Actor("dave", "dave@initech.test", "initech", "token"),
    Actor("carol", "carol@example.test", "acme", "header"),
    Actor("carol", "carol@example.test", "globex", "subdomain"),
)


def seeded_users() -> tuple[dict[str, str], dict[str, set[str]]]:
    """The seed's passwords and memberships by email."""
    from example_app.seed import SEED_USERS

    passwords = {user.email: user.password for user in SEED_USERS}
    tenants = {user.email: {tenant for tenant, _ in user.tenants} for user in SEED_USERS}
    return passwords, tenants


def tenant_headers(actor: Actor, token: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if actor.via == "header":
        headers["X-Tenant-ID"] = actor.tenant
    elif actor.via == "subdomain":
        headers["Host"] = f"{actor.tenant}.{BASE_DOMAIN}"
    return headers


# --------------------------------------------------------------------------------------------
# The server: python -m example_app in a subprocess


def port_is_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_server(
    url: str, port: int, rls: bool, log: Path, workdir: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PORT": str(port),
        "EXAMPLE_JWT_SECRET": secrets.token_urlsafe(32),
        "EXAMPLE_BASE_DOMAIN": BASE_DOMAIN,
        "EXAMPLE_RLS": "1" if rls else "0",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "example_app", "--reset"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until_ready(server: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    """Poll /healthz until it answers 200; SystemExit if the server dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode} while starting")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer /healthz within {timeout:.0f} s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def rss_kib(pid: int) -> int | None:
    """The resident memory of ``pid`` now (VmRSS), in KiB; None off Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, flags=re.MULTILINE)
    return None if found is None else int(found[1])


@dataclass
class Memory:
    """The server's resident memory (KiB): before the load, its highest sample, after."""

    start: int | None = None
    peak: int | None = None
    end: int | None = None


async def sample_memory(pid: int, memory: Memory, every: float = 0.25) -> None:
    """Keep ``memory.peak`` up to date until cancelled."""
    while True:
        now = rss_kib(pid)
        if now is not None:
            memory.peak = max(now, memory.peak or 0)
        await asyncio.sleep(every)


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (?P<level>[A-Z]+)\s+(?P<rest>.*)$")


@dataclass
class ServerLog:
    """What the server logged after startup, beyond its INFO lines."""

    warnings: Counter[str] = field(default_factory=Counter)  # by message, numbers as N
    errors: list[str] = field(default_factory=list)  # ERROR and CRITICAL lines, tracebacks


def read_server_log(log: Path) -> ServerLog:
    lines = log.read_text(errors="replace").splitlines()
    started = next((i for i, line in enumerate(lines) if "startup complete" in line), -1)
    found = ServerLog()
    for line in lines[started + 1 :]:
        match = LOG_LINE.match(line)
        if match is None:
            if line.strip():
                found.errors.append(line)  # a traceback, or anything printed
        elif match["level"] == "WARNING":
            found.warnings[re.sub(r"\d+", "N", match["rest"])] += 1
        elif match["level"] not in ("INFO", "DEBUG"):
            found.errors.append(line)
    return found


# --------------------------------------------------------------------------------------------
# What the soak keeps track of


@dataclass(slots=True)
class OwnProject:
    """A project a client created (answered 2xx), and what the database must hold for it."""

    id: int
    tenant: str
    name: str
    tasks: dict[int, str] = field(default_factory=dict)  # task id -> name, answered 2xx
    deleted: bool = False  # a DELETE was answered 2xx: it and its tasks must be gone
    unsure: bool = False  # a write on it got no clear answer (5xx, no answer): not checked


@dataclass
class Tally:
    """What the requests answered."""

    statuses: Counter[str] = field(default_factory=Counter)
    by_op: dict[str, Counter[str]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    unexpected: Counter[tuple[str, str]] = field(default_factory=Counter)
    leaks: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def record(self, op: str, status: str, seconds: float) -> None:
        self.statuses[status] += 1
        self.by_op.setdefault(op, Counter())[status] += 1
        self.latencies.setdefault(op, []).append(seconds)

    def leak(self, kind: str, example: str) -> None:
        self.leaks[kind] += 1
        self.note(f"LEAK ({kind}): {example}")

    def note(self, example: str) -> None:
        if len(self.examples) < 4 * MAX_SHOWN:
            self.examples.append(example)

    def all_latencies(self) -> list[float]:
        return [s for each in self.latencies.values() for s in each]


@dataclass
class Soak:
    """The state shared by the clients."""

    client: httpx.AsyncClient
    requests: int
    seeded: dict[str, list[int]]  # tenant -> the seeded project ids
    known: dict[str, list[int]]  # tenant -> every project id seen (for cross-tenant attempts)
    tally: Tally = field(default_factory=Tally)
    projects: list[OwnProject] = field(default_factory=list)
    refused_names: set[str] = field(default_factory=set)  # writes that must never land
    issued: int = 0

    def take_ticket(self) -> bool:
        if self.issued >= self.requests:
            return False
        self.issued += 1
        return True


@dataclass
class Client:
    """One concurrent client: an actor, its headers, its own projects and random draws."""

    number: int
    actor: Actor
    headers: dict[str, str]
    non_members: list[str]  # tenants the actor's user does not belong to
    rng: random.Random
    own: list[OwnProject] = field(default_factory=list)  # alive: created, not deleted, sure
    made: int = 0

    def new_name(self, what: str) -> str:
        self.made += 1
        return f"soak {what} {self.number}-{self.made}"

    def other_tenant(self, tenants: list[str]) -> str:
        return self.rng.choice([t for t in tenants if t != self.actor.tenant])


# --------------------------------------------------------------------------------------------
# One request, timed and checked

EXPECTED = {
    "list projects": {200},
    "get project": {200},
    "create project": {201},
    "create task": {201},
    "list tasks": {200},
    "rename project": {200},
    "delete project": {204},
    "other tenant's id": {404},
    "other tenant named": {403},
    "body names other tenant": {403},
}
FOREIGN_ROW = "another tenant's row in a 2xx body"
WRONG_ROW = "wrong row in a 2xx body"
CROSS_2XX = "cross-tenant attempt answered 2xx"
LEAK_KINDS = (FOREIGN_ROW, WRONG_ROW, CROSS_2XX)
CROSS_OPS = {"other tenant's id", "other tenant named", "body names other tenant"}


def rows_in(body: Any) -> list[dict[str, Any]]:
    """The rows (objects with a ``tenant_id``) in a JSON body."""
    items = body if isinstance(body, list) else [body]
    return [item for item in items if isinstance(item, dict) and "tenant_id" in item]


async def send(
    soak: Soak,
    client: Client,
    op: str,
    method: str,
    path: str,
    *,
    json: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response | None:
    """Send one request; record its status and latency, and any leak. None if no answer."""
    started = time.perf_counter()
    try:
        response = await soak.client.request(
            method, path, json=json, headers=headers or client.headers
        )
    except httpx.HTTPError as error:
        soak.tally.record(op, "no answer", time.perf_counter() - started)
        soak.tally.unexpected[(op, "no answer")] += 1
        soak.tally.note(f"{client.actor.label} {method} {path}: {type(error).__name__} {error}")
        return None
    soak.tally.record(op, str(response.status_code), time.perf_counter() - started)
    what = f"{client.actor.label} {method} {path} -> {response.status_code} {response.text[:200]}"
    if response.status_code not in EXPECTED[op]:
        soak.tally.unexpected[(op, str(response.status_code))] += 1
        soak.tally.note(f"unexpected: {what}")
    if response.is_success:
        if op in CROSS_OPS:
            soak.tally.leak(CROSS_2XX, what)
        elif response.content and any(
            row["tenant_id"] != client.actor.tenant for row in rows_in(response.json())
        ):
            soak.tally.leak(FOREIGN_ROW, what)
    return response


def unclear(response: httpx.Response | None) -> bool:
    """Whether a write may or may not have happened: no answer, or a 5xx."""
    return response is None or response.status_code >= 500


# --------------------------------------------------------------------------------------------
# The operations: each sends exactly one request


async def list_projects(soak: Soak, client: Client) -> None:
    limit = client.rng.choice((20, 100))
    await send(soak, client, "list projects", "GET", f"/projects?limit={limit}")


def readable_project(soak: Soak, client: Client) -> int:
    """An id the client's tenant has: one of the client's projects, or a seeded one."""
    ids = [p.id for p in client.own] + soak.seeded[client.actor.tenant]
    return client.rng.choice(ids)


async def get_project(soak: Soak, client: Client) -> None:
    project_id = readable_project(soak, client)
    response = await send(soak, client, "get project", "GET", f"/projects/{project_id}")
    if response is not None and response.is_success and response.json().get("id") != project_id:
        soak.tally.leak(WRONG_ROW, f"GET /projects/{project_id}: {response.text}")


async def list_tasks(soak: Soak, client: Client) -> None:
    project_id = readable_project(soak, client)
    await send(soak, client, "list tasks", "GET", f"/projects/{project_id}/tasks")


async def create_project(soak: Soak, client: Client) -> None:
    name = client.new_name("project")
    response = await send(soak, client, "create project", "POST", "/projects", json={"name": name})
    if response is not None and response.is_success:
        project = OwnProject(id=response.json()["id"], tenant=client.actor.tenant, name=name)
        soak.projects.append(project)
        client.own.append(project)
        soak.known[client.actor.tenant].append(project.id)


async def create_task(soak: Soak, client: Client) -> None:
    if not client.own:
        await create_project(soak, client)
        return
    project = client.rng.choice(client.own)
    name = client.new_name("task")
    body = {"name": name, "done": client.rng.random() < 0.3}
    response = await send(
        soak, client, "create task", "POST", f"/projects/{project.id}/tasks", json=body
    )
    if response is not None and response.is_success:
        project.tasks[response.json()["id"]] = name


async def rename_project(soak: Soak, client: Client) -> None:
    if not client.own:
        await create_project(soak, client)
        return
    project = client.rng.choice(client.own)
    name = client.new_name("renamed")
    response = await send(
        soak, client, "rename project", "PATCH", f"/projects/{project.id}", json={"name": name}
    )
    if response is not None and response.is_success:
        project.name = name
    elif unclear(response):
        forget(client, project)


async def delete_project(soak: Soak, client: Client) -> None:
    if not client.own:
        await create_project(soak, client)
        return
    project = client.rng.choice(client.own)
    # No more cross-tenant attempts on it: SQLite gives a deleted row's id to the next insert,
    # maybe another tenant's.
    soak.known[project.tenant].remove(project.id)
    response = await send(soak, client, "delete project", "DELETE", f"/projects/{project.id}")
    if response is not None and response.is_success:
        project.deleted = True
        client.own.remove(project)
    elif unclear(response):
        forget(client, project)


def forget(client: Client, project: OwnProject) -> None:
    """A write on ``project`` may or may not have happened: stop using and checking it."""
    project.unsure = True
    client.own.remove(project)


async def other_tenants_id(soak: Soak, client: Client) -> None:
    """Read, rename, delete, or add a task to, a project of another tenant: must be 404."""
    other = client.other_tenant(list(soak.known))
    project_id = client.rng.choice(soak.known[other])
    name = client.new_name("must not land")
    soak.refused_names.add(name)
    method, path, body = client.rng.choice(
        (
            ("GET", f"/projects/{project_id}", None),
            ("PATCH", f"/projects/{project_id}", {"name": name}),
            ("DELETE", f"/projects/{project_id}", None),
            ("GET", f"/projects/{project_id}/tasks", None),
            ("POST", f"/projects/{project_id}/tasks", {"name": name}),
        )
    )
    await send(soak, client, "other tenant's id", method, path, json=body)


async def other_tenant_named(soak: Soak, client: Client) -> None:
    """List projects with a header or host naming another tenant: must be 403."""
    headers = dict(client.headers)
    if client.non_members and client.actor.via != "token" and client.rng.random() < 0.5:
        # the tenant's own source names a tenant the user is not a member of
        tenant = client.rng.choice(client.non_members)
        if client.actor.via == "header":
            headers["X-Tenant-ID"] = tenant
        else:
            headers["Host"] = f"{tenant}.{BASE_DOMAIN}"
    else:
        # a second source contradicting the first (token or subdomain against header, ...)
        other = client.other_tenant(list(soak.known))
        second = {"token": client.rng.choice(("host", "header")), "header": "host"}
        if second.get(client.actor.via, "header") == "host":
            headers["Host"] = f"{other}.{BASE_DOMAIN}"
        else:
            headers["X-Tenant-ID"] = other
    await send(soak, client, "other tenant named", "GET", "/projects", headers=headers)


async def body_names_other_tenant(soak: Soak, client: Client) -> None:
    """Create a project or task, or move a project, with another tenant's id: must be 403."""
    other = client.other_tenant(list(soak.known))
    name = client.new_name("must not land")
    soak.refused_names.add(name)
    body = {"name": name, "tenant_id": other}
    choice = client.rng.randrange(3) if client.own else 0
    if choice == 0:
        await send(soak, client, "body names other tenant", "POST", "/projects", json=body)
        return
    project = client.rng.choice(client.own)
    if choice == 1:
        path, method = f"/projects/{project.id}", "PATCH"
    else:
        path, method = f"/projects/{project.id}/tasks", "POST"
    response = await send(soak, client, "body names other tenant", method, path, json=body)
    if method == "PATCH" and unclear(response):
        forget(client, project)


Operation = Callable[[Soak, Client], Awaitable[None]]
MIX: tuple[tuple[str, Operation, int], ...] = (
    ("list projects", list_projects, 18),
    ("get project", get_project, 14),
    ("create project", create_project, 10),
    ("create task", create_task, 12),
    ("list tasks", list_tasks, 6),
    ("rename project", rename_project, 10),
    ("delete project", delete_project, 5),
    ("other tenant's id", other_tenants_id, 13),
    ("other tenant named", other_tenant_named, 6),
    ("body names other tenant", body_names_other_tenant, 6),
)
"""The operations (named as in ``EXPECTED``) and their weights, in percent."""


async def run_client(soak: Soak, client: Client) -> None:
    operations = [operation for _, operation, _ in MIX]
    weights = [weight for _, _, weight in MIX]
    while soak.take_ticket():
        operation = client.rng.choices(operations, weights)[0]
        await operation(soak, client)


# --------------------------------------------------------------------------------------------
# Setting up and driving the load


async def log_in(http: httpx.AsyncClient, email: str, password: str) -> str:
    response = await http.post("/auth/login", json={"email": email, "password": password})
    if response.status_code != 200:
        raise SystemExit(f"login as {email} answered {response.status_code}: {response.text}")
    token: str = response.json()["access_token"]
    return token


async def make_clients(
    http: httpx.AsyncClient, concurrency: int, seed: int
) -> tuple[list[Client], dict[str, list[int]]]:
    """Log in once per user; the clients, and each tenant's seeded project ids."""
    passwords, memberships = seeded_users()
    tokens = {
        email: await log_in(http, email, passwords[email]) for email in {a.email for a in ACTORS}
    }
    tenants = sorted({actor.tenant for actor in ACTORS})
    clients = []
    for number in range(concurrency):
        actor = ACTORS[number % len(ACTORS)]
        non_members = [t for t in tenants if t not in memberships[actor.email]]
        clients.append(
            Client(
                number=number,
                actor=actor,
                headers=tenant_headers(actor, tokens[actor.email]),
                non_members=non_members,
                rng=random.Random(seed * 1000 + number),  # noqa: S311 (reproducible draws)
            )
        )
    seeded: dict[str, list[int]] = {}
    for tenant in tenants:
        actor = next(a for a in ACTORS if a.tenant == tenant)
        response = await http.get(
            "/projects?limit=100", headers=tenant_headers(actor, tokens[actor.email])
        )
        response.raise_for_status()
        seeded[tenant] = [row["id"] for row in response.json()]
    return clients, seeded


async def drive(
    port: int, pid: int, requests: int, concurrency: int, seed: int, timeout: float
) -> tuple[Soak, float, Memory]:
    """Log in, then send the requests: the soak's state, its wall time, the server's memory."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=timeout
    ) as http:
        clients, seeded = await make_clients(http, concurrency, seed)
        soak = Soak(
            client=http,
            requests=requests,
            seeded=seeded,
            known={tenant: list(ids) for tenant, ids in seeded.items()},
        )
        memory = Memory(start=rss_kib(pid))
        sampler = asyncio.create_task(sample_memory(pid, memory))
        started = time.perf_counter()
        await asyncio.gather(*(run_client(soak, client) for client in clients))
        wall = time.perf_counter() - started
        sampler.cancel()
        memory.end = rss_kib(pid)
        return soak, wall, memory


# --------------------------------------------------------------------------------------------
# The database at the end


@dataclass
class Verdict:
    """What the database holds against what was answered."""

    checked: int = 0  # acknowledged writes checked
    lost: Counter[str] = field(default_factory=Counter)
    landed: int = 0  # refused writes found in the database
    examples: list[str] = field(default_factory=list)

    def lose(self, kind: str, example: str) -> None:
        self.lost[kind] += 1
        if len(self.examples) < MAX_SHOWN:
            self.examples.append(f"LOST ({kind}): {example}")


def read_database(url: str) -> tuple[dict[int, tuple[str, str]], dict[int, tuple[str, int, str]]]:
    """Every project (tenant, name) and task (tenant, project id, name), read as the owner."""
    from sqlalchemy import text

    from example_app.settings import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            projects = {
                row[0]: (row[1], row[2])
                for row in conn.execute(text("SELECT id, tenant_id, name FROM projects"))
            }
            tasks = {
                row[0]: (row[1], row[2], row[3])
                for row in conn.execute(text("SELECT id, tenant_id, project_id, name FROM tasks"))
            }
    finally:
        engine.dispose()
    return projects, tasks


def verify(url: str, soak: Soak) -> Verdict:
    projects, tasks = read_database(url)
    verdict = Verdict()
    for project in soak.projects:
        if not project.unsure:
            check_project(project, projects, tasks, verdict)
    names = {name for _, name in projects.values()} | {name for _, _, name in tasks.values()}
    for name in sorted(soak.refused_names & names):
        verdict.landed += 1
        if len(verdict.examples) < MAX_SHOWN:
            verdict.examples.append(f"LEAK (refused write in the database): {name!r}")
    return verdict


def check_project(
    project: OwnProject,
    projects: dict[int, tuple[str, str]],
    tasks: dict[int, tuple[str, int, str]],
    verdict: Verdict,
) -> None:
    verdict.checked += 1 + len(project.tasks)
    label = f"project {project.id} of {project.tenant}"
    expected_tasks = {
        task_id: (project.tenant, project.id, name) for task_id, name in project.tasks.items()
    }
    if project.deleted:  # by id, tenant and name: SQLite gives a deleted row's id to new rows
        if projects.get(project.id) == (project.tenant, project.name):
            verdict.lose("deleted project still present", label)
        for task_id, task in expected_tasks.items():
            if tasks.get(task_id) == task:
                verdict.lose("task of a deleted project present", f"task {task_id} of {label}")
        return
    row = projects.get(project.id)
    if row is None:
        verdict.lose("created project missing", label)
    elif row != (project.tenant, project.name):
        verdict.lose("project changed", f"{label}: expected {project.name!r}, found {row}")
    for task_id, task in expected_tasks.items():
        if tasks.get(task_id) != task:
            verdict.lose("created task missing", f"task {task_id} of {label}: {tasks.get(task_id)}")


def drop_app_tables(url: str, drop_role: bool) -> None:
    """Drop the example app's tables (and the RLS role the run created) on a server database."""
    from sqlalchemy import text

    from example_app.models import metadata
    from example_app.settings import make_engine

    engine = make_engine(url)
    try:
        metadata.drop_all(engine)
        if drop_role:
            with engine.begin() as conn:
                conn.execute(text(f'DROP OWNED BY "{RLS_ROLE}"'))
                conn.execute(text(f'DROP ROLE "{RLS_ROLE}"'))
    finally:
        engine.dispose()


def rls_role_exists(url: str) -> bool:
    from sqlalchemy import text

    from example_app.settings import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            query = text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :r")
            return conn.execute(query, {"r": RLS_ROLE}).first() is not None
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# The report


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def percentiles_ms(seconds: list[float]) -> tuple[float, float, float]:
    if len(seconds) < 2:
        only = seconds[0] * 1e3 if seconds else 0.0
        return only, only, only
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49] * 1e3, cuts[94] * 1e3, cuts[98] * 1e3


def status_sort_key(status: str) -> tuple[int, str]:
    return (0, status) if status.isdigit() else (1, status)


def table(rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value:>12}")


def summary_rows(
    soak: Soak, verdict: Verdict, wall: float, memory: Memory
) -> list[tuple[str, str]]:
    tally = soak.tally
    total = sum(tally.statuses.values())
    p50, p95, p99 = percentiles_ms(tally.all_latencies())
    statuses = sorted(tally.statuses.items(), key=lambda item: status_sort_key(item[0]))
    five_xx = sum(n for status, n in statuses if status.startswith("5"))
    rows = [("requests", f"{total}")]
    rows += [(f"  {status}", f"{n}") for status, n in statuses]
    rows += [
        ("5xx", f"{five_xx}"),
        ("not the expected status", f"{sum(tally.unexpected.values())}"),
        ("leaks", f"{sum(tally.leaks.values()) + verdict.landed}"),
    ]
    rows += [(f"  {kind}", f"{tally.leaks[kind]}") for kind in LEAK_KINDS]
    rows += [
        ("  refused write in the database", f"{verdict.landed}"),
        ("writes answered 2xx, checked", f"{verdict.checked}"),
        ("rows lost", f"{sum(verdict.lost.values())}"),
    ]
    rows += [(f"  {kind}", f"{n}") for kind, n in sorted(verdict.lost.items())]
    rows += [
        ("latency p50 (ms)", f"{p50:.1f}"),
        ("latency p95 (ms)", f"{p95:.1f}"),
        ("latency p99 (ms)", f"{p99:.1f}"),
        ("throughput (req/s)", f"{total / wall:.0f}"),
        ("wall time (s)", f"{wall:.1f}"),
        ("server RSS before the load", mib(memory.start)),
        ("server RSS, highest during the load", mib(memory.peak)),
        ("server RSS after the load", mib(memory.end)),
    ]
    return rows


def print_operations(tally: Tally) -> None:
    head = f"{'operation':<24} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7}  statuses"
    print(head)
    print("-" * len(head))
    for op, _, _ in MIX:
        counts = tally.by_op.get(op)
        if not counts:
            continue
        p50, _, p99 = percentiles_ms(tally.latencies[op])
        shown = " ".join(
            f"{status}:{n}"
            for status, n in sorted(counts.items(), key=lambda item: status_sort_key(item[0]))
        )
        print(f"{op:<24} {sum(counts.values()):>8} {p50:>7.1f} {p99:>7.1f}  {shown}")


def print_findings(soak: Soak, verdict: Verdict, server_log: ServerLog, log: Path | None) -> None:
    if soak.tally.unexpected:
        print("\nnot the expected status (operation, status: count):")
        for (op, status), n in sorted(soak.tally.unexpected.items()):
            print(f"  {op}, {status}: {n}")
    examples = soak.tally.examples + verdict.examples
    if examples:
        print(f"\nexamples ({len(examples)}):")
        for example in examples:
            print(f"  {example}")
    where = f" (full log: {log})" if log else ""
    print(f"\nserver warnings after startup, by message{where}:")
    for message, n in server_log.warnings.most_common():
        print(f"  {n:>6}  {message}")
    errors = server_log.errors
    print(f"server errors after startup (ERROR, CRITICAL, tracebacks): {len(errors)} lines")
    for line in errors[: 4 * MAX_SHOWN]:
        print(f"  | {line}")
    if len(errors) > 4 * MAX_SHOWN:
        print(f"  | ... {len(errors) - 4 * MAX_SHOWN} more lines")


# --------------------------------------------------------------------------------------------
# The command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Soak the example app over HTTP with mixed requests from several tenants.",
        epilog="See bench/README.md. On a server database the example app's tables are dropped "
        "at start and at the end: use a database of its own.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="the server's DATABASE_URL (default: a SQLite file in a temporary directory)",
    )
    parser.add_argument(
        "--rls", action="store_true", help="EXAMPLE_RLS=1: row-level security (PostgreSQL only)"
    )
    parser.add_argument("--requests", type=int, default=10_000, help="requests to send")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the server's port")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random draws")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds to wait for the server"
    )
    parser.add_argument("--log", type=Path, default=None, help="keep the server's log here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the example app's tables on a server database"
    )
    args = parser.parse_args(argv)
    url: str | None = args.database_url
    if args.rls and (url is None or not url.startswith("postgres")):
        parser.error("--rls needs a PostgreSQL --database-url")
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be 1 or more")
    if port_is_taken(args.port):
        parser.error(f"something already listens on 127.0.0.1:{args.port}; pick another --port")
    return args


def soak_server(
    args: argparse.Namespace, url: str, workdir: Path, log: Path
) -> tuple[Soak, float, Memory, ServerLog]:
    """Start the server, drive the load, stop it: the soak, its wall time, memory, its log."""
    server = start_server(url, args.port, args.rls, log, workdir)
    try:
        try:
            wait_until_ready(server, args.port, args.startup_timeout)
        except SystemExit:
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        soak, wall, memory = asyncio.run(
            drive(args.port, server.pid, args.requests, args.concurrency, args.seed, args.timeout)
        )
        if server.poll() is not None:
            print(f"the server exited with status {server.returncode} during the run")
    finally:
        stop_server(server)
    return soak, wall, memory, read_server_log(log)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO_ROOT))
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tenancy-soak-"))
    on_server = args.database_url is not None
    url: str = args.database_url or f"sqlite:///{workdir / 'soak.sqlite3'}"
    log: Path = args.log or workdir / "server.log"
    drop_role = args.rls and not rls_role_exists(url)
    try:
        print(f"database    : {shown_url(url)}{'  (EXAMPLE_RLS=1)' if args.rls else ''}")
        print(f"load        : {args.requests} requests, {args.concurrency} concurrent clients")
        print(f"clients     : {', '.join(a.label for a in ACTORS)} (round robin)")
        print(f"server      : {sys.executable} -m example_app on 127.0.0.1:{args.port}\n")
        soak, wall, memory, server_log = soak_server(args, url, workdir, log)
        verdict = verify(url, soak)
    finally:
        if on_server and not args.keep:
            drop_app_tables(url, drop_role)
        shutil.rmtree(workdir, ignore_errors=True)
    table(summary_rows(soak, verdict, wall, memory))
    print()
    print_operations(soak.tally)
    print_findings(soak, verdict, server_log, args.log)
    failed = sum(soak.tally.leaks.values()) + verdict.landed + sum(verdict.lost.values())
    print(f"\n{'FAIL: leaks or lost rows' if failed else 'OK: no leak, no lost row'}")
    return 1 if failed else 0


def shown_url(url: str) -> str:
    from example_app.settings import database_url

    return database_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
