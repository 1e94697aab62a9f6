"""Shared rows: a model declared ``__shared_rows__`` holds rows with a NULL tenant (vendor
defaults) that every tenant reads beside its own, and that no tenant may change.

The world: a shared category ``default``, acme's ``acme-cat`` and globex's ``globex-cat``.
Every attack is a tenant trying to read another tenant's row through the shared-rows filter, or
to write a shared row (change it, delete it, make one, disguise its own row as one).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from models import (
    ACME,
    GLOBEX,
    Category,
    Product,
    Project,
    snapshot,
)
from sqlalchemy import bindparam, delete, insert, or_, select, update

from fastapi_tenancy import (
    Access,
    CrossTenantWrite,
    SessionScope,
    UnscopedStatement,
    mutable_tenant,
    with_tenant,
    without_tenant,
)
from fastapi_tenancy.wall import TENANT_PARAM
from fastapi_tenancy.wall.proof import prove


@dataclass(frozen=True)
class Categories:
    shared: int
    acme: int
    globex: int


@pytest.fixture
def categories(tenancy, create_tables) -> Categories:
    create_tables(tenancy.engine, Category, Product)
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        rows = [
            Category(name="default"),  # no tenant: shared
            Category(name="acme-cat", tenant_id=ACME),
            Category(name="globex-cat", tenant_id=GLOBEX),
        ]
        for row in rows:
            session.add(row)
            session.flush()
        session.commit()
        return Categories(*(row.id for row in rows))  # type: ignore[arg-type]


def names(session, statement=None) -> list[str]:
    statement = statement if statement is not None else select(Category.name)
    return sorted(session.execute(statement).scalars())


def test_a_tenant_reads_its_own_rows_and_the_shared_ones(session_for, categories):
    with session_for(ACME) as session:
        assert names(session) == ["acme-cat", "default"]
        assert session.get(Category, categories.shared).name == "default"
        assert session.get(Category, categories.globex) is None
    with session_for(GLOBEX) as session:
        assert names(session) == ["default", "globex-cat"]


def test_shared_rows_reach_joins_subqueries_and_relationships_unchanged(session_for, categories):
    with session_for(ACME) as session:
        session.add_all(
            [
                Product(name="widget", category_id=categories.shared),
                Product(name="gadget", category_id=categories.acme),
            ]
        )
        session.commit()
        joined = session.execute(
            select(Product.name, Category.name).join(Category).order_by(Product.name)
        ).all()
        inner = select(Category.id).where(Category.name.in_(["globex-cat", "default"]))
        counted = session.execute(select(Product.name).where(Product.category_id.in_(inner)))
        loaded = {p.name: p.category.name for p in session.execute(select(Product)).scalars()}

    assert joined == [("gadget", "acme-cat"), ("widget", "default")]
    assert counted.scalars().all() == ["widget"]
    assert loaded == {"widget": "default", "gadget": "acme-cat"}


def test_a_tenant_cannot_change_or_delete_a_shared_row_through_the_unit_of_work(
    tenancy, session_for, categories
):
    before = snapshot(tenancy, Category)
    with session_for(ACME) as session:
        shared = session.get(Category, categories.shared)
        shared.name = "pwned"
        with pytest.raises(CrossTenantWrite):
            session.commit()
    with session_for(ACME) as session:
        session.delete(session.get(Category, categories.shared))
        with pytest.raises(CrossTenantWrite):
            session.commit()

    assert snapshot(tenancy, Category) == before


def test_bulk_updates_and_deletes_reach_only_the_tenants_own_rows(tenancy, session_for, categories):
    with session_for(ACME) as session:
        renamed = session.execute(update(Category).values(name="renamed"))
        by_id = session.execute(
            update(Category).where(Category.id == categories.shared).values(name="pwned")
        )
        deleted = session.execute(delete(Category).where(Category.id == categories.shared))
        session.commit()

    assert (renamed.rowcount, by_id.rowcount, deleted.rowcount) == (1, 0, 0)
    after = {row["name"]: row["tenant_id"] for row in snapshot(tenancy, Category)[Category]}
    assert after == {"default": None, "renamed": ACME, "globex-cat": GLOBEX}


def test_a_tenant_cannot_make_a_shared_row(tenancy, session_for, categories):
    """A row a tenant writes without a tenant is stamped with its own, as every new row is;
    a NULL named in a statement's values is refused: a tenant's row is never a shared one."""
    with session_for(ACME) as session:
        added = Category(name="mine", tenant_id=None)
        session.add(added)
        session.execute(insert(Category), [{"name": "bulk", "tenant_id": None}])
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(Category).values(name="disguised", tenant_id=None))
        session.commit()
        assert added.tenant_id == ACME

    after = {row["name"]: row["tenant_id"] for row in snapshot(tenancy, Category)[Category]}
    assert after == {
        "default": None,
        "acme-cat": ACME,
        "globex-cat": GLOBEX,
        "mine": ACME,
        "bulk": ACME,
    }


def test_a_tenant_cannot_turn_its_row_into_a_shared_one_even_in_mutable_tenant(
    tenancy, session_for, categories
):
    before = snapshot(tenancy, Category)
    with with_tenant(ACME), mutable_tenant(reason="test"), session_for(ACME) as session:
        mine = session.get(Category, categories.acme)
        mine.tenant_id = None
        with pytest.raises(CrossTenantWrite):
            session.commit()
    nulled = update(Category).where(Category.id == categories.acme).values(tenant_id=None)
    with (
        with_tenant(ACME),
        mutable_tenant(reason="test"),
        session_for(ACME) as session,
        pytest.raises(CrossTenantWrite),
    ):
        session.execute(nulled)
    assert snapshot(tenancy, Category) == before


def test_a_tenant_row_may_point_at_a_shared_row_but_not_at_another_tenants(
    tenancy, session_for, categories
):
    with session_for(ACME) as session:
        session.add(Product(name="ok", category_id=categories.shared))
        session.commit()
    before = snapshot(tenancy, Product)
    with session_for(ACME) as session:
        session.add(Product(name="stolen", category_id=categories.globex))
        with pytest.raises(CrossTenantWrite):
            session.commit()
    with session_for(ACME) as session, pytest.raises(CrossTenantWrite):
        session.execute(insert(Product).values(name="stolen", category_id=categories.globex))
    assert snapshot(tenancy, Product) == before


def test_a_shared_row_pointed_at_does_not_become_the_tenants_to_change(
    tenancy, session_for, categories
):
    """Proving a reference to a shared row must not record the row as the tenant's own: the
    unit of work's UPDATE of it in the same transaction is still refused."""
    before = snapshot(tenancy, Category)
    with session_for(ACME) as session:
        session.add(Product(name="ok", category_id=categories.shared))
        session.flush()
        shared = session.get(Category, categories.shared)
        shared.name = "pwned"
        with pytest.raises(CrossTenantWrite):
            session.flush()
    assert snapshot(tenancy, Category) == before


def test_the_admin_switch_and_without_tenant_write_shared_rows(tenancy, categories):
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        session.get(Category, categories.shared).name = "standard"
        session.add(Category(name="premium"))
        session.commit()
    with without_tenant(reason="seed vendor defaults"), tenancy.session() as session:
        session.add(Category(name="legacy"))
        session.commit()
        shared = session.execute(select(Category.name).where(Category.tenant_id.is_(None)))
        assert sorted(shared.scalars()) == ["legacy", "premium", "standard"]


def test_the_wall_accepts_the_shared_rows_filter_only_on_shared_rows_models(
    tenancy, session_for, world, categories
):
    """Hand-written on the core tables, where no criteria reach: the filter with its NULL arm
    is proof enough for a shared-rows table, and not for another tenant table (whose NULL
    tenant rows, if the database had any, belong to nobody)."""
    categories_t = Category.__table__
    projects_t = Project.__table__
    tenant = bindparam(TENANT_PARAM)
    shared_filter = or_(categories_t.c.tenant_id == tenant, categories_t.c.tenant_id.is_(None))
    other_filter = or_(projects_t.c.tenant_id == tenant, projects_t.c.tenant_id.is_(None))
    with session_for(ACME) as session:
        rows = session.execute(select(categories_t.c.name).where(shared_filter)).scalars()
        assert sorted(rows) == ["acme-cat", "default"]
        with pytest.raises(UnscopedStatement):
            session.execute(select(projects_t.c.name).where(other_filter))
        globex_arm = or_(categories_t.c.tenant_id == GLOBEX, categories_t.c.tenant_id.is_(None))
        with pytest.raises(UnscopedStatement):
            session.execute(select(categories_t.c.name).where(globex_arm))


def test_the_proof_admits_the_shared_rows_filter_where_rows_are_only_read(engine, categories):
    categories_t = Category.__table__
    shared_filter = or_(
        categories_t.c.tenant_id == bindparam(TENANT_PARAM),
        categories_t.c.tenant_id.is_(None),
    )
    dialect = engine.dialect
    read = prove(select(categories_t.c.name).where(shared_filter).compile(dialect=dialect))
    write = prove(
        update(categories_t).where(shared_filter).values(name="x").compile(dialect=dialect)
    )
    removal = prove(delete(categories_t).where(shared_filter).compile(dialect=dialect))

    assert [r.tenant_params for r in read.reads] == [(TENANT_PARAM,)]
    assert [r.tenant_params for r in write.reads] == [()]
    assert [r.tenant_params for r in removal.reads] == [()]
