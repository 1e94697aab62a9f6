"""docs/postgres-rls.md's sample, driven: both walls on, the admin switch through its engine."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from rls_models import ACME, GLOBEX, Project, metadata
from rls_support import as_owner
from sqlalchemy import insert

from docs.examples.postgres_rls import create_app, migrate

pytestmark = pytest.mark.backends("postgres")


@pytest.mark.parametrize("admin", [True, False], ids=["admin", "not admin"])
def test_the_documented_setup_keeps_tenants_apart_and_lets_only_admins_across(
    owner, app_role, admin
):
    migrate(owner, metadata)
    rows = [{"tenant_id": ACME, "name": "apollo"}, {"tenant_id": GLOBEX, "name": "zeus"}]
    with as_owner(owner) as conn:
        conn.execute(insert(Project).values(rows))
    admin_engine = app_role.engine(app_role.make_role("BYPASSRLS"))
    app = create_app(app_role.engine(), admin_engine, Project, is_admin=lambda context: admin)

    with TestClient(app) as client:
        acme = client.get("/items", headers={"X-Tenant-ID": str(ACME)})
        nobody = client.get("/items")
        everything = client.get("/admin/items")

    assert acme.json() == ["apollo"]
    assert nobody.status_code == 400
    if admin:
        assert everything.json() == ["apollo", "zeus"]
    else:
        assert everything.status_code == 403, everything.text
