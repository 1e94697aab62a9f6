"""PostgreSQL defense in depth: row-level security under the ORM scoping, opt-in.

The ORM scoping guards every statement that goes through the ORM; this package adds the
database's own wall, for what does not (``text()``, core tables, a report's raw SQL, another
service on the same database). Turn it on in one step, with the policies applied by the owner::

    apply_rls(owner_engine, SQLModel.metadata)  # or op.enable_tenant_rls(...) in a migration
    tenancy = Tenancy(app_engine, resolvers=[...], rls=True, admin_engine=admin_engine)

Modules, in the order a request meets them:

    policies  the DDL: ENABLE/FORCE ROW LEVEL SECURITY and one policy per command
    setting   the tenant, the global read, the row scopes and the family named per transaction
              (set_config(..., true))
    begin     on psycopg 3, those settings sent in one message with the transaction's BEGIN
    guard     the refusal to run on a role that would bypass the policies silently
    check     the checker of a live database (fastapi-tenancy-check DATABASE_URL)
    alembic   the same DDL as Alembic operations (optional extra)

See ``docs/postgres-rls.md`` for the threat model.
"""

from __future__ import annotations

from .check import Finding, check_database
from .guard import UnsafeDatabaseRole
from .policies import (
    FAMILY_SETTINGS,
    GLOBAL_READ_SETTING,
    TENANT_SETTING,
    PolicyCondition,
    ScopeColumn,
    TenantTable,
    apply_rls,
    remove_rls,
    rls_statements,
    tenant_tables,
)
from .setting import (
    RLSSession,
    RowLevelSecurity,
    read_tenant_setting,
    set_tenant,
    tenant_savepoint,
)

__all__ = [
    "FAMILY_SETTINGS",
    "GLOBAL_READ_SETTING",
    "TENANT_SETTING",
    "Finding",
    "PolicyCondition",
    "RLSSession",
    "RowLevelSecurity",
    "ScopeColumn",
    "TenantTable",
    "UnsafeDatabaseRole",
    "apply_rls",
    "check_database",
    "read_tenant_setting",
    "remove_rls",
    "rls_statements",
    "set_tenant",
    "tenant_savepoint",
    "tenant_tables",
]
