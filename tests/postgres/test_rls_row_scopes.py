"""Row-level security enforces the row scopes, not only the tenant column.

Owner-only rows (``owner_field()``) and a team scope (``row_scope_field("team", int)``) each get
a RESTRICTIVE policy, ANDed with the tenant policies: raw SQL on the application's ordinary role,
past the ORM wall, sees and writes only the rows of the transaction's own owner (and team) in its
own tenant; none without a value; every owner of the tenant when the scope is lifted. The kit
names every declared row scope in every transaction, so a value left at session level on a
pooled connection never counts, on every driver path; ``set_tenant(row_values=, lift=)`` names
them for scripts and ``tenant_savepoint`` restores them; the wall's gate lets the kit's setting
statement name only the session's own values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from rls_models import ACME, GLOBEX, KEY_TYPE, Keyed
from rls_support import AppRole
from rls_wire import RoundTripCounter
from sqlalchemy import MetaData, event, insert, literal, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, select

from fastapi_tenancy import (
    RowScopeRequired,
    SessionScope,
    Tenancy,
    UnscopedStatement,
    owner_field,
    row_scope_field,
)
from fastapi_tenancy.postgres import (
    RowLevelSecurity,
    apply_rls,
    check_database,
    set_tenant,
    tenant_savepoint,
)
from fastapi_tenancy.postgres.policies import enable_statements, tenant_tables
from fastapi_tenancy.postgres.setting import quote_setting, setting_commands
from fastapi_tenancy.wall.guard import kit_statement_options

pytestmark = [pytest.mark.backends("postgres"), pytest.mark.anyio]

scope_registry = registry()


class ScopeModel(SQLModel, registry=scope_registry):
    """Base of this module's tables: their own registry and metadata."""


class Note(ScopeModel, Keyed, table=True):
    __tablename__ = "rls_scope_note"

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field()
    body: str


class TeamNote(ScopeModel, Keyed, table=True):
    __tablename__ = "rls_scope_team_note"

    id: int | None = Field(default=None, primary_key=True)
    team_id: int | None = row_scope_field("team", int)
    owner_id: str | None = owner_field()
    body: str


metadata: MetaData = scope_registry.metadata
ALICE = (("owner", "alice"), ("team", 1))
NOTES = "SELECT tenant_id, owner_id, body FROM rls_scope_note ORDER BY tenant_id, owner_id"
TEAM_NOTES = "SELECT body FROM rls_scope_team_note ORDER BY body"


@pytest.fixture
def world(owner: Engine, app_role: AppRole) -> None:
    """Both tables under the kit's policies, seeded as the owner: alice and bob of acme, and
    alice of globex; team notes of acme by team and owner."""
    with owner.begin() as conn:
        metadata.create_all(conn)
        apply_rls(conn, metadata)
        conn.execute(
            insert(Note).values(
                [
                    {"tenant_id": ACME, "owner_id": "alice", "body": "a1"},
                    {"tenant_id": ACME, "owner_id": "bob", "body": "b1"},
                    {"tenant_id": GLOBEX, "owner_id": "alice", "body": "g1"},
                ]
            )
        )
        conn.execute(
            insert(TeamNote).values(
                [
                    {"tenant_id": ACME, "team_id": 1, "owner_id": "alice", "body": "t1-alice"},
                    {"tenant_id": ACME, "team_id": 2, "owner_id": "alice", "body": "t2-alice"},
                    {"tenant_id": ACME, "team_id": 1, "owner_id": "bob", "body": "t1-bob"},
                ]
            )
        )


@pytest.fixture
def app(app_role: AppRole, world: None) -> Engine:
    return app_role.engine(pool_size=1, max_overflow=0)


def rows(connection: Connection, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` by the driver's own cursor: past the ORM wall, the policies alone answer."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def bodies(connection: Connection, sql: str = NOTES) -> list[str]:
    return [row[-1] for row in rows(connection, sql)]


def test_the_restrictive_policies_are_generated_per_row_scope():
    from fastapi_tenancy.postgres import rls_statements

    statements = rls_statements(metadata)
    restrictive = [s for s in statements if "AS RESTRICTIVE" in s]
    assert len(restrictive) == 3  # owner on both tables, team on the team notes
    team = next(s for s in restrictive if "tenancy_scope_team" in s)
    assert "CAST(NULLIF(current_setting('fastapi_tenancy.scope.team', true), '') AS INTEGER)" in (
        team
    )


def test_raw_sql_on_a_script_connection_sees_only_the_named_owner(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME, row_values={"owner": "alice"})
        assert bodies(conn) == ["a1"]
    with app.begin() as conn:
        set_tenant(conn, ACME)  # no value: fail closed
        assert bodies(conn) == []
    with app.begin() as conn:
        set_tenant(conn, ACME, lift=["owner"])
        assert bodies(conn) == ["a1", "b1"]  # every owner of acme, never globex's
    with app.begin() as conn:
        set_tenant(conn, GLOBEX, row_values={"owner": "bob"})
        assert bodies(conn) == []


def test_re_applying_drops_the_row_scopes_a_table_no_longer_declares(owner: Engine, app: Engine):
    [table] = [t for t in tenant_tables(metadata) if t.name == "rls_scope_team_note"]
    owner_only = [s for s in table.row_scopes if s.scope == "owner"]
    with owner.begin() as conn:
        for statement in enable_statements(replace(table, row_scopes=owner_only)):
            conn.execute(text(statement))
    with app.begin() as conn:
        set_tenant(conn, ACME, row_values={"owner": "alice"})  # no team named: teams are gone
        assert bodies(conn, TEAM_NOTES) == ["t1-alice", "t2-alice"]
    with owner.begin() as conn:
        names = "SELECT polname FROM pg_policy WHERE polrelid = 'rls_scope_team_note'::regclass"
        policies = conn.execute(text(names)).scalars().all()
    assert "tenancy_scope_team" not in policies
    assert "tenancy_scope_owner" in policies


def test_raw_writes_naming_another_owner_are_refused_by_the_database(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME, row_values={"owner": "alice"})
        conn.execute(
            text(
                "INSERT INTO rls_scope_note (tenant_id, owner_id, body) VALUES (:t, 'alice', 'a2')"
            ),
            {"t": ACME},
        )
        with pytest.raises(DBAPIError, match="row-level security"), conn.begin_nested():
            conn.execute(
                text(
                    "INSERT INTO rls_scope_note (tenant_id, owner_id, body) VALUES (:t, 'bob', 'x')"
                ),
                {"t": ACME},
            )
        with pytest.raises(DBAPIError, match="row-level security"), conn.begin_nested():
            conn.execute(text("UPDATE rls_scope_note SET owner_id = 'bob' WHERE body = 'a1'"))
        # bob's row is invisible: an UPDATE or DELETE naming it touches nothing
        assert (
            conn.execute(text("UPDATE rls_scope_note SET body = 'x' WHERE body = 'b1'")).rowcount
            == 0
        )
        assert conn.execute(text("DELETE FROM rls_scope_note WHERE body = 'b1'")).rowcount == 0
    with app.begin() as conn:
        set_tenant(conn, ACME, lift=["owner"])
        assert bodies(conn) == ["a1", "a2", "b1"]


def test_two_scopes_at_once_and_an_int_scope_column(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME, row_values={"owner": "alice", "team": 1})
        assert bodies(conn, TEAM_NOTES) == ["t1-alice"]
        set_tenant(conn, ACME, row_values={"owner": "alice"}, lift=["team"])
        assert bodies(conn, TEAM_NOTES) == ["t1-alice", "t2-alice"]
        set_tenant(conn, ACME, row_values={"team": 1}, lift=["owner"])
        assert bodies(conn, TEAM_NOTES) == ["t1-alice", "t1-bob"]
        set_tenant(conn, ACME, row_values={"team": 1})
        assert bodies(conn, TEAM_NOTES) == []


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


async def seen(tenancy: Tenancy, scope: SessionScope, sql: str = NOTES) -> list[str]:
    """Raw SQL, by the driver's cursor, on the connection a session of ``scope`` began (with
    an ORM read of its own, which the ORM wall scopes alike)."""
    began: list[Connection] = []

    def record(session: Any, transaction: Any, connection: Connection) -> None:
        began.append(connection)

    orm = select(Note.body).order_by(Note.tenant_id, Note.owner_id)
    through_orm: list[str] = []
    if tenancy.is_async:
        async with tenancy.make_async_session(scope) as session:
            event.listen(session.sync_session, "after_begin", record)
            await session.exec(select(literal(1)))  # begins the transaction
            raw = await session.run_sync(lambda _: bodies(began[0], sql))
            with contextlib.suppress(RowScopeRequired):
                through_orm = list((await session.exec(orm)).all())
    else:
        with tenancy.make_session(scope) as sync_session:
            event.listen(sync_session, "after_begin", record)
            sync_session.exec(select(literal(1)))
            raw = bodies(began[0], sql)
            with contextlib.suppress(RowScopeRequired):
                through_orm = list(sync_session.exec(orm).all())
    if sql == NOTES:
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
async def test_sessions_name_their_row_scopes_on_every_driver_path(app_role, world, kind):
    tenancy = kit(app_role, kind)
    try:
        assert await seen(tenancy, SessionScope(ACME, row_values=ALICE)) == ["a1"]
        assert await seen(tenancy, SessionScope(ACME, row_values=(("owner", "bob"),))) == ["b1"]
        assert await seen(tenancy, SessionScope(ACME, row_values=())) == []
        lifted = SessionScope(ACME, row_values=ALICE, lifted=frozenset({"owner"}))
        assert await seen(tenancy, lifted) == ["a1", "b1"]
        assert await seen(tenancy, SessionScope(GLOBEX, row_values=(("owner", "bob"),))) == []
        assert await seen(tenancy, SessionScope(ACME, row_values=ALICE), TEAM_NOTES) == ["t1-alice"]
        # values left for the whole connection never count in the kit's next transaction
        await leave(
            tenancy,
            "SELECT set_config('fastapi_tenancy.scope.owner', 'bob', false), "
            "set_config('fastapi_tenancy.lift.owner', 'on', false), "
            "set_config('fastapi_tenancy.lift.team', 'on', false)",
        )
        assert await seen(tenancy, SessionScope(ACME, row_values=ALICE)) == ["a1"]
        assert await seen(tenancy, SessionScope(ACME, row_values=())) == []
        assert await seen(tenancy, SessionScope(ACME, row_values=ALICE), TEAM_NOTES) == ["t1-alice"]
    finally:
        if tenancy.is_async:
            await tenancy.engine.dispose()  # type: ignore[attr-defined]


def test_a_lifted_session_reads_every_owner_of_its_tenant_through_rls(app: Engine):
    tenancy = Tenancy(app, resolvers=[], rls=True, key_type=KEY_TYPE)
    lifted = tenancy.lift(SessionScope(ACME, row_values=ALICE), ["owner"], reason="a test")
    assert anyio_run(seen(tenancy, lifted)) == ["a1", "b1"]
    whole = tenancy.whole_tenant_scope(ACME)
    assert anyio_run(seen(tenancy, whole)) == ["a1", "b1"]
    assert anyio_run(seen(tenancy, whole, TEAM_NOTES)) == ["t1-alice", "t1-bob", "t2-alice"]


def anyio_run(awaitable: Any) -> Any:
    """The answer of ``seen`` on a sync tenancy, which never awaits."""
    try:
        awaitable.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("a sync tenancy awaited")


def test_tenant_savepoint_restores_the_row_scopes(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME, row_values={"owner": "alice", "team": 1})
        with tenant_savepoint(conn, GLOBEX):
            assert bodies(conn) == []  # globex, and no owner named
        assert bodies(conn) == ["a1"]
        assert bodies(conn, TEAM_NOTES) == ["t1-alice"]
        set_tenant(conn, ACME, lift=["owner", "team"])
        with tenant_savepoint(conn, ACME):
            assert bodies(conn) == []
        with tenant_savepoint(conn, ACME, row_values={"owner": "bob"}):
            assert bodies(conn) == ["b1"]
        assert bodies(conn) == ["a1", "b1"]


def test_the_gate_refuses_a_setting_command_naming_another_owner(app: Engine):
    tenancy = Tenancy(app, resolvers=[], rls=True, key_type=KEY_TYPE)
    scopes = (("owner", "bob", False), ("team", "", False))
    forged = text(setting_commands(str(ACME), global_read=False, scopes=scopes))
    with pytest.raises(ValueError, match="not one of the kit's"):
        kit_statement_options(forged)
    with (
        tenancy.make_session(SessionScope(ACME, row_values=ALICE)) as session,
        pytest.raises(UnscopedStatement, match="textual"),
    ):
        session.execute(forged)


HOSTILE = "o'b\\'; SET LOCAL fastapi_tenancy.tenant_id = 'globex'; -- \\\\ é ✓ $$"
"""A row scope value no key pattern checks (an owner is a token's ``sub``)."""


@pytest.mark.parametrize("kind", KINDS)
async def test_a_row_scope_value_is_named_exactly_whatever_it_holds(app_role, world, kind):
    tenancy = kit(app_role, kind)
    named = (
        "SELECT current_setting('fastapi_tenancy.scope.owner') "
        "UNION ALL SELECT current_setting('fastapi_tenancy.tenant_id')"
    )
    try:
        scope = SessionScope(ACME, row_values=(("owner", HOSTILE),))
        assert await seen(tenancy, scope, named) == [HOSTILE, str(ACME)]
        assert await seen(tenancy, scope) == []  # no note of that owner, nor of globex
    finally:
        if tenancy.is_async:
            await tenancy.engine.dispose()  # type: ignore[attr-defined]


def test_a_setting_cannot_hold_a_nul():
    with pytest.raises(ValueError, match="NUL"):
        quote_setting("acme\x00globex")


def test_admin_roles_keep_every_row(owner: Engine, app_role: AppRole, world: None):
    admin = app_role.make_role()
    with owner.begin() as conn:
        apply_rls(conn, metadata, admin_roles=[admin])
    with app_role.engine(admin).begin() as conn:
        assert bodies(conn) == ["a1", "b1", "g1"]
    with app_role.engine().begin() as conn:
        set_tenant(conn, ACME, row_values={"owner": "alice"})
        assert bodies(conn) == ["a1"]


def test_the_checker_reports_a_missing_restrictive_policy(owner: Engine, world: None):
    with owner.begin() as conn:
        conn.execute(text("DROP POLICY tenancy_scope_owner ON rls_scope_note"))
    findings = check_database(owner, metadata=metadata)
    assert any(
        f.code == "row_scope_policy_missing" and "rls_scope_note" in f.subject for f in findings
    ), findings


def test_without_row_scopes_the_setting_commands_name_the_tenant_and_global_read():
    assert setting_commands(None, global_read=False) == (
        "SET LOCAL fastapi_tenancy.tenant_id = ''; SET LOCAL fastapi_tenancy.global_read = ''"
    )
    assert setting_commands("it's", global_read=True, scopes=(("user", "a\\b", True),)) == (
        "SET LOCAL fastapi_tenancy.tenant_id = 'it''s'; "
        "SET LOCAL fastapi_tenancy.global_read = 'on'; "
        "SET LOCAL fastapi_tenancy.scope.\"user\" = E'a\\\\b'; "
        "SET LOCAL fastapi_tenancy.lift.\"user\" = 'on'"
    )


@pytest.fixture
def relay(database: Any) -> Iterator[RoundTripCounter]:
    counter = RoundTripCounter(database.url.host or "127.0.0.1", database.url.port or 5432)
    try:
        yield counter
    finally:
        counter.close()


def test_the_row_scopes_cost_no_round_trip_on_psycopg(app_role, relay, world):
    bare_engine = app_role.engine(port=relay.port, pool_size=1)
    kit = Tenancy(
        app_role.engine(port=relay.port, pool_size=1), resolvers=[], rls=True, key_type=KEY_TYPE
    )

    def bare() -> None:
        with Session(bare_engine) as session:
            session.execute(text(NOTES)).all()

    def through_kit() -> None:
        with kit.make_session(SessionScope(ACME, row_values=ALICE)) as session:
            assert session.exec(select(Note.body)).all() == ["a1"]

    def trips(work: Any) -> float:
        for _ in range(6):  # past psycopg's prepare threshold, so every run is alike
            work()
        before = relay.count()
        for _ in range(3):
            work()
        return (relay.count() - before) / 3

    assert trips(bare) == 3  # BEGIN, the query, ROLLBACK
    assert trips(through_kit) == 3  # BEGIN with every setting, the query, ROLLBACK
