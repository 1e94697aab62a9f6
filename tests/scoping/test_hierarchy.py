"""Hierarchical tenants: a tenant reads its family's rows of the models that say so, and
writes only its own.

The family: umbrella (the vendor) is initech's parent, and initech (a reseller) is the parent
of its customers acme and globex, who are siblings. ``CatalogItem`` is read down the family
(a tenant reads its ancestors' items), ``Invoice`` up (a tenant reads its descendants'
invoices). Every attack is a tenant reaching a sibling's rows, or writing into a parent's or
a child's; each must fail on every database and leave every row as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from models import (
    ACME,
    GLOBEX,
    INITECH,
    KEY_TYPE,
    UMBRELLA,
    CatalogItem,
    Invoice,
    Project,
    snapshot,
)
from sqlalchemy import bindparam, delete, func, insert, literal_column, or_, select, update
from sqlalchemy.orm import aliased, registry, selectinload
from sqlmodel import Field, SQLModel

from fastapi_tenancy import (
    Access,
    CrossTenantWrite,
    SessionScope,
    Tenancy,
    TenancyMisuse,
    TenantFamily,
    TenantScoped,
    UnscopedStatement,
    owner_field,
)
from fastapi_tenancy.hierarchy import family_params
from fastapi_tenancy.wall import TENANT_PARAM

FAMILIES = {
    UMBRELLA: TenantFamily(descendants=(INITECH, ACME, GLOBEX)),
    INITECH: TenantFamily(ancestors=(UMBRELLA,), descendants=(ACME, GLOBEX)),
    ACME: TenantFamily(ancestors=(INITECH, UMBRELLA)),
    GLOBEX: TenantFamily(ancestors=(INITECH, UMBRELLA)),
}
NAMES = {UMBRELLA: "umbrella", INITECH: "initech", ACME: "acme", GLOBEX: "globex"}


@dataclass(frozen=True)
class Family:
    items: dict[str, int]
    invoices: dict[str, int]


def _unscoped(tenancy: Tenancy):
    return tenancy.make_session(SessionScope(None, Access.UNSCOPED))


@pytest.fixture
def family(tenancy: Tenancy, create_tables) -> Family:
    create_tables(tenancy.engine, CatalogItem, Invoice)
    with _unscoped(tenancy) as session:
        items = {}
        invoices = {}
        for tenant, name in NAMES.items():
            item = CatalogItem(name=f"{name}-item", tenant_id=tenant)
            invoice = Invoice(number=f"{name}-invoice", tenant_id=tenant)
            session.add_all([item, invoice])
            session.flush()
            variant = CatalogItem(name=f"{name}-variant", parent_id=item.id, tenant_id=tenant)
            session.add(variant)
            session.flush()
            items[name] = item.id
            items[f"{name}-variant"] = variant.id
            invoices[name] = invoice.id
        session.commit()
    return Family(items, invoices)  # type: ignore[arg-type]


def as_tenant(tenancy: Tenancy, tenant: Any, **scope: Any):
    return tenancy.make_session(SessionScope(tenant, family=FAMILIES[tenant], **scope))


def names(session, statement=None) -> list[str]:
    query = statement if statement is not None else select(CatalogItem.name)
    return sorted(session.execute(query).scalars())


def numbers(session, statement=None) -> list[str]:
    query = statement if statement is not None else select(Invoice.number)
    return sorted(session.execute(query).scalars())


def test_a_tenant_reads_its_ancestors_items_and_never_a_siblings(tenancy, family):
    with as_tenant(tenancy, ACME) as session:
        assert names(session, select(CatalogItem.name).where(CatalogItem.parent_id.is_(None))) == [
            "acme-item",
            "initech-item",
            "umbrella-item",
        ]
        assert session.get(CatalogItem, family.items["globex"]) is None
        assert session.get(CatalogItem, family.items["initech"]).name == "initech-item"
    with as_tenant(tenancy, INITECH) as session:
        assert "acme-item" not in names(session)  # a parent does not read down a catalogue
        assert len(names(session)) == 4
    with as_tenant(tenancy, UMBRELLA) as session:
        assert names(session) == ["umbrella-item", "umbrella-variant"]


def test_a_reseller_reads_its_customers_invoices_and_a_customer_only_its_own(tenancy, family):
    with as_tenant(tenancy, INITECH) as session:
        assert numbers(session) == ["acme-invoice", "globex-invoice", "initech-invoice"]
        assert session.get(Invoice, family.invoices["umbrella"]) is None
    with as_tenant(tenancy, ACME) as session:
        assert numbers(session) == ["acme-invoice"]
        assert session.get(Invoice, family.invoices["globex"]) is None
    with as_tenant(tenancy, UMBRELLA) as session:
        assert len(numbers(session)) == 4


def test_joins_subqueries_aggregates_and_aliases_keep_to_the_family(tenancy, family):
    with as_tenant(tenancy, ACME) as session:
        variant = aliased(CatalogItem)
        joined = select(CatalogItem.name, variant.name).join(
            variant, variant.parent_id == CatalogItem.id
        )
        assert sorted(session.execute(joined).all()) == [
            ("acme-item", "acme-variant"),
            ("initech-item", "initech-variant"),
            ("umbrella-item", "umbrella-variant"),
        ]
        assert session.execute(select(func.count(CatalogItem.id))).scalar_one() == 6
        sub = select(CatalogItem.name).where(
            CatalogItem.id.in_(select(CatalogItem.parent_id).where(CatalogItem.parent_id != None))  # noqa: E711
        )
        assert names(session, sub) == ["acme-item", "initech-item", "umbrella-item"]
        everything = select(CatalogItem.name).where(CatalogItem.tenant_id.in_([GLOBEX, ACME]))
        assert names(session, everything) == ["acme-item", "acme-variant"]


def test_relationship_loads_keep_to_the_family(tenancy, family):
    with as_tenant(tenancy, ACME) as session:
        item = session.get(CatalogItem, family.items["initech"])
        assert [v.name for v in item.variants] == ["initech-variant"]
        loaded = session.execute(
            select(CatalogItem)
            .where(CatalogItem.parent_id.is_(None))
            .options(selectinload(CatalogItem.variants))
        ).scalars()
        assert sorted((i.name, [v.name for v in i.variants]) for i in loaded) == [
            ("acme-item", ["acme-variant"]),
            ("initech-item", ["initech-variant"]),
            ("umbrella-item", ["umbrella-variant"]),
        ]


def test_a_tenant_cannot_change_or_delete_its_parents_rows(tenancy, family):
    before = snapshot(tenancy, CatalogItem, Invoice)
    with as_tenant(tenancy, ACME) as session:
        item = session.get(CatalogItem, family.items["initech"])
        item.name = "hijacked"
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
        item = session.get(CatalogItem, family.items["initech"])
        session.delete(item)
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
        renamed = session.execute(update(CatalogItem).values(name="renamed"))
        assert renamed.rowcount == 2  # acme's own two items only
        gone = session.execute(delete(CatalogItem).where(CatalogItem.tenant_id == INITECH))
        assert gone.rowcount == 0
        session.rollback()
    assert snapshot(tenancy, CatalogItem, Invoice) == before


def test_a_parent_cannot_write_into_a_child(tenancy, family):
    before = snapshot(tenancy, CatalogItem, Invoice)
    with as_tenant(tenancy, INITECH) as session:
        invoice = session.get(Invoice, family.invoices["acme"])
        assert invoice is not None  # read, as a reseller may
        invoice.number = "rewritten"
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
        with pytest.raises(CrossTenantWrite):  # refused as it joins the session
            session.add(Invoice(number="planted", tenant_id=ACME))
        session.rollback()
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(Invoice).values(number="planted", tenant_id=ACME))
        session.rollback()
        changed = session.execute(
            update(Invoice).where(Invoice.id == family.invoices["acme"]).values(number="x")
        )
        assert changed.rowcount == 0
        session.rollback()
        for strategy in ("evaluate", "fetch", False):
            statement = delete(Invoice).where(Invoice.id == family.invoices["globex"])
            gone = session.execute(statement, execution_options={"synchronize_session": strategy})
            assert gone.rowcount == 0
        session.rollback()
    assert snapshot(tenancy, CatalogItem, Invoice) == before


def test_a_statement_naming_a_sibling_in_its_family_filter_is_refused(tenancy, family):
    table = CatalogItem.__table__
    by_caller = select(table.c.name).where(
        table.c.tenant_id.in_(bindparam("tenants", expanding=True))
    )
    with as_tenant(tenancy, ACME) as session:
        with pytest.raises(UnscopedStatement, match="neither the session's"):
            session.execute(by_caller, {"tenants": [ACME, GLOBEX]})
        with pytest.raises(UnscopedStatement, match="neither the session's"):
            session.execute(by_caller, {"tenants": [GLOBEX]})
        # within the family, the same statement is a proven read
        allowed = session.execute(by_caller, {"tenants": [ACME, UMBRELLA]}).scalars()
        assert sorted(allowed) == ["acme-item", "acme-variant", "umbrella-item", "umbrella-variant"]
        # the kit's own parameters always carry the session's family, whatever was sent
        forged = {name: GLOBEX for name in family_params("ancestors", 4)}
        read = session.execute(select(CatalogItem.name), {**forged, TENANT_PARAM: GLOBEX})
        assert "globex-item" not in list(read.scalars())


def test_a_family_filter_of_several_parameters_is_checked_value_by_value(tenancy, family):
    table = CatalogItem.__table__
    key = table.c.tenant_id.type
    mine = bindparam("mine", type_=key)
    listed = select(table.c.name).where(
        table.c.tenant_id.in_([mine, bindparam("other", type_=key)])
    )
    with as_tenant(tenancy, ACME) as session:
        with pytest.raises(UnscopedStatement, match="neither the session's"):
            session.execute(listed, {"mine": ACME, "other": GLOBEX})
        allowed = session.execute(listed, {"mine": ACME, "other": INITECH}).scalars()
        assert sorted(allowed) == ["acme-item", "acme-variant", "initech-item", "initech-variant"]
        for smuggled in (
            literal_column(f"'{GLOBEX}'"),  # rendered into the SQL: no parameter to check
            bindparam("inline", GLOBEX, literal_execute=True),
            select(table.c.tenant_id).scalar_subquery(),
        ):
            statement = select(table.c.name).where(table.c.tenant_id.in_([mine, smuggled]))
            with pytest.raises(UnscopedStatement):
                session.execute(statement, {"mine": ACME})
        # the kit's own filter OR-ed with another tenant's is no proof either
        widened = select(CatalogItem.name).where(
            or_(CatalogItem.tenant_id == GLOBEX, CatalogItem.name != "")
        )
        assert "globex-item" not in list(session.execute(widened).scalars())


def test_a_family_filter_never_proves_a_model_that_reads_only_its_own(tenancy, world):
    table = Project.__table__
    statement = select(table.c.name).where(
        table.c.tenant_id.in_(bindparam("tenants", expanding=True))
    )
    with as_tenant(tenancy, ACME) as session, pytest.raises(UnscopedStatement):
        session.execute(statement, {"tenants": [ACME]})


def test_a_family_filter_in_a_write_reaches_only_the_tenants_own_rows(tenancy, family):
    table = CatalogItem.__table__
    statement = (
        update(table)
        .where(table.c.tenant_id.in_(bindparam("tenants", expanding=True)))
        .values(name="x")
    )
    before = snapshot(tenancy, CatalogItem)
    with as_tenant(tenancy, ACME) as session:
        changed = session.execute(statement, {"tenants": [ACME, INITECH, UMBRELLA]})
        assert changed.rowcount == 2
        session.rollback()
    assert snapshot(tenancy, CatalogItem) == before


def test_a_session_without_a_family_reads_its_own_rows(tenancy, family):
    with tenancy.make_session(SessionScope(ACME)) as session:
        assert names(session) == ["acme-item", "acme-variant"]
    with tenancy.make_session(tenancy.whole_tenant_scope(ACME)) as session:
        assert names(session) == ["acme-item", "acme-variant"]  # exports hold the tenant's own


def test_compiled_statements_stay_one_per_family_size_bucket(tenancy, family):
    """A family travels as parameters padded to a power of two: one compiled statement per
    size bucket (1, 2, 4, ...), however many tenants and families read."""
    cache = tenancy.engine._compiled_cache
    before = len(cache)
    for tenant in FAMILIES:
        with as_tenant(tenancy, tenant) as session:
            names(session)
    buckets = {len(f.bound(tenant, "ancestors")) for tenant, f in FAMILIES.items()}
    assert buckets == {1, 2, 4}
    assert len(cache) - before == len(buckets)
    four = TenantFamily(ancestors=(INITECH, UMBRELLA, GLOBEX))  # bucket 4 unpadded
    with tenancy.make_session(SessionScope(ACME, family=four)) as session:
        assert names(session) == sorted(
            f"{NAMES[t]}{suffix}" for t in FAMILIES for suffix in ("-item", "-variant")
        )
    for tenant in reversed(FAMILIES):
        with as_tenant(tenancy, tenant) as session:
            names(session)
    assert len(cache) - before == len(buckets)


def test_a_family_model_cannot_also_have_row_scopes_or_shared_rows():
    mapper_registry = registry()

    class Base(SQLModel, registry=mapper_registry):
        pass

    try:
        with pytest.raises(TenancyMisuse, match="row scopes"):

            class OwnedCatalog(Base, TenantScoped, table=True):  # type: ignore[misc]
                __tenant_reads__ = "ancestors"
                id: int | None = Field(default=None, primary_key=True)
                owner_id: str | None = owner_field()

        with pytest.raises(TenancyMisuse, match="__shared_rows__"):

            class SharedCatalog(Base, TenantScoped, table=True):  # type: ignore[misc]
                __tenant_reads__ = "descendants"
                __shared_rows__ = True
                id: int | None = Field(default=None, primary_key=True)

        with pytest.raises(TenancyMisuse, match="__tenant_reads__"):

            class Misspelled(Base, TenantScoped, table=True):  # type: ignore[misc]
                __tenant_reads__ = "parents"  # type: ignore[assignment]
                id: int | None = Field(default=None, primary_key=True)
    finally:
        mapper_registry.dispose()  # the failed mappers would stop every later configuration


@pytest.mark.anyio
async def test_async_sessions_read_the_family_too(async_tenancy, family):
    tenancy = async_tenancy
    scope = SessionScope(ACME, family=FAMILIES[ACME])
    async with tenancy.make_async_session(scope) as session:
        rows = (await session.exec(select(CatalogItem.name))).scalars().all()
    assert sorted(rows) == [
        "acme-item",
        "acme-variant",
        "initech-item",
        "initech-variant",
        "umbrella-item",
        "umbrella-variant",
    ]


def test_the_audit_record_names_the_family_filter_the_sql_carried(engine, family, caplog):
    audited = Tenancy(engine, resolvers=[], key_type=KEY_TYPE, audit_statements=True)
    scope = SessionScope(ACME, family=FAMILIES[ACME])
    with caplog.at_level(logging.INFO, "fastapi_tenancy.audit"), audited.make_session(scope) as s:
        names(s)
    record = next(r for r in caplog.records if r.tenancy_event == "statement_scoped")
    params = ", ".join(f":{name}" for name in family_params("ancestors", 4))  # 3, padded
    assert record.tenancy_scopes == (
        f"scoping_catalog_item.tenant_id IN ({params}) (the tenant and its ancestors)",
    )


def _forged(item_id: int, tenant: Any, **values: Any) -> CatalogItem:
    """An object claiming ``tenant`` with a parent's key, as merge(load=False) would plant it."""
    from sqlalchemy.orm import make_transient_to_detached

    forged = CatalogItem(id=item_id, tenant_id=tenant, name="forged", **values)
    make_transient_to_detached(forged)
    return forged


def test_a_forged_object_with_a_parents_key_cannot_write_the_parents_row(tenancy, family):
    before = snapshot(tenancy, CatalogItem)
    with as_tenant(tenancy, ACME) as session:
        planted = session.merge(_forged(family.items["initech"], ACME), load=False)
        planted.name = "hijacked"
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
        planted = session.merge(_forged(family.items["umbrella"], ACME), load=False)
        session.delete(planted)
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
    assert snapshot(tenancy, CatalogItem) == before


def test_a_foreign_key_to_a_family_row_is_refused_and_proves_nothing(tenancy, family):
    before = snapshot(tenancy, CatalogItem)
    with as_tenant(tenancy, ACME) as session:
        session.add(CatalogItem(name="acme-on-initech", parent_id=family.items["initech"]))
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
        with pytest.raises(CrossTenantWrite):
            session.execute(
                insert(CatalogItem).values(name="x", parent_id=family.items["umbrella"])
            )
        session.rollback()
        # a reference check must not leave the parent's row proven writable for what follows
        session.add(CatalogItem(name="mine", parent_id=family.items["acme"]))
        session.flush()
        planted = session.merge(_forged(family.items["initech"], ACME), load=False)
        planted.name = "hijacked"
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
    assert snapshot(tenancy, CatalogItem) == before
