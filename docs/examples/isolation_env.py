"""The tenant migrations' env.py (docs/isolation.md): Alembic for the tables in the placeholder
schema, run in each tenant's own schema or database by ``fastapi-tenancy migrate``."""

# --8<-- [start:env]
from docs.examples.isolation_app import strategies_registry
from fastapi_tenancy.isolation.migrations import run_tenant_migrations

run_tenant_migrations(strategies_registry.metadata)
# --8<-- [end:env]
