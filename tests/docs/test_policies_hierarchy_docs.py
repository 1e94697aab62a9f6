"""docs/policies.md: hierarchical tenants, the sample app over HTTP on every database.

The family: ``vendor`` is ``reseller``'s parent, ``reseller`` is the parent of its customers
``acme`` and ``globex`` (siblings).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import Session

from docs.examples.policies_hierarchy import (
    CatalogItem,
    Order,
    Organization,
    create_app,
    metadata,
)

PARENTS = {"vendor": None, "reseller": "vendor", "acme": "reseller", "globex": "reseller"}


@pytest.fixture
def client(engine: Engine, create_tables: Any) -> TestClient:
    create_tables(engine, metadata)
    with Session(engine) as session:
        for slug, parent in PARENTS.items():
            session.add(Organization(slug=slug, parent_slug=parent))
            session.add(CatalogItem(name=f"{slug}-item", tenant_id=slug))
            session.add(Order(item=f"{slug}-order", tenant_id=slug))
        session.commit()
    with TestClient(create_app(engine)) as client:
        yield client


def get(client: TestClient, path: str, tenant: str) -> Any:
    return client.get(path, headers={"X-Tenant-ID": tenant})


def every_item(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:  # a plain session: the database as it is
        rows = session.execute(select(CatalogItem.tenant_id, CatalogItem.name))
        return sorted(tuple(row) for row in rows)


def test_a_customer_reads_its_ancestors_catalogue_not_its_siblings(client: TestClient) -> None:
    names = [item["name"] for item in get(client, "/catalog", "acme").json()]
    assert names == ["vendor-item", "reseller-item", "acme-item"]
    names = [item["name"] for item in get(client, "/catalog", "vendor").json()]
    assert names == ["vendor-item"]


def test_a_reseller_reads_its_customers_orders(client: TestClient) -> None:
    orders = [order["item"] for order in get(client, "/orders", "reseller").json()]
    assert orders == ["reseller-order", "acme-order", "globex-order"]
    orders = [order["item"] for order in get(client, "/orders", "acme").json()]
    assert orders == ["acme-order"]


def test_writes_stay_in_the_bound_tenant(client: TestClient, engine: Engine) -> None:
    before = every_item(engine)
    vendor_item = get(client, "/catalog", "acme").json()[0]
    assert vendor_item["tenant_id"] == "vendor"
    answer = client.patch(
        f"/catalog/{vendor_item['id']}",
        json={"name": "hijacked"},
        headers={"X-Tenant-ID": "acme"},
    )
    assert answer.status_code == 403
    assert answer.json()["code"] == "cross_tenant_write"
    assert every_item(engine) == before
    created = client.post("/catalog", json={"name": "mine"}, headers={"X-Tenant-ID": "acme"})
    assert created.status_code == 201
    assert created.json()["tenant_id"] == "acme"
    sibling = [item["name"] for item in get(client, "/catalog", "globex").json()]
    assert "mine" not in sibling
