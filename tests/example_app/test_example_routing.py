"""Every tenant route of the example app names its tenant in every statement it sends.

The router check of "Scaling out on Citus": distributed on Citus by ``tenant_id``, a statement
that names one tenant on each tenant table it reads runs on one shard, any other runs on every
shard. ``record_fan_out()`` lists the statements of tenant sessions that would fan out, from
the wall's proof of each, so this runs on SQLite, PostgreSQL and MariaDB without Citus: a change
that would make a tenant route fan out (a model without ``__tenant_first_key__``, a query the
proof cannot keep to one tenant) fails here.
"""

from __future__ import annotations

from example_support import Headers
from fastapi.testclient import TestClient

from docs.examples.router_check import statements_fanning_out
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
