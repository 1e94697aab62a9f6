"""Row-level security has the twin of each named row policy.

``PolDocument`` declares two row policies: ``live`` (``archived = false``) and ``cleared``
(``level <= 2 OR status IN ('public', 'declassified')``). ``apply_rls`` gives each a RESTRICTIVE
policy ``tenancy_policy_<name>``, so raw SQL on the application's ordinary role, past the ORM
wall, reads, changes and deletes only acme's rows meeting both, and cannot insert or update a
row out of them; a lift (``set_tenant(lift=...)``, or a lifted session) admits the rows past
that policy alone, in the tenant still. The kit names each policy's lift in every transaction,
so a lift left at session level never counts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from rls_models import ACME, GLOBEX, KEY_TYPE, Keyed
from rls_support import AppRole
from sqlalchemy import MetaData, event, false, insert, literal, or_, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, select

from fastapi_tenancy import RowPolicy, SessionScope, Tenancy
from fastapi_tenancy.postgres import apply_rls, check_database, rls_statements, set_tenant
from fastapi_tenancy.postgres.policies import enable_statements, tenant_tables

pytestmark = [pytest.mark.backends("postgres")]

policy_registry = registry()


class PolicyModel(SQLModel, registry=policy_registry):
    """Base of this module's tables: their own registry and metadata."""


class PolDocument(PolicyModel, Keyed, table=True):
    __tablename__ = "rls_pol_document"
    __row_policies__ = (
        RowPolicy("live", lambda cls: cls.archived == false()),
        RowPolicy("cleared", lambda cls: or_(cls.level <= 2, cls.status.in_(["public", "x'y"]))),
    )

    id: int | None = Field(default=None, primary_key=True)
    title: str
    archived: bool = False
    level: int = 0
    status: str = "internal"


metadata: MetaData = policy_registry.metadata
DOCUMENTS = "SELECT title FROM rls_pol_document ORDER BY title"
SEED = [  # tenant, title, archived, level, status
    (ACME, "live", False, 1, "internal"),
    (ACME, "archived", True, 1, "internal"),
    (ACME, "secret", False, 5, "internal"),
    (ACME, "public", False, 5, "public"),
    (ACME, "quoted", False, 5, "x'y"),
    (GLOBEX, "globex", False, 1, "internal"),
]
VISIBLE = ["live", "public", "quoted"]


@pytest.fixture
def app(owner: Engine, app_role: AppRole) -> Engine:
    with owner.begin() as conn:
        metadata.create_all(conn)
        apply_rls(conn, metadata)
        for tenant, title, archived, level, status in SEED:
            conn.execute(
                insert(PolDocument).values(
                    tenant_id=tenant, title=title, archived=archived, level=level, status=status
                )
            )
    return app_role.engine(pool_size=1, max_overflow=0)


def rows(connection: Connection, sql: str = DOCUMENTS) -> list[str]:
    """``sql`` by the driver's own cursor: past the ORM wall, the policies alone answer."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]
    finally:
        cursor.close()


def test_each_row_policy_gets_a_restrictive_policy_with_its_own_sql():
    statements = rls_statements(metadata)
    live = next(s for s in statements if "CREATE POLICY tenancy_policy_live" in s)
    assert "AS RESTRICTIVE FOR ALL USING ((archived = false) OR" in live
    assert "current_setting('fastapi_tenancy.lift.live', true)" in live
    cleared = next(s for s in statements if "CREATE POLICY tenancy_policy_cleared" in s)
    assert "(level <= 2 OR status IN ('public', 'x''y'))" in cleared


def test_raw_sql_reads_and_writes_only_the_rows_meeting_every_policy(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME)
        assert rows(conn) == VISIBLE
        hidden = {"titles": ["archived", "secret", "globex"]}
        update = text("UPDATE rls_pol_document SET title = 'x' WHERE title = ANY(:titles)")
        delete = text("DELETE FROM rls_pol_document WHERE title = ANY(:titles)")
        assert conn.execute(update, hidden).rowcount == 0
        assert conn.execute(delete, hidden).rowcount == 0
        for sql in (
            "UPDATE rls_pol_document SET archived = true WHERE title = 'live'",
            "UPDATE rls_pol_document SET level = 9 WHERE title = 'live'",
            "INSERT INTO rls_pol_document (tenant_id, title, archived, level, status) "
            "VALUES (:t, 'forged', true, 0, 'internal')",
        ):
            with pytest.raises(DBAPIError, match="row-level security"), conn.begin_nested():
                conn.execute(text(sql), {"t": ACME})
    with app.begin() as conn:
        set_tenant(conn, ACME)
        assert rows(conn) == VISIBLE


def test_a_lift_admits_the_rows_past_that_policy_alone_in_the_tenant(app: Engine):
    with app.begin() as conn:
        set_tenant(conn, ACME, lift=["live"])
        assert rows(conn) == ["archived", "live", "public", "quoted"]
        conn.execute(text("UPDATE rls_pol_document SET archived = true WHERE title = 'live'"))
    with app.begin() as conn:
        set_tenant(conn, ACME, lift=["live", "cleared"])
        assert rows(conn) == ["archived", "live", "public", "quoted", "secret"]
    with app.begin() as conn:
        set_tenant(conn, ACME)
        assert rows(conn) == ["public", "quoted"]


def test_orm_sessions_name_the_lift_and_a_leftover_never_counts(app: Engine):
    tenancy = Tenancy(app, resolvers=[], rls=True, key_type=KEY_TYPE)
    began: list[Connection] = []

    def record(session: Any, transaction: Any, connection: Connection) -> None:
        began.append(connection)

    with app.connect() as conn:  # trusted code leaves a lift at session level
        conn.execute(text("SELECT set_config('fastapi_tenancy.lift.live', 'on', false)"))
        conn.commit()
    with tenancy.make_session(SessionScope(ACME)) as session:
        event.listen(session, "after_begin", record)
        session.exec(select(literal(1)))
        assert rows(began[-1]) == VISIBLE
        assert sorted(session.exec(select(PolDocument.title))) == VISIBLE
    with tenancy.session(tenant=ACME, lift=["live"]) as session:
        event.listen(session, "after_begin", record)
        session.exec(select(literal(1)))
        assert rows(began[-1]) == ["archived", "live", "public", "quoted"]
        assert sorted(session.exec(select(PolDocument.title))) == [
            "archived",
            "live",
            "public",
            "quoted",
        ]


def test_the_checker_reports_a_row_policy_without_its_policy(owner: Engine, app: Engine):
    assert [
        f for f in check_database(owner, metadata=metadata) if f.code == "row_policy_missing"
    ] == []
    with owner.begin() as conn:
        conn.execute(text("DROP POLICY tenancy_policy_cleared ON rls_pol_document"))
    findings = check_database(owner, metadata=metadata)
    missing = [(f.code, f.subject) for f in findings if f.code == "row_policy_missing"]
    assert missing == [("row_policy_missing", "rls_pol_document")], findings
    apply_rls(owner, metadata)
    assert not [
        f for f in check_database(owner, metadata=metadata) if f.code == "row_policy_missing"
    ]


def test_re_applying_drops_the_row_policies_a_table_no_longer_declares(owner: Engine, app: Engine):
    [table] = [t for t in tenant_tables(metadata) if t.name == "rls_pol_document"]
    live = [p for p in table.row_policies if p.name == "live"]
    with owner.begin() as conn:
        for statement in enable_statements(replace(table, row_policies=live)):
            conn.execute(text(statement))
    with app.begin() as conn:
        set_tenant(conn, ACME)
        assert rows(conn) == ["live", "public", "quoted", "secret"]  # level no longer limits
    with owner.begin() as conn:
        names = "SELECT polname FROM pg_policy WHERE polrelid = 'rls_pol_document'::regclass"
        assert "tenancy_policy_cleared" not in conn.execute(text(names)).scalars().all()
