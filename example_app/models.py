"""The example app's tables.

Global tables (plans, tenants, users, memberships) are plain SQLModel tables. Tenant data
(projects, tasks, private notes) inherits :class:`~fastapi_tenancy.TenantScoped`, so every ORM
statement on it is scoped to the request's tenant; private notes also carry an owner column
(:func:`~fastapi_tenancy.owner_field`), so a tenant session reads and writes only the notes of
the user asking. These rules are also kept by the database itself, whatever code writes to it:

- a project and a note belong to an existing tenant (their ``tenant_id`` references
  ``tenants.slug``);
- a task's project is in the task's own tenant: the foreign key is the pair
  ``(tenant_id, project_id)`` referencing ``projects (tenant_id, id)``, so no task can point at
  another tenant's project, on SQLite (with foreign keys on), PostgreSQL and MariaDB alike;
- tenant data has tenant-first keys (``__tenant_first_key__``): the tables' primary keys are
  ``(tenant_id, id)`` with a bigint identity ``id``, so every statement of a tenant request names
  its tenant, which keeps it on one shard when the tables are distributed on Citus;
- a note's owner is an existing user: ``private_notes.owner_id`` references ``users.email``,
  the value the kit stamps (the principal is the token's ``sub``, the user's email).

Tenant data is declared in the tenant schema placeholder (``TENANT_SCHEMA``): a tenant named in
``EXAMPLE_SCHEMA_TENANTS`` keeps it in a schema of its own (see :mod:`example_app.app`), every
other tenant in the shared tables.

Every column holding a tenant key (``tenants.slug``, ``memberships.tenant_id`` and the tenant
columns) is a :class:`~fastapi_tenancy.TenantKey`, so MariaDB compares them exactly and accepts
the foreign keys between them. ``users.email`` is one too (254 characters), for the same two
reasons: the owner column compares exactly, and MariaDB accepts a foreign key only between
columns of one collation.

The tables live in a registry of their own, so they never mix with other SQLModel tables in
the same process (the kit's tests, a host application).
"""

# No "from __future__ import annotations": SQLModel reads the real annotations.

from sqlalchemy import BigInteger, ForeignKeyConstraint, MetaData, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from fastapi_tenancy import (
    TENANT_SCHEMA,
    TenantKey,
    TenantScoped,
    identity_key,
    owner_field,
    tenant_unique,
)

__all__ = [
    "ExampleModel",
    "Membership",
    "Plan",
    "PrivateNote",
    "Project",
    "Task",
    "Tenant",
    "User",
    "metadata",
]

EMAIL_LENGTH = 254

example_registry = registry()


class ExampleModel(SQLModel, registry=example_registry):
    """Base of the example app's tables: their own registry and ``MetaData``."""


metadata: MetaData = example_registry.metadata


class Plan(ExampleModel, table=True):
    """A subscription plan: shared reference data, the same for every tenant."""

    __tablename__ = "plans"

    code: str = Field(primary_key=True, max_length=20)
    name: str = Field(max_length=50)
    monthly_price_cents: int = 0
    max_projects: int | None = None


class Tenant(ExampleModel, table=True):
    """A customer organisation; ``slug`` is the tenant key in tokens, hosts and headers."""

    __tablename__ = "tenants"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(sa_type=TenantKey, unique=True, max_length=63)
    name: str = Field(max_length=100)
    active: bool = True
    plan: str = Field(foreign_key="plans.code", max_length=20)


class User(ExampleModel, table=True):
    """A person who logs in; ``is_platform_admin`` puts ``"admin"`` in their token's roles."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    # Exact comparison on every database: private_notes.owner_id references it (see above).
    email: str = Field(sa_type=TenantKey(EMAIL_LENGTH), unique=True, max_length=EMAIL_LENGTH)
    name: str = Field(max_length=100)
    password_hash: str = Field(max_length=255)
    is_platform_admin: bool = False


class Membership(ExampleModel, table=True):
    """A user's role in one tenant; a user may belong to several tenants.

    Not a tenant model: the membership check and ``/me`` read a user's memberships across
    tenants. ``__tenancy_exempt__`` says its ``tenant_id`` column is data, not a scope.
    """

    __tablename__ = "memberships"
    __tenancy_exempt__ = True

    user_id: int = Field(foreign_key="users.id", primary_key=True)
    tenant_id: str = Field(
        sa_type=TenantKey, foreign_key="tenants.slug", primary_key=True, max_length=63
    )
    role: str = Field(default="member", max_length=20)


class Project(ExampleModel, TenantScoped, table=True):
    """A tenant's project; names are unique within a tenant, not across tenants."""

    __tablename__ = "projects"
    # PRIMARY KEY (tenant_id, id), also the target of the tasks' composite foreign key
    __tenant_first_key__ = True
    __table_args__ = (
        tenant_unique("name", name="uq_projects_tenant_name"),
        ForeignKeyConstraint(["tenant_id"], ["tenants.slug"], name="fk_projects_tenant"),
        {"schema": TENANT_SCHEMA},
    )

    id: int | None = identity_key()
    name: str = Field(max_length=100)


class Task(ExampleModel, TenantScoped, table=True):
    """A task in a project of the same tenant (enforced by the composite foreign key)."""

    __tablename__ = "tasks"
    __tenant_first_key__ = True
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "project_id"],
            [f"{TENANT_SCHEMA}.projects.tenant_id", f"{TENANT_SCHEMA}.projects.id"],
            name="fk_tasks_project_same_tenant",
        ),
        {"schema": TENANT_SCHEMA},
    )

    id: int | None = identity_key()
    project_id: int = Field(index=True, sa_type=BigInteger)
    name: str = Field(max_length=200)
    done: bool = False


class PrivateNote(ExampleModel, TenantScoped, table=True):
    """A user's own note inside a tenant: only its owner reads, changes or deletes it.

    ``owner_id`` is the kit's owner column: a tenant session stamps it with the principal (the
    token's ``sub``, the user's email), filters every read by it and refuses writes naming
    another owner. The tenant's admins see every owner's notes through the audited switch
    (``GET /team/notes``).
    """

    __tablename__ = "private_notes"
    __tenant_first_key__ = True
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.slug"], name="fk_private_notes_tenant"),
        ForeignKeyConstraint(["owner_id"], ["users.email"], name="fk_private_notes_owner"),
        {"schema": TENANT_SCHEMA},
    )

    id: int | None = identity_key()
    owner_id: str | None = owner_field(length=EMAIL_LENGTH)
    title: str = Field(max_length=200)
    body: str = Field(default="", sa_type=Text)
