"""The SQL tag and the statement audit beside row-level security: the kit's own statement that
names the tenant to the policies still passes, and the application's statements are tagged."""

from __future__ import annotations

import logging

import pytest
from rls_models import ACME, KEY_TYPE, Project
from sqlalchemy import event, select

from fastapi_tenancy import HeaderResolver, SessionScope, Tenancy
from fastapi_tenancy.postgres import RowLevelSecurity

pytestmark = pytest.mark.backends("postgres")


@pytest.mark.parametrize("with_begin", [True, False], ids=["with-begin", "separate"])
def test_a_tagged_and_audited_rls_session_reads_its_rows(app_engine, world, caplog, with_begin):
    tenancy = Tenancy(
        app_engine,
        resolvers=[HeaderResolver()],
        key_type=KEY_TYPE,
        rls=RowLevelSecurity(with_begin=with_begin),
        audit_statements=True,
        tag_statements=True,
    )
    sent: list[str] = []

    def after(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append(statement)

    event.listen(app_engine, "after_cursor_execute", after)
    caplog.set_level(logging.INFO, "fastapi_tenancy.audit")
    try:
        with tenancy.make_session(SessionScope(ACME)) as session:
            names = session.execute(select(Project.name)).scalars().all()
            session.add(Project(name="tagged"))
            session.commit()
    finally:
        event.remove(app_engine, "after_cursor_execute", after)

    assert names == ["apollo"]
    tag = f" /*tenant='{ACME}'*/"
    assert [sql.split()[0] for sql in sent if sql.endswith(tag)] == ["SELECT", "INSERT"]
    assert all(sql.endswith(tag) or "set_config" in sql for sql in sent)
    records = [r for r in caplog.records if getattr(r, "tenancy_event", "") == "statement_scoped"]
    assert [r.tenancy_tables for r in records] == [("rls_project",), ("rls_project",)]
