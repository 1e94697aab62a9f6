"""The router check of docs/citus.md, as a helper a test suite calls.

``tests/example_app/test_example_routing.py`` runs it against the example app.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from fastapi_tenancy.wall import FannedOut, record_fan_out


# --8<-- [start:check]
def statements_fanning_out(client: TestClient, headers: dict[str, str]) -> list[FannedOut]:
    """Create, rename and delete a project as ``headers``' tenant; answer what fanned out."""
    with record_fan_out() as fanned:
        created = client.post("/projects", json={"name": "routed"}, headers=headers)
        project = created.json()["id"]
        client.patch(f"/projects/{project}", json={"name": "renamed"}, headers=headers)
        client.delete(f"/projects/{project}", headers=headers)
    return fanned


# in a test:  assert statements_fanning_out(client, alice) == []
# --8<-- [end:check]
