"""A creation, a purge, an export and import, and a rename through row-level security: as the
application's ordinary role, with both walls on, each reaches only the tenant's rows, and the
owner's dump shows nothing else moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from purge_models import (
    TABLES,
    PurgeCatalog,
    PurgeNote,
    PurgeOrg,
    PurgeProject,
    PurgeTask,
    dump,
    seed,
    without,
)
from rls_support import AppRole
from sqlalchemy import Engine
from sqlmodel import Session

from fastapi_tenancy import (
    HeaderResolver,
    Tenancy,
    TenancyMisuse,
    TenantLimitReached,
    TenantRegistry,
)
from fastapi_tenancy.postgres import apply_rls

pytestmark = pytest.mark.backends("postgres")


@pytest.fixture
def tenancy(owner: Engine, app_role: AppRole, create_tables: Any) -> Tenancy:
    """The seeded tables under row-level security, and a tenancy on the app's ordinary role."""
    create_tables(owner, *TABLES)
    protected = apply_rls(
        owner, [m.__table__ for m in (PurgeProject, PurgeTask, PurgeCatalog, PurgeNote)]
    )
    assert {t.name for t in protected} == {
        "purge_project",
        "purge_task",
        "purge_catalog",
        "purge_note",
    }
    seed(owner)
    return Tenancy(
        app_role.engine(),
        resolvers=[HeaderResolver()],
        rls=True,
        registry=TenantRegistry(PurgeOrg, key="slug", active="active"),
    )


def test_a_purge_under_row_level_security_reaches_only_the_tenants_rows(
    owner: Engine, tenancy: Tenancy
) -> None:
    before = dump(owner)
    tenancy.tenants.suspend("acme")
    suspended = dump(owner)
    report = tenancy.tenants.purge("acme", batch_size=5, resumable=True)
    assert report.rows == {
        "purge_task": 12,
        "purge_catalog": 1,
        "purge_note": 2,
        "purge_project": 4,
    }
    assert dump(owner) == without(suspended, "acme")
    assert without(before, "acme") == without(suspended, "acme")


def test_export_and_import_under_row_level_security_copy_only_the_tenants_rows(
    owner: Engine, tenancy: Tenancy, tmp_path: Path
) -> None:
    before = dump(owner)
    exported = tenancy.tenants.export("acme", tmp_path / "acme")
    assert exported.rows == {
        "purge_catalog": 1,
        "purge_note": 2,
        "purge_project": 4,
        "purge_task": 12,
    }
    tenancy.tenants.import_(tmp_path / "acme", "newco")
    after = dump(owner)
    assert without(after, "newco") == before
    copied = [row for rows in after.values() for row in rows if "newco" in row]
    assert len(copied) == 20  # 19 rows and the record


def test_a_rename_refused_by_row_level_security_changes_nothing(
    owner: Engine, tenancy: Tenancy
) -> None:
    """The policies' WITH CHECK refuses rows moving to another tenant, as the app's role."""
    tenancy.tenants.suspend("acme")
    before = dump(owner)
    with pytest.raises(TenancyMisuse, match="renaming tenant 'acme' was refused"):
        tenancy.tenants.rename("acme", "acme-corp")
    assert dump(owner) == before


def test_a_creation_under_row_level_security_seeds_only_the_new_tenant(
    owner: Engine, app_role: AppRole, tenancy: Tenancy
) -> None:
    def seed_project(record: PurgeOrg, session: Session) -> None:
        session.add(PurgeProject(name=f"welcome {record.slug}"))

    seeding = Tenancy(
        app_role.engine(),
        resolvers=[HeaderResolver()],
        rls=True,
        registry=TenantRegistry(PurgeOrg, max_tenants=4, after_create=seed_project),
    )
    before = dump(owner)
    seeding.tenants.create("newco")
    with pytest.raises(TenantLimitReached):
        seeding.tenants.create("onemore")
    after = dump(owner)
    assert without(after, "newco") == before
    assert [row[2] for row in after["purge_project"] if row[0] == "newco"] == ["welcome newco"]
