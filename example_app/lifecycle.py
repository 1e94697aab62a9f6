"""A tenant's life in the example app: sign-up through the registry's hooks, and offboarding.

Sign-up (``POST /signup``) is one call to the kit, ``tenancy.tenants.create(slug, name=...,
plan=...)``, which runs in one transaction:

1. the limit (``EXAMPLE_MAX_TENANTS``): ``403 tenant_limit_reached``;
2. :meth:`SignupHooks.before_create`: the plan must be one of ``GET /plans``
   (``422 unknown_plan``);
3. the tenant's row: a taken slug is ``409 tenant_exists``, a slug outside the key pattern
   ``400 invalid_tenant_key``;
4. :meth:`SignupHooks.after_create`, with the new tenant bound: the founder's account and
   their ``owner`` membership of the new tenant. An email that has an account already is
   ``409 email_taken``: the sign-up creates nothing, and never touches that account (adding an
   existing user to a new tenant needs their password, and is a platform admin's job here).

Any refusal rolls all of it back: no tenant, no user, no membership is left. The founder's
details reach ``after_create`` through a context variable that :func:`sign_up` sets for the one
call; a tenant created another way (a script calling ``tenancy.tenants.create``) gets no user.

Offboarding (``DELETE /admin/tenants/{slug}``, :func:`offboard`) suspends the tenant, then has
the kit purge it, in one transaction: its projects and tasks, then
:meth:`SignupHooks.before_purge` removes its memberships (they reference ``tenants.slug`` but
are not tenant data: the membership check reads them across tenants, so the purge does not
know them), then the tenant's row. Users are kept: an account may belong to other tenants, and
is the person's, not the tenant's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, delete, func
from sqlmodel import Session, col, select

from fastapi_tenancy import AlreadyExists, TenantRegistry
from fastapi_tenancy.tenants import Tenants

from .errors import EmailTaken, UnknownPlan
from .models import Membership, Plan, Tenant, User

__all__ = [
    "DEFAULT_PLAN",
    "FOUNDER_ROLE",
    "Founder",
    "Offboarding",
    "SignupHooks",
    "offboard",
    "sign_up",
    "tenant_registry",
]

DEFAULT_PLAN = "free"
FOUNDER_ROLE = "owner"


@dataclass(frozen=True, slots=True)
class Founder:
    """The first user of a tenant being signed up; the password is hashed already."""

    email: str
    name: str
    password_hash: str


_founder: ContextVar[Founder | None] = ContextVar("example_app_founder", default=None)


class SignupHooks:
    """The registry's ``before_create`` and ``after_create`` (see the module's docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def before_create(self, key: str, fields: dict[str, Any]) -> None:
        """Refuse a plan that does not exist (the default plan when none is given)."""
        plan = fields.setdefault("plan", DEFAULT_PLAN)
        # The hook has no session of its own: plans are shared reference data, read apart.
        with Session(self.engine) as session:
            if session.get(Plan, plan) is None:
                raise UnknownPlan()

    def after_create(self, record: Tenant, session: Session) -> None:
        """Create the founder's account and their ``owner`` membership of the new tenant, in
        the creating transaction; ``409 email_taken`` (and nothing created) if the email has
        an account."""
        founder = _founder.get()
        if founder is None:
            return
        if email_registered(session, founder.email):
            raise EmailTaken()
        user = User(email=founder.email, name=founder.name, password_hash=founder.password_hash)
        session.add(user)
        try:
            session.flush()  # two sign-ups with one email at once: the unique email picks one
        except AlreadyExists as error:
            raise EmailTaken() from error
        if user.id is None:  # pragma: no cover - a flushed row has its key
            raise RuntimeError("the new user has no id after flush")
        session.add(Membership(user_id=user.id, tenant_id=record.slug, role=FOUNDER_ROLE))

    def before_purge(self, record: Tenant, session: Session) -> None:
        """Remove the tenant's memberships, in the purge's transaction, just before its row."""
        session.exec(delete(Membership).where(col(Membership.tenant_id) == record.slug))


def email_registered(session: Session, email: str) -> bool:
    """Whether an account has ``email`` (emails are stored in lower case)."""
    return session.exec(select(User.id).where(col(User.email) == email)).first() is not None


def tenant_registry(engine: Engine, *, max_tenants: int | None = None) -> TenantRegistry[Tenant]:
    """The app's tenants table and its rules of creation, for ``Tenancy(registry=...)``."""
    hooks = SignupHooks(engine)
    return TenantRegistry(
        Tenant,
        key="slug",
        active="active",
        max_tenants=max_tenants,
        before_create=hooks.before_create,
        after_create=hooks.after_create,
        before_purge=hooks.before_purge,
    )


@contextmanager
def _founding(founder: Founder) -> Iterator[None]:
    token = _founder.set(founder)
    try:
        yield
    finally:
        _founder.reset(token)


def sign_up(tenants: Tenants[Any], slug: str, *, name: str, plan: str, founder: Founder) -> Tenant:
    """Create tenant ``slug`` with ``founder`` as its owner, all or nothing (blocking: call it
    from a worker thread in async code)."""
    with _founding(founder):
        tenant: Tenant = tenants.create(slug, name=name, plan=plan)
    return tenant


@dataclass
class Offboarding:
    """What an offboarding deleted (or, as a dry run, would delete): rows per table, the
    memberships first, then what the kit's purge counted; the tenant's own row aside."""

    tenant: str
    dry_run: bool
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def offboard(
    tenants: Tenants[Any], session: Session, slug: str, *, dry_run: bool = False
) -> Offboarding:
    """Delete tenant ``slug``: suspend it, then purge it (its rows, its memberships and its
    record, all or nothing); ``TenantNotFound`` for an unknown slug, ``TenantActive`` if an
    admin resumed it meanwhile. ``session`` (the admin's) counts the memberships.

    ``dry_run`` counts and changes nothing, whether the tenant is active or not.
    """
    record: Tenant = tenants.get(slug) if dry_run else tenants.suspend(slug)
    members = _count_memberships(session, record.slug)
    report = tenants.purge(record.slug, dry_run=dry_run)
    return Offboarding(record.slug, dry_run, {"memberships": members, **report.rows})


def _count_memberships(session: Session, slug: str) -> int:
    statement = (
        select(func.count()).select_from(Membership).where(col(Membership.tenant_id) == slug)
    )
    return session.exec(statement).one()
