"""The life of a tenant in the registry: create through both hooks, limits, suspend, resume.

On every database, with sync and async engines: each operation is checked over HTTP through the
app's own lookup (a cached answer must not outlive the change), and in the tables.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from http_app import Project, build_app, client, tenant_header
from purge_models import call_tenants
from sqlalchemy import Engine, func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, Session, SQLModel, select

from fastapi_tenancy import (
    HeaderResolver,
    InvalidTenantKey,
    TenancyError,
    TenancyMisuse,
    TenantExists,
    TenantLimitReached,
    TenantNotFound,
    TenantRecord,
    TenantRegistry,
    get_current_tenant,
)


class Organization(SQLModel, table=True):
    """The app's own tenants table."""

    __tablename__ = "reg_organization"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, max_length=63)
    name: str = Field(max_length=100)
    plan: str = Field(default="free", max_length=20)
    active: bool = True
    created_at: datetime | None = None
    suspended_at: datetime | None = None


class Refused(TenancyError):
    code = "signup_refused"
    status_code = 422
    default_detail = "This tenant may not sign up."


def seed_first_project(record: Any, session: Any) -> Any:
    """The after-create hook: a first project, stamped by the session with the new tenant,
    which is bound while the hook runs (a job queued here would carry it)."""
    assert get_current_tenant() == record.slug
    session.add(Project(name=f"Welcome to {record.name}"))
    return session.flush()  # a coroutine on an AsyncSession: the async registry awaits it


def registry(**options: Any) -> TenantRegistry[Organization]:
    options.setdefault("after_create", seed_first_project)
    return TenantRegistry(
        Organization,
        key="slug",
        active="active",
        created_at="created_at",
        suspended_at="suspended_at",
        **options,
    )


class Lifecycle:
    """The app and its tenancy; ``call`` runs a ``tenancy.tenants`` method, sync or async."""

    def __init__(self, engine: Engine, any_engine: Engine | AsyncEngine, **options: Any):
        self.engine = engine
        self.app, self.tenancy = build_app(
            any_engine, resolvers=[HeaderResolver()], registry=registry(**options)
        )
        self.client: TestClient = client(self.app).__enter__()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return call_tenants(self.tenancy, self.client, method, *args, **kwargs)

    def status(self, tenant: str) -> int:
        return int(self.client.get("/whoami", headers=tenant_header(tenant)).status_code)

    def rows(self) -> list[tuple[str, bool]]:
        with Session(self.engine) as session:
            found = session.exec(select(Organization).order_by(Organization.slug)).all()
            return [(o.slug, o.active) for o in found]

    def projects(self) -> list[tuple[str, str]]:
        with Session(self.engine) as session:
            found = session.exec(select(Project.tenant_id, Project.name)).all()
            return sorted((str(tenant), name) for tenant, name in found)


@pytest.fixture
def make_lifecycle(
    engine: Engine, any_engine: Engine | AsyncEngine, create_tables: Any
) -> Iterator[Callable[..., Lifecycle]]:
    create_tables(engine, Organization, Project)
    made: list[Lifecycle] = []

    def make(**options: Any) -> Lifecycle:
        made.append(Lifecycle(engine, any_engine, **options))
        return made[-1]

    yield make
    for lifecycle in made:
        lifecycle.client.__exit__(None, None, None)


def test_create_writes_the_tenant_and_its_seed_rows_in_one_go(
    make_lifecycle: Callable[..., Lifecycle],
) -> None:
    life = make_lifecycle()
    assert life.status("hooli") == 404  # asked before it exists: a cached miss ...
    record = life.call("create", "hooli", name="Hooli")
    assert life.status("hooli") == 200  # ... forgotten at once
    assert (record.slug, record.name, record.active, record.plan) == (
        "hooli",
        "Hooli",
        True,
        "free",
    )
    assert isinstance(record.created_at, datetime)
    assert life.rows() == [("hooli", True)]
    assert life.projects() == [("hooli", "Welcome to Hooli")]


def test_before_create_may_fill_in_fields_or_refuse(
    make_lifecycle: Callable[..., Lifecycle],
) -> None:
    def before(key: Any, fields: dict[str, Any]) -> None:
        if key.startswith("spam"):
            raise Refused()
        fields.setdefault("plan", "trial")

    life = make_lifecycle(before_create=before)
    assert life.call("create", "acme", name="Acme").plan == "trial"
    with pytest.raises(Refused):
        life.call("create", "spammer", name="Spam")
    assert life.rows() == [("acme", True)]
    assert life.projects() == [("acme", "Welcome to Acme")]


def test_a_failing_after_create_creates_nothing(make_lifecycle: Callable[..., Lifecycle]) -> None:
    def broken(record: Any, session: Any) -> None:
        session.add(Project(name="half-seeded"))
        raise Refused()

    life = make_lifecycle(after_create=broken)
    with pytest.raises(Refused):
        life.call("create", "acme", name="Acme")
    assert life.rows() == []
    assert life.projects() == []
    assert life.status("acme") == 404


def test_the_limit_counts_every_tenant_and_refuses_the_next(
    make_lifecycle: Callable[..., Lifecycle],
) -> None:
    life = make_lifecycle(max_tenants=2)
    life.call("create", "acme", name="Acme")
    life.call("create", "globex", name="Globex")
    life.call("suspend", "globex")  # suspended tenants still count
    with pytest.raises(TenantLimitReached) as refused:
        life.call("create", "initech", name="Initech")
    assert (refused.value.status_code, refused.value.code) == (403, "tenant_limit_reached")
    assert life.rows() == [("acme", True), ("globex", False)]


def test_a_taken_key_is_one_clear_error(make_lifecycle: Callable[..., Lifecycle]) -> None:
    life = make_lifecycle()
    life.call("create", "acme", name="Acme")
    with pytest.raises(TenantExists) as taken:
        life.call("create", "acme", name="Acme again")
    assert (taken.value.status_code, taken.value.code) == (409, "tenant_exists")
    assert life.rows() == [("acme", True)]
    assert life.projects() == [("acme", "Welcome to Acme")]


def test_two_creates_racing_for_one_key_make_one_tenant(
    make_lifecycle: Callable[..., Lifecycle],
) -> None:
    life = make_lifecycle()
    if life.tenancy.is_async:
        tenants: Any = life.tenancy.async_tenants

        async def race() -> list[Any]:
            return list(
                await asyncio.gather(
                    tenants.create("acme", name="One"),
                    tenants.create("acme", name="Two"),
                    return_exceptions=True,
                )
            )

        results = life.client.portal.call(race)  # type: ignore[union-attr]
    else:
        tenants = life.tenancy.tenants
        results = []
        barrier = threading.Barrier(2)

        def create(name: str) -> None:
            barrier.wait()
            try:
                results.append(tenants.create("acme", name=name))
            except Exception as error:
                results.append(error)

        threads = [threading.Thread(target=create, args=(n,)) for n in ("One", "Two")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(results) == 2
    assert [type(e) for e in errors] == [TenantExists], errors
    assert life.rows() == [("acme", True)]
    assert len(life.projects()) == 1


def test_suspend_and_resume_take_effect_at_once(make_lifecycle: Callable[..., Lifecycle]) -> None:
    life = make_lifecycle()
    life.call("create", "acme", name="Acme")
    assert life.status("acme") == 200
    suspended = life.call("suspend", "acme")
    assert suspended.active is False
    assert isinstance(suspended.suspended_at, datetime)
    assert life.status("acme") == 403
    resumed = life.call("resume", "acme")
    assert (resumed.active, resumed.suspended_at) == (True, None)
    assert life.status("acme") == 200
    assert life.call("get", "acme").active is True


def test_an_unknown_or_malformed_key_is_an_error_never_an_empty_success(
    make_lifecycle: Callable[..., Lifecycle],
) -> None:
    life = make_lifecycle()
    for method in ("get", "suspend", "resume"):
        with pytest.raises(TenantNotFound):
            life.call(method, "nobody")
        with pytest.raises(InvalidTenantKey):
            life.call(method, "Not A Key")
    with pytest.raises(InvalidTenantKey):
        life.call("create", "Not A Key", name="x")
    assert life.rows() == []


def test_the_registry_is_the_lookup_and_tenants_needs_one(engine: Engine) -> None:
    _app, tenancy = build_app(engine, resolvers=[HeaderResolver()], registry=registry())
    assert tenancy.lookup is not None
    _, bare = build_app(engine, resolvers=[HeaderResolver()])
    with pytest.raises(TenancyMisuse, match="registry"):
        bare.tenants  # noqa: B018

    async def hook(key: Any, fields: dict[str, Any]) -> None:
        return None

    _, sync_with_async_hook = build_app(
        engine, resolvers=[HeaderResolver()], registry=registry(before_create=hook)
    )
    with pytest.raises(TenancyMisuse, match="must be sync"):
        sync_with_async_hook.tenants  # noqa: B018


def test_created_tenants_are_counted_in_the_table(make_lifecycle: Callable[..., Lifecycle]) -> None:
    life = make_lifecycle()
    for slug in ("acme", "globex", "initech"):
        life.call("create", slug, name=slug.title())
    with Session(life.engine) as session:
        assert session.exec(select(func.count()).select_from(Organization)).one() == 3
    assert life.projects() == [
        ("acme", "Welcome to Acme"),
        ("globex", "Welcome to Globex"),
        ("initech", "Welcome to Initech"),
    ]


class AdoptedOrganization(TenantRecord, table=True):
    """A tenants table adopted from the kit, with a column of the app's own."""

    __tablename__ = "reg_adopted_organization"

    name: str = Field(max_length=100)


def test_an_adopted_tenant_record_is_read_and_stamped_with_no_column_named(
    engine: Engine, any_engine: Engine | AsyncEngine, create_tables: Any
) -> None:
    create_tables(engine, AdoptedOrganization)
    adopted = TenantRegistry(AdoptedOrganization)
    assert (adopted.key, adopted.active) == ("slug", "active")
    assert (adopted.created_at, adopted.suspended_at) == ("created_at", "suspended_at")
    app, tenancy = build_app(any_engine, resolvers=[HeaderResolver()], registry=adopted)
    with client(app) as http:
        record = call_tenants(tenancy, http, "create", "hooli", name="Hooli")
        assert record.created_at is not None
        assert record.suspended_at is None
        assert http.get("/whoami", headers=tenant_header("hooli")).status_code == 200
        suspended = call_tenants(tenancy, http, "suspend", "hooli")
        assert suspended.suspended_at is not None
        assert not suspended.active
        r = http.get("/whoami", headers=tenant_header("hooli"))
        assert (r.status_code, r.json()["code"]) == (403, "tenant_inactive"), r.text
