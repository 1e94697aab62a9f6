"""Create the tables and the demo data: three tenants, their users, projects, tasks and notes.

:func:`init_database` seeds an empty database only, so restarting the app keeps your data;
``reset=True`` (``python -m example_app --reset``) drops the app's tables and seeds afresh.
Tenant data is written the way a script or job would write it with the kit: inside
``with_tenant(...)``, through ``tenancy.session()``, which stamps every new row with the tenant.
A script has no principal, so private notes are written through a session that lifts the owner
scope (``tenancy.session(lift=["owner"])``, audited) and names each note's owner itself.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, select

from fastapi_tenancy import Tenancy, with_tenant
from fastapi_tenancy.isolation.storage import create_storage, drop_storage

from .auth import PasswordHasher
from .citus import distribute_if_citus
from .models import Membership, Plan, PrivateNote, Project, Task, Tenant, User, metadata
from .placement import PLACED_TABLES, isolation_for

__all__ = ["NOTES", "SEED_USERS", "SeedUser", "init_database", "seed"]


@dataclass(frozen=True, slots=True)
class SeedUser:
    """A demo login: email, password, and the user's tenants with a role in each."""

    email: str
    password: str
    name: str
    tenants: tuple[tuple[str, str], ...] = ()
    platform_admin: bool = False


# code, name, monthly price in cents, project limit (None: unlimited)
PLANS = (
    ("free", "Free", 0, 3),
    ("team", "Team", 2900, 50),
    ("enterprise", "Enterprise", 49900, None),
)

TENANTS = (
    ("acme", "Acme Corporation", "team"),
    ("globex", "Globex Corporation", "enterprise"),
    ("initech", "Initech", "free"),
)

SEED_USERS: Sequence[SeedUser] = (
    SeedUser("alice@acme.test", "alice-pass", "Alice Archer", (("acme", "owner"),)),
    SeedUser("bob@globex.test", "bob-pass", "Bob Baker", (("globex", "owner"),)),
    SeedUser(
        "carol@example.test",
        "carol-pass",
        "Carol Chen",
        (("acme", "member"), ("globex", "member")),
    ),
    SeedUser("dave@initech.test", "dave-pass", "Dave Dunn", (("initech", "owner"),)),
    SeedUser("root@example.test", "root-pass", "Root Admin", platform_admin=True),
)
"""The demo logins, printed by ``--help`` and the startup banner, and in docs/example-app.md."""

# Projects and their tasks, per tenant. "Onboarding" exists in two tenants on purpose:
# project names are unique per tenant, not globally.
PROJECTS: dict[str, dict[str, tuple[str, ...]]] = {
    "acme": {
        "Rocket skates": ("Order wheels", "Test on the mesa", "Write the safety sheet"),
        "Onboarding": ("Laptop for Carol", "Badge photos"),
        "Catalogue 2025": ("Pick the cover",),
    },
    "globex": {
        "Onboarding": ("Hammock for Bob",),
        "Volcano lair": ("Pour the foundations", "Hire henchmen"),
    },
    "initech": {
        "TPS reports": ("New cover sheets", "Memo about the memo"),
    },
}


# Private notes, per tenant: (owner, title, body). Carol has notes in both her tenants, so the
# same email sees different notes in each.
NOTES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "acme": (
        ("alice@acme.test", "Board meeting", "Ask about the rocket skates budget."),
        ("alice@acme.test", "Carol's review", "Due at the end of the quarter."),
        ("carol@example.test", "Acme passwords", "Never write them here."),
    ),
    "globex": (
        ("bob@globex.test", "Lair permits", "The volcano needs three more."),
        ("carol@example.test", "Globex onboarding", "Hammock size: large."),
    ),
    "initech": (("dave@initech.test", "Stapler", "Red. Swingline. Mine."),),
}


def _id(row: User | Project) -> int:
    if row.id is None:  # pragma: no cover - flushed rows have their key
        raise RuntimeError(f"{type(row).__name__} has no id after flush")
    return row.id


def seed(engine: Engine, passwords: PasswordHasher, tenancy: Tenancy | None = None) -> None:
    """Write the demo data into empty tables; each tenant's through ``tenancy``, which places
    it (the shared tables by default)."""
    with Session(engine) as session:
        session.add_all(
            [
                Plan(code=code, name=name, monthly_price_cents=price, max_projects=limit)
                for code, name, price, limit in PLANS
            ]
        )
        session.add_all(
            [Tenant(slug=slug, name=name, plan=plan, active=True) for slug, name, plan in TENANTS]
        )
        session.flush()
        for spec in SEED_USERS:
            user = User(
                email=spec.email,
                name=spec.name,
                password_hash=passwords.hash(spec.password),
                is_platform_admin=spec.platform_admin,
            )
            session.add(user)
            session.flush()
            session.add_all(
                [Membership(user_id=_id(user), tenant_id=t, role=role) for t, role in spec.tenants]
            )
        session.commit()

    tenancy = tenancy or Tenancy(engine, resolvers=[], isolation=isolation_for(()))
    for tenant, projects in PROJECTS.items():
        with with_tenant(tenant), tenancy.session() as session:
            for name, tasks in projects.items():
                project = Project(name=name)
                session.add(project)
                session.flush()
                session.add_all([Task(project_id=_id(project), name=task) for task in tasks])
            session.commit()
    for tenant, notes in NOTES.items():
        with with_tenant(tenant), tenancy.session(lift=["owner"]) as session:
            session.add_all(
                [
                    PrivateNote(owner_id=owner, title=title, body=body)
                    for owner, title, body in notes
                ]
            )
            session.commit()


def init_database(
    engine: Engine,
    passwords: PasswordHasher | None = None,
    *,
    reset: bool = False,
    schema_tenants: Collection[str] = (),
) -> bool:
    """Create the tables, and the schema of each of ``schema_tenants`` with its tables; seed
    them if they are empty (or if ``reset``). True if it seeded."""
    passwords = passwords or PasswordHasher()
    tenancy = Tenancy(engine, resolvers=[], isolation=isolation_for(schema_tenants))
    places = [tenancy.placement_of(slug) for slug in schema_tenants]
    if reset:
        for place in places:
            if place is not None:
                drop_storage(engine, place)
        metadata.drop_all(engine)
    metadata.create_all(engine)  # the engine translates the placeholder: the shared tables
    for place in places:
        if place is not None:
            create_storage(engine, place, PLACED_TABLES)
    distribute_if_citus(engine)  # on a Citus coordinator: before any row is written
    if not reset:
        with Session(engine) as session:
            if session.exec(select(Tenant.id).limit(1)).first() is not None:
                return False
    seed(engine, passwords, tenancy)
    return True
