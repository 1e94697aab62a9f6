"""A purge through row-level security: as the application's ordinary role, with both walls on,
the purge removes the tenant's rows and its record, and the owner's dump shows nothing else
moved."""

from __future__ import annotations

from typing import Any

import pytest
from purge_models import (
    TABLES,
    PurgeCatalog,
    PurgeOrg,
    PurgeProject,
    PurgeTask,
    dump,
    seed,
    without,
)
from rls_support import AppRole
from sqlalchemy import Engine

from fastapi_tenancy import HeaderResolver, Tenancy, TenantRegistry
from fastapi_tenancy.postgres import apply_rls

pytestmark = pytest.mark.backends("postgres")


def test_a_purge_under_row_level_security_reaches_only_the_tenants_rows(
    owner: Engine, app_role: AppRole, create_tables: Any
) -> None:
    create_tables(owner, *TABLES)
    protected = apply_rls(owner, [m.__table__ for m in (PurgeProject, PurgeTask, PurgeCatalog)])
    assert {t.name for t in protected} == {"purge_project", "purge_task", "purge_catalog"}
    seed(owner)
    before = dump(owner)
    tenancy = Tenancy(
        app_role.engine(),
        resolvers=[HeaderResolver()],
        rls=True,
        registry=TenantRegistry(PurgeOrg, key="slug", active="active"),
    )
    tenancy.tenants.suspend("acme")
    suspended = dump(owner)
    report = tenancy.tenants.purge("acme", batch_size=5, resumable=True)
    assert report.rows == {"purge_task": 12, "purge_catalog": 1, "purge_project": 4}
    assert dump(owner) == without(suspended, "acme")
    assert without(before, "acme") == without(suspended, "acme")
