"""Every tenant route of the example app names its tenant in every statement it sends.

The router check of "Scaling out on Citus": distributed on Citus by ``tenant_id``, a statement
that names one tenant on each tenant table it reads runs on one shard, any other runs on every
shard. ``record_fan_out()`` lists the statements of tenant sessions that would fan out, from
the wall's proof of each, so this runs on SQLite, PostgreSQL and MariaDB without Citus: a change
that would make a tenant route fan out (a model without ``__tenant_first_key__``, a query the
proof cannot keep to one tenant) fails here.
"""

from __future__ import annotations

import os

import pytest
from example_support import BASE_DOMAIN, FAST_HASH, PASSWORDS, SECRET, Headers, bearer
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from docs.examples.router_check import statements_fanning_out
from example_app import create_app
from example_app.auth import PasswordHasher
from example_app.models import metadata
from example_app.rls import prepare_rls
from example_app.seed import init_database
from fastapi_tenancy.wall import record_fan_out


def _every_tenant_route(api: TestClient, headers: Headers, name: str) -> list[int]:
    """Call each tenant route once as ``headers``' tenant; answer the statuses."""
    statuses = []

    def call(method: str, path: str, **kwargs: object) -> dict[str, object] | list[object]:
        response = api.request(method, path, headers=headers, **kwargs)
        statuses.append(response.status_code)
        return response.json() if response.content else {}

    call("GET", "/me")
    created = call("POST", "/projects", json={"name": f"{name}-routed"})
    project = created["id"]  # type: ignore[call-overload]
    call("GET", "/projects")
    call("GET", f"/projects/{project}")
    call("PATCH", f"/projects/{project}", json={"name": f"{name}-renamed"})
    call("POST", f"/projects/{project}/tasks", json={"name": "routed task"})
    call("GET", f"/projects/{project}/tasks")
    call("GET", "/stats")
    note = call("POST", "/notes", json={"title": "routed", "body": "b"})["id"]  # type: ignore[call-overload]
    call("GET", "/notes")
    call("GET", f"/notes/{note}")
    call("PATCH", f"/notes/{note}", json={"title": "renamed"})
    call("GET", "/team/notes")
    call("DELETE", f"/notes/{note}")
    call("DELETE", f"/projects/{project}")
    return statuses


def test_every_tenant_route_sends_only_statements_naming_its_tenant(
    api: TestClient, alice: Headers, bob: Headers
) -> None:
    with record_fan_out() as fanned:
        statuses = [
            *_every_tenant_route(api, alice, "alice"),
            *_every_tenant_route(api, bob, "bob"),
        ]

    assert all(status < 300 for status in statuses), statuses
    assert fanned == []


def test_the_docs_router_check_passes_the_example_app(
    api: TestClient, alice: Headers, bob: Headers
) -> None:
    assert statements_fanning_out(api, alice) == []
    assert statements_fanning_out(api, bob) == []


MULTI_SHARD_RAISES = (
    "-c citus.multi_task_query_log_level=error -c citus.propagate_set_commands=local"
)
"""On Citus: a statement that would run on several shards raises instead (a 500 here)."""


@pytest.mark.citus
@pytest.mark.parametrize("rls", [False, True], ids=["orm-wall", "rls"])
def test_every_tenant_route_runs_on_one_shard_on_citus(rls: bool) -> None:
    owner = create_engine(os.environ["TENANCY_TEST_CITUS_URL"], poolclass=NullPool)
    engines = [owner]
    try:
        with owner.begin() as conn:
            for table in reversed(metadata.sorted_tables):  # named: no REASSIGN OWNED on Citus
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name} CASCADE")
        init_database(owner, PasswordHasher(FAST_HASH))  # distributes the tables
        url = prepare_rls(owner, password="citus-test-password-0123") if rls else owner.url
        app_engine = create_engine(url, connect_args={"options": MULTI_SHARD_RAISES})
        engines.append(app_engine)
        app = create_app(
            app_engine,
            jwt_secret=SECRET,
            base_domain=BASE_DOMAIN,
            password_hash=FAST_HASH,
            admin_engine=owner if rls else None,
            rls=rls,
        )
        with TestClient(app) as api:
            alice, bob = (_log_in(api, email) for email in ("alice@acme.test", "bob@globex.test"))
            before = _shard_counts(owner)
            statuses = [
                *_every_tenant_route(api, alice, "alice"),
                *_every_tenant_route(api, bob, "bob"),
            ]
            single, multi = (a - b for a, b in zip(_shard_counts(owner), before, strict=True))
    finally:
        for engine in engines:
            engine.dispose()

    assert all(status < 300 for status in statuses), statuses
    assert multi == 0
    assert single > 0 or not _counting(owner)


def _log_in(api: TestClient, email: str) -> Headers:
    response = api.post("/auth/login", json={"email": email, "password": PASSWORDS[email]})
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


def _counting(owner: Engine) -> bool:
    with owner.connect() as conn:
        return conn.exec_driver_sql("SHOW citus.enable_stat_counters").scalar_one() == "on"


def _shard_counts(owner: Engine) -> tuple[int, int]:
    """Statements Citus ran on one shard, and on several, so far (citus_stat_counters)."""
    with owner.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT COALESCE(sum(query_execution_single_shard), 0), "
            "COALESCE(sum(query_execution_multi_shard), 0) FROM citus_stat_counters"
        ).one()
    return int(row[0]), int(row[1])
