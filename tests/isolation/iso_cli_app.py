"""The app ``fastapi-tenancy migrate`` and ``tenants move`` are driven with in the isolation
tests: ``--app iso_cli_app:make_tenancy``, on the database and places the environment names."""

from __future__ import annotations

import os

from isolation_models import Organization
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from fastapi_tenancy import HeaderResolver, Isolation, Tenancy, TenantRegistry


def make_tenancy() -> Tenancy:
    """The app's Tenancy: tenants placed as their records say."""
    template = os.environ["ISO_DATABASE_URL_TEMPLATE"]
    return Tenancy(
        create_engine(os.environ["ISO_DATABASE_URL"]),
        resolvers=[HeaderResolver()],
        registry=TenantRegistry(Organization),
        isolation=Isolation(
            field="isolation",
            schema_prefix=os.environ["ISO_SCHEMA_PREFIX"],
            database_url=lambda key, record: make_url(template.replace("KEY", key)),
            migrations=os.environ.get("ISO_MIGRATIONS") or None,
        ),
    )
