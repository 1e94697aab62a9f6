"""docs/migrating.md: the isolation check for the migrated app, as your test suite runs it."""

from fastapi import FastAPI

from fastapi_tenancy.testing import TenantClients, assert_tenant_isolation


# --8<-- [start:check]
def check_invoice_isolation(app: FastAPI | TenantClients) -> None:
    """Create an invoice as each tenant, then read every route as each: nothing may cross."""
    assert_tenant_isolation(
        app,
        tenants=["acme", "globex"],
        routes=[
            ("POST /invoices", {"number": "{marker}", "amount": 100}),
            "GET /invoices",
            "GET /invoices/{id}",  # also asked with the other tenant's id: 403 or 404
        ],
    )


# --8<-- [end:check]
