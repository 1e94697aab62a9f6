"""Request and response bodies.

Request bodies forbid unknown fields. Create and update bodies do accept ``tenant_id``: a
client may name its own tenant, and a body naming another tenant reaches the kit, which refuses
the write (403 ``cross_tenant_write``) before anything is sent to the database. Note bodies
accept ``owner_id`` the same way: the client's own email is fine, another is refused by the kit
(403 ``cross_scope_write``).

Every string a client sends passes :data:`STORABLE_TEXT`: NUL characters and unpaired
surrogates (JSON ``"\\u0000"``, ``"\\ud800"``) are refused with 422 here, since PostgreSQL
refuses the first and the second cannot even be encoded as UTF-8.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints
from pydantic_core import PydanticCustomError

from .lifecycle import DEFAULT_PLAN, Offboarding
from .models import Plan, PrivateNote, Project, Task, Tenant

__all__ = [
    "STORABLE_TEXT",
    "LoginRequest",
    "MeOut",
    "MembershipOut",
    "NoteCreate",
    "NoteOut",
    "NoteUpdate",
    "OffboardOut",
    "PlanOut",
    "ProjectCreate",
    "ProjectOut",
    "ProjectUpdate",
    "SignupOut",
    "SignupRequest",
    "StatsOut",
    "TaskCreate",
    "TaskOut",
    "TenantOut",
    "TokenOut",
]


def _storable(value: str) -> str:
    if "\x00" in value or any("\ud800" <= char <= "\udfff" for char in value):
        raise PydanticCustomError(
            "unstorable_text", "NUL characters and unpaired surrogates are not allowed"
        )
    return value


STORABLE_TEXT = AfterValidator(_storable)
"""The check every client-sent string passes: no NUL character, no unpaired surrogate. It
follows the field's ``StringConstraints`` in its ``Annotated``, so it sees the stripped text."""

ProjectName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), STORABLE_TEXT
]
TaskName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), STORABLE_TEXT
]
NoteTitle = TaskName
NoteBody = Annotated[str, StringConstraints(max_length=10_000), STORABLE_TEXT]
TenantKey = Annotated[str, StringConstraints(min_length=1, max_length=63), STORABLE_TEXT]
Owner = Annotated[str, StringConstraints(min_length=1, max_length=254), STORABLE_TEXT]
TenantName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), STORABLE_TEXT
]
PersonName = TenantName

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _email(value: str) -> str:
    if _EMAIL.fullmatch(value) is None:
        raise PydanticCustomError("email", "an email address like ada@example.test is needed")
    return value.lower()


NewEmail = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254),
    STORABLE_TEXT,
    AfterValidator(_email),
]
"""A new account's email: one ``@``, a dot in the domain, stored in lower case (logins
lower-case the email they are given)."""
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=1024), STORABLE_TEXT]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Body):
    """``POST /auth/login``; ``tenant`` optionally pins one of the user's tenants in the token."""

    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=254), STORABLE_TEXT]
    password: Annotated[str, StringConstraints(max_length=1024), STORABLE_TEXT]
    tenant: TenantKey | None = None


class TokenOut(BaseModel):
    """The login answer: an OAuth2-style bearer token."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)


class SignupRequest(_Body):
    """``POST /signup``: a new tenant and its first user, who becomes its ``owner``.

    ``tenant`` is the new tenant's slug, held to the kit's key pattern (lower-case letters,
    digits, ``-`` and ``_``, up to 63; else ``400 invalid_tenant_key``); ``plan`` one of
    ``GET /plans`` (default ``free``).
    """

    tenant: Annotated[str, StringConstraints(max_length=255), STORABLE_TEXT]
    name: TenantName
    plan: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20), STORABLE_TEXT] = (
        DEFAULT_PLAN
    )
    email: NewEmail
    user_name: PersonName
    password: NewPassword


class TenantOut(BaseModel):
    """A tenant as the API shows it."""

    slug: str
    name: str
    plan: str
    active: bool

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(slug=tenant.slug, name=tenant.name, plan=tenant.plan, active=tenant.active)


class SignupOut(TokenOut):
    """The sign-up answer: the new tenant, the new user's email and a token for them that
    names the tenant (so ``/projects`` works at once)."""

    tenant: TenantOut
    email: str


class OffboardOut(BaseModel):
    """``DELETE /admin/tenants/{slug}``: rows deleted per table (with ``dry_run``, rows that
    would be), memberships first; ``total`` leaves out the tenant's own row."""

    tenant: str
    dry_run: bool
    rows: dict[str, int]
    total: int

    @classmethod
    def of(cls, report: Offboarding) -> OffboardOut:
        return cls(
            tenant=report.tenant, dry_run=report.dry_run, rows=report.rows, total=report.total
        )


class ProjectCreate(_Body):
    """``POST /projects``."""

    name: ProjectName
    tenant_id: TenantKey | None = None


class ProjectUpdate(_Body):
    """``PATCH /projects/{id}``: the fields to change."""

    name: ProjectName | None = None
    tenant_id: TenantKey | None = None


class ProjectOut(BaseModel):
    """A project as the API shows it."""

    id: int
    name: str
    tenant_id: str

    @classmethod
    def of(cls, project: Project) -> ProjectOut:
        return cls(id=project.id or 0, name=project.name, tenant_id=project.tenant_id)


class TaskCreate(_Body):
    """``POST /projects/{id}/tasks``."""

    name: TaskName
    done: bool = False
    tenant_id: TenantKey | None = None


class TaskOut(BaseModel):
    """A task as the API shows it."""

    id: int
    name: str
    tenant_id: str
    project_id: int
    done: bool

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls(
            id=task.id or 0,
            name=task.name,
            tenant_id=task.tenant_id,
            project_id=task.project_id,
            done=task.done,
        )


class NoteCreate(_Body):
    """``POST /notes``: the note is the caller's (``owner_id``, if given, must be their email)."""

    title: NoteTitle
    body: NoteBody = ""
    owner_id: Owner | None = None
    tenant_id: TenantKey | None = None


class NoteUpdate(_Body):
    """``PATCH /notes/{id}``: the fields to change; a note never changes owner or tenant."""

    title: NoteTitle | None = None
    body: NoteBody | None = None
    owner_id: Owner | None = None
    tenant_id: TenantKey | None = None


class NoteOut(BaseModel):
    """A private note as the API shows it; ``owner_id`` is its author's email."""

    id: int
    title: str
    body: str
    owner_id: str
    tenant_id: str

    @classmethod
    def of(cls, note: PrivateNote) -> NoteOut:
        return cls(
            id=note.id or 0,
            title=note.title,
            body=note.body,
            owner_id=note.owner_id or "",
            tenant_id=note.tenant_id,
        )


class StatsOut(BaseModel):
    """The bound tenant's counts."""

    projects: int
    tasks: int


class PlanOut(BaseModel):
    """A subscription plan (shared reference data)."""

    code: str
    name: str
    monthly_price_cents: int
    max_projects: int | None

    @classmethod
    def of(cls, plan: Plan) -> PlanOut:
        return cls(
            code=plan.code,
            name=plan.name,
            monthly_price_cents=plan.monthly_price_cents,
            max_projects=plan.max_projects,
        )


class MembershipOut(BaseModel):
    """One of the user's tenants and the user's role there."""

    tenant: str
    name: str
    role: str


class MeOut(BaseModel):
    """``GET /me``: who is asking, in which tenant, with which roles."""

    email: str
    name: str
    roles: list[str]
    tenant: str | None
    tenant_source: str | None
    memberships: list[MembershipOut]
