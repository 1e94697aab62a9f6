"""Row-level security has the twins of the ORM's family reads and public rows.

The family: umbrella is initech's parent, and initech the parent of acme and globex, siblings.
``FamItem`` is read down the family (a tenant reads its ancestors' items), ``FamInvoice`` up (a
tenant reads its descendants' invoices). Raw SQL on the application's ordinary role, past the ORM
wall, reads the family the transaction names (``fastapi_tenancy.ancestors`` /
``.descendants``) and never a sibling's rows, and writes only the tenant's own. ``FamPost``'s
owner scope has public rows (``owner_field(public="published")``): raw SQL reads another
owner's published posts and cannot insert, update or delete them. The kit names the family in
every transaction, so a value left at session level never counts, on every driver path; the
wall's gate lets the kit's setting statement name only the session's own family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from key_types import UMBRELLA
from rls_models import ACME, GLOBEX, INITECH, KEY_TYPE, Keyed
from rls_support import AppRole
from rls_wire import RoundTripCounter
from sqlalchemy import MetaData, event, insert, literal, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, select

from fastapi_tenancy import SessionScope, Tenancy, TenantFamily, UnscopedStatement, owner_field
from fastapi_tenancy.hierarchy import NO_FAMILY, family_setting_value
from fastapi_tenancy.postgres import (
    RowLevelSecurity,
    apply_rls,
    check_database,
    rls_statements,
    set_tenant,
    tenant_savepoint,
)
from fastapi_tenancy.postgres.setting import setting_commands
from fastapi_tenancy.wall.guard import kit_statement_options

pytestmark = [pytest.mark.backends("postgres"), pytest.mark.anyio]

family_registry = registry()


class FamilyModel(SQLModel, registry=family_registry):
    """Base of this module's tables: their own registry and metadata."""


class FamItem(FamilyModel, Keyed, table=True):
    __tablename__ = "rls_fam_item"
    __tenant_reads__ = "ancestors"

    id: int | None = Field(default=None, primary_key=True)
    name: str


class FamInvoice(FamilyModel, Keyed, table=True):
    __tablename__ = "rls_fam_invoice"
    __tenant_reads__ = "descendants"

    id: int | None = Field(default=None, primary_key=True)
    number: str


class FamPost(FamilyModel, Keyed, table=True):
    __tablename__ = "rls_fam_post"

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field(public="published")
    published: bool = False
    body: str


metadata: MetaData = family_registry.metadata
NAMES = {UMBRELLA: "umbrella", INITECH: "initech", ACME: "acme", GLOBEX: "globex"}
FAMILIES = {
    UMBRELLA: TenantFamily(descendants=(INITECH, ACME, GLOBEX)),
    INITECH: TenantFamily(ancestors=(UMBRELLA,), descendants=(ACME, GLOBEX)),
    ACME: TenantFamily(ancestors=(INITECH, UMBRELLA)),
    GLOBEX: TenantFamily(ancestors=(INITECH, UMBRELLA)),
}
ITEMS = "SELECT name FROM rls_fam_item ORDER BY name"
INVOICES = "SELECT number FROM rls_fam_invoice ORDER BY number"
POSTS = "SELECT body FROM rls_fam_post ORDER BY body"
ALICE = (("owner", "alice"),)


@pytest.fixture
def world(owner: Engine, app_role: AppRole) -> None:
    """The tables under the kit's policies, seeded as the owner: an item and an invoice per
    tenant of the family; acme's posts by alice and bob, some published, and globex's."""
    with owner.begin() as conn:
        metadata.create_all(conn)
        apply_rls(conn, metadata)
        for tenant, name in NAMES.items():
            conn.execute(insert(FamItem).values(tenant_id=tenant, name=f"{name}-item"))
            conn.execute(insert(FamInvoice).values(tenant_id=tenant, number=f"{name}-invoice"))
        conn.execute(
            insert(FamPost).values(
                [
                    {"tenant_id": ACME, "owner_id": "alice", "published": False, "body": "a-draft"},
                    {"tenant_id": ACME, "owner_id": "bob", "published": False, "body": "b-draft"},
                    {"tenant_id": ACME, "owner_id": "bob", "published": True, "body": "b-public"},
                    {"tenant_id": GLOBEX, "owner_id": "bob", "published": True, "body": "g-public"},
                ]
            )
        )


@pytest.fixture
def app(app_role: AppRole, world: None) -> Engine:
    return app_role.engine(pool_size=1, max_overflow=0)


def rows(connection: Connection, sql: str) -> list[str]:
    """``sql`` by the driver's own cursor: past the ORM wall, the policies alone answer."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]
    finally:
        cursor.close()


def as_tenant(tenant: Any, **scope: Any) -> SessionScope:
    return SessionScope(tenant, family=FAMILIES[tenant], **scope)


def test_the_family_tables_select_policy_reads_the_family_setting():
    statements = rls_statements(metadata)
    cast = "TEXT" if KEY_TYPE is str else {int: "INTEGER"}.get(KEY_TYPE, "UUID")
    item = next(s for s in statements if "CREATE POLICY tenancy_select ON rls_fam_item" in s)
    assert (
        "tenant_id = ANY (CAST(NULLIF(current_setting('fastapi_tenancy.ancestors', true),"
        f" '') AS {cast}[]))" in item
    )
    invoice = next(s for s in statements if "CREATE POLICY tenancy_select ON rls_fam_invoice" in s)
    assert "current_setting('fastapi_tenancy.descendants', true)" in invoice
    writes = [s for s in statements if "CREATE POLICY" in s and "tenancy_select" not in s]
    assert not any("fastapi_tenancy.ancestors" in s for s in writes)  # writes stay own


def test_an_orm_family_read_under_rls_returns_the_family(app: Engine):
    tenancy = Tenancy(app, resolvers=[], rls=True, key_type=KEY_TYPE)
    with tenancy.make_session(as_tenant(ACME)) as session:
        assert sorted(session.exec(select(FamItem.name))) == [
            "acme-item",
            "initech-item",
            "umbrella-item",
        ]
    with tenancy.make_session(as_tenant(INITECH)) as session:
        assert sorted(session.exec(select(FamInvoice.number))) == [
            "acme-invoice",
            "globex-invoice",
            "initech-invoice",
        ]
    with tenancy.make_session(as_tenant(ACME, row_values=ALICE)) as session:
        assert sorted(session.exec(select(FamPost.body))) == ["a-draft", "b-public"]


def test_raw_sql_reads_the_named_family_and_never_a_sibling(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME, family=FAMILIES[ACME])
        assert rows(conn, ITEMS) == ["acme-item", "initech-item", "umbrella-item"]
        assert rows(conn, INVOICES) == ["acme-invoice"]  # acme has no descendants
    with app.begin() as conn:
        set_tenant(conn, INITECH, family=FAMILIES[INITECH])
        assert rows(conn, ITEMS) == ["initech-item", "umbrella-item"]
        assert rows(conn, INVOICES) == ["acme-invoice", "globex-invoice", "initech-invoice"]
    with app.begin() as conn:
        set_tenant(conn, ACME)  # no family: the tenant's own rows
        assert rows(conn, ITEMS) == ["acme-item"]
    with app.begin() as conn:
        set_tenant(conn, None)
        assert rows(conn, ITEMS) == []
    with pytest.raises(ValueError, match="names no tenant"), app.begin() as conn:
        set_tenant(conn, None, family=FAMILIES[ACME])


def test_raw_writes_into_the_familys_rows_are_refused_by_the_database(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME, family=FAMILIES[ACME])
        with pytest.raises(DBAPIError, match="row-level security"), conn.begin_nested():
            conn.execute(
                text("INSERT INTO rls_fam_item (tenant_id, name) VALUES (:t, 'forged')"),
                {"t": INITECH},
            )
        with pytest.raises(DBAPIError, match="row-level security"), conn.begin_nested():
            conn.execute(
                text("UPDATE rls_fam_item SET tenant_id = :t WHERE name = 'acme-item'"),
                {"t": INITECH},
            )
        # the parent's rows are read, never changed
        changed = conn.execute(
            text("UPDATE rls_fam_item SET name = 'x' WHERE name = 'initech-item'")
        )
        assert changed.rowcount == 0
        assert (
            conn.execute(text("DELETE FROM rls_fam_item WHERE name <> 'acme-item'")).rowcount == 0
        )
    with app.begin() as conn:
        set_tenant(conn, INITECH, family=FAMILIES[INITECH])
        assert (
            conn.execute(text("DELETE FROM rls_fam_invoice WHERE number LIKE 'acme%'")).rowcount
            == 0
        )
        assert rows(conn, INVOICES) == ["acme-invoice", "globex-invoice", "initech-invoice"]


def test_the_family_setting_quotes_every_key(app: Engine):
    """Every key is quoted, so no key (of a custom pattern) can smuggle another element in."""
    assert family_setting_value([ACME, GLOBEX]) == f'{{"{ACME}","{GLOBEX}"}}'
    assert family_setting_value(['a","b', "c\\"]) == '{"a\\",\\"b","c\\\\"}'
    assert family_setting_value([]) == ""
    with app.begin() as conn:
        parsed = conn.execute(
            text("SELECT CAST(:v AS text[])"), {"v": family_setting_value(['a","b', "c\\", "{,}"])}
        ).scalar_one()
        assert parsed == ['a","b', "c\\", "{,}"]


def test_the_gate_refuses_a_setting_command_naming_another_family(app: Engine):
    tenancy = Tenancy(app, resolvers=[], rls=True, key_type=KEY_TYPE)
    own = FAMILIES[ACME]
    forged = [
        (family_setting_value([*own.ancestors, GLOBEX]), ""),  # a sibling added
        (family_setting_value([GLOBEX]), ""),
        ("", family_setting_value([GLOBEX])),  # acme has no descendants
        (family_setting_value(own.ancestors), ""),  # even its own: no caller names settings
    ]
    for family in forged:
        commands = text(setting_commands(str(ACME), global_read=False, family=family))
        with pytest.raises(ValueError, match="not one of the kit's"):
            kit_statement_options(commands)
        with (
            tenancy.make_session(as_tenant(ACME)) as session,
            pytest.raises(UnscopedStatement, match="textual"),
        ):
            session.execute(commands)


def test_raw_sql_reads_another_owners_public_posts_and_cannot_write_them(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME, row_values={"owner": "alice"})
        assert rows(conn, POSTS) == ["a-draft", "b-public"]  # never globex's public post
        update = "UPDATE rls_fam_post SET body = 'x' WHERE body = 'b-public'"
        assert conn.execute(text(update)).rowcount == 0
        assert conn.execute(text("UPDATE rls_fam_post SET body = 'x'")).rowcount == 1  # a-draft
        assert conn.execute(text("DELETE FROM rls_fam_post WHERE body = 'b-public'")).rowcount == 0
        with pytest.raises(DBAPIError, match="row-level security"), conn.begin_nested():
            conn.execute(
                text(
                    "INSERT INTO rls_fam_post (tenant_id, owner_id, published, body) "
                    "VALUES (:t, 'bob', true, 'forged')"
                ),
                {"t": ACME},
            )
        with pytest.raises(DBAPIError, match="row-level security"), conn.begin_nested():
            conn.execute(text("UPDATE rls_fam_post SET owner_id = 'bob', published = true"))
        conn.execute(text("UPDATE rls_fam_post SET published = true WHERE owner_id = 'alice'"))
    with app.begin() as conn:
        set_tenant(conn, ACME, row_values={"owner": "bob"})
        assert rows(conn, POSTS) == ["b-draft", "b-public", "x"]  # alice published hers
        assert conn.execute(text("DELETE FROM rls_fam_post WHERE body = 'x'")).rowcount == 0
    with app.begin() as conn:
        set_tenant(conn, ACME)  # no owner: the public posts only
        assert rows(conn, POSTS) == ["b-public", "x"]
        assert conn.execute(text("DELETE FROM rls_fam_post")).rowcount == 0
    with app.begin() as conn:
        set_tenant(conn, ACME, lift=["owner"])
        assert rows(conn, POSTS) == ["b-draft", "b-public", "x"]
        assert conn.execute(text("DELETE FROM rls_fam_post WHERE body = 'b-draft'")).rowcount == 1


KINDS = ("psycopg", "psycopg-separate", "asyncpg", "psycopg-async")


def kit(app_role: AppRole, kind: str) -> Tenancy:
    pool: dict[str, Any] = {"pool_size": 1, "max_overflow": 0}
    rls: bool | RowLevelSecurity = True
    if kind == "asyncpg":
        engine: Any = app_role.async_engine(**pool)
    elif kind == "psycopg-async":
        url = app_role.url().set(drivername="postgresql+psycopg")
        engine = app_role.async_engine_at(url, **pool)
    else:
        engine = app_role.engine(**pool)
        if kind == "psycopg-separate":
            rls = RowLevelSecurity(with_begin=False)
    return Tenancy(engine, resolvers=[], rls=rls, key_type=KEY_TYPE)


ORM = {
    ITEMS: select(FamItem.name),
    INVOICES: select(FamInvoice.number),
    POSTS: select(FamPost.body),
}


async def seen(tenancy: Tenancy, scope: SessionScope, sql: str) -> list[str]:
    """Raw SQL, by the driver's cursor, on the connection a session of ``scope`` began; the
    ORM's read of the same rows must agree."""
    began: list[Connection] = []

    def record(session: Any, transaction: Any, connection: Connection) -> None:
        began.append(connection)

    if tenancy.is_async:
        async with tenancy.make_async_session(scope) as session:
            event.listen(session.sync_session, "after_begin", record)
            await session.exec(select(literal(1)))  # begins the transaction
            raw = await session.run_sync(lambda _: rows(began[0], sql))
            through_orm = sorted((await session.exec(ORM[sql])).all())
    else:
        with tenancy.make_session(scope) as sync_session:
            event.listen(sync_session, "after_begin", record)
            sync_session.exec(select(literal(1)))
            raw = rows(began[0], sql)
            through_orm = sorted(sync_session.exec(ORM[sql]).all())
    assert raw == through_orm  # the database's wall and the ORM's agree
    return raw


async def leave(tenancy: Tenancy, sql: str) -> None:
    """``sql`` at session level on the pool's one connection, committed."""
    if tenancy.is_async:
        async with tenancy.engine.connect() as conn:  # type: ignore[attr-defined]
            await conn.exec_driver_sql(sql)
            await conn.commit()
    else:
        with tenancy.engine.connect() as conn:  # type: ignore[attr-defined]
            conn.exec_driver_sql(sql)
            conn.commit()


@pytest.mark.parametrize("kind", KINDS)
async def test_sessions_name_their_family_on_every_driver_path(app_role, world, kind):
    tenancy = kit(app_role, kind)
    own_only = SessionScope(ACME, family=NO_FAMILY)
    try:
        assert await seen(tenancy, as_tenant(ACME), ITEMS) == [
            "acme-item",
            "initech-item",
            "umbrella-item",
        ]
        assert await seen(tenancy, as_tenant(GLOBEX), ITEMS) == [
            "globex-item",
            "initech-item",
            "umbrella-item",
        ]
        assert await seen(tenancy, as_tenant(INITECH), INVOICES) == [
            "acme-invoice",
            "globex-invoice",
            "initech-invoice",
        ]
        assert await seen(tenancy, own_only, ITEMS) == ["acme-item"]
        assert await seen(tenancy, as_tenant(ACME, row_values=ALICE), POSTS) == [
            "a-draft",
            "b-public",
        ]
        # values left for the whole connection never count in the kit's next transaction
        everyone = family_setting_value(NAMES)
        await leave(
            tenancy,
            f"SELECT set_config('fastapi_tenancy.ancestors', '{everyone}', false), "
            f"set_config('fastapi_tenancy.descendants', '{everyone}', false)",
        )
        assert await seen(tenancy, own_only, ITEMS) == ["acme-item"]
        assert await seen(tenancy, own_only, INVOICES) == ["acme-invoice"]
        assert await seen(tenancy, as_tenant(ACME), INVOICES) == ["acme-invoice"]
        assert await seen(tenancy, as_tenant(INITECH), ITEMS) == ["initech-item", "umbrella-item"]
    finally:
        if tenancy.is_async:
            await tenancy.engine.dispose()  # type: ignore[attr-defined]


def test_tenant_savepoint_restores_the_family(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME, family=FAMILIES[ACME])
        with tenant_savepoint(conn, GLOBEX):
            assert rows(conn, ITEMS) == ["globex-item"]  # no family named: its own only
        assert rows(conn, ITEMS) == ["acme-item", "initech-item", "umbrella-item"]
        with tenant_savepoint(conn, INITECH, family=FAMILIES[INITECH]):
            assert rows(conn, ITEMS) == ["initech-item", "umbrella-item"]
            assert rows(conn, INVOICES) == ["acme-invoice", "globex-invoice", "initech-invoice"]
        assert rows(conn, INVOICES) == ["acme-invoice"]
        with contextlib.suppress(LookupError), tenant_savepoint(conn, UMBRELLA):
            raise LookupError  # rolled back: the outer settings stay too
        assert rows(conn, ITEMS) == ["acme-item", "initech-item", "umbrella-item"]


def test_reapplying_replaces_the_scope_policies_exactly(owner: Engine, world: None):
    listed = text(
        "SELECT policyname, cmd, permissive FROM pg_policies "
        "WHERE schemaname = current_schema() AND tablename = 'rls_fam_post' ORDER BY policyname"
    )
    with owner.begin() as conn:
        first = conn.execute(listed).all()
        apply_rls(conn, metadata)
        assert conn.execute(listed).all() == first
    assert [(name, cmd) for name, cmd, permissive in first if permissive == "RESTRICTIVE"] == [
        ("tenancy_owned_delete_owner", "DELETE"),
        ("tenancy_owned_update_owner", "UPDATE"),
        ("tenancy_scope_owner", "ALL"),
    ]
    from fastapi_tenancy.postgres import remove_rls

    with owner.begin() as conn:
        remove_rls(conn, metadata)
        assert conn.execute(listed).all() == []


def test_the_checker_reports_a_family_table_or_public_scope_without_its_arm(
    owner: Engine, world: None
):
    arms = {"family_policy_missing", "public_policy_missing", "row_scope_policy_missing"}
    before = [f for f in check_database(owner, metadata=metadata) if f.code in arms]
    assert before == [], before
    with owner.begin() as conn:
        conn.execute(text("DROP POLICY tenancy_select ON rls_fam_item"))
        conn.execute(
            text(
                "CREATE POLICY tenancy_select ON rls_fam_item FOR SELECT USING (tenant_id = "
                "(SELECT NULLIF(current_setting('fastapi_tenancy.tenant_id', true), ''))"
                + ("" if KEY_TYPE is str else f"::{'integer' if KEY_TYPE is int else 'uuid'}")
                + ")"
            )
        )
        conn.execute(text("DROP POLICY tenancy_scope_owner ON rls_fam_post"))
        conn.execute(
            text(
                "CREATE POLICY tenancy_scope_owner ON rls_fam_post AS RESTRICTIVE FOR ALL "
                "USING (owner_id = current_setting('fastapi_tenancy.scope.owner', true))"
            )
        )
        conn.execute(text("DROP POLICY tenancy_owned_delete_owner ON rls_fam_post"))
    findings = check_database(owner, metadata=metadata)
    codes = {(f.code, f.subject) for f in findings}
    assert ("family_policy_missing", "rls_fam_item") in codes, findings
    assert ("public_policy_missing", "rls_fam_post") in codes, findings
    assert ("row_scope_policy_missing", "rls_fam_post") in codes, findings
    assert not any(f.code in arms and "rls_fam_invoice" in f.subject for f in findings)


@pytest.fixture
def relay(database: Any) -> Iterator[RoundTripCounter]:
    counter = RoundTripCounter(database.url.host or "127.0.0.1", database.url.port or 5432)
    try:
        yield counter
    finally:
        counter.close()


def test_the_family_costs_no_round_trip_on_psycopg(app_role, relay, world):
    bare_engine = app_role.engine(port=relay.port, pool_size=1)
    kit = Tenancy(
        app_role.engine(port=relay.port, pool_size=1), resolvers=[], rls=True, key_type=KEY_TYPE
    )

    def bare() -> None:
        with Session(bare_engine) as session:
            session.execute(text(ITEMS)).all()

    def through_kit() -> None:
        with kit.make_session(as_tenant(ACME)) as session:
            assert len(session.exec(select(FamItem.name)).all()) == 3

    def trips(work: Any) -> float:
        for _ in range(6):  # past psycopg's prepare threshold, so every run is alike
            work()
        before = relay.count()
        for _ in range(3):
            work()
        return (relay.count() - before) / 3

    assert trips(bare) == 3  # BEGIN, the query, ROLLBACK
    assert (
        trips(through_kit) == 3
    )  # BEGIN with every setting, the family's too, the query, ROLLBACK


def test_the_family_is_named_only_beside_the_settings_of_before():
    before = (
        "SET LOCAL fastapi_tenancy.tenant_id = 'acme'; SET LOCAL fastapi_tenancy.global_read = ''"
    )
    assert setting_commands("acme", global_read=False, family=("{a}", "")) == (
        f"{before}; SET LOCAL fastapi_tenancy.ancestors = '{{a}}'; "
        "SET LOCAL fastapi_tenancy.descendants = ''"
    )
    assert setting_commands("acme", global_read=False) == before  # no family: as before
