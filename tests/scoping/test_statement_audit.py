"""The statement audit and the SQL tag, against the SQL each database actually receives.

``Tenancy(..., audit_statements=True)`` logs one ``statement_scoped`` record per statement of a
tenant session; each record is checked against the statement sent right after it (captured by
an ``after_cursor_execute`` listener, which sees the final string): every scope it lists is in
that SQL, with the dialect's placeholder, and every tenant table of the SQL is listed.
``tag_statements=True`` ends each statement with ``/*principal='...',tenant='...'*/``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pytest
from models import ACME, GLOBEX, KEY_TYPE, Category, Product, Project, Task, Template
from scoping_places import sql_target
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import selectinload

from fastapi_tenancy import (
    Access,
    HeaderResolver,
    SessionScope,
    Tenancy,
    TenantContext,
    UnscopedStatement,
)
from fastapi_tenancy.context import bind, unbind

PROJECT = Project.__table__.name  # type: ignore[attr-defined]
TASK = Task.__table__.name  # type: ignore[attr-defined]
CATEGORY = Category.__table__.name  # type: ignore[attr-defined]
TEMPLATE = Template.__table__.name  # type: ignore[attr-defined]
TENANT_TABLES = (PROJECT, TASK, CATEGORY, TEMPLATE)
SHARED_SCOPE = re.compile(r"(\w+)\.(\w+) = :(\w+) \[OR \1\.\2 IS NULL\]")
GLOBAL_SCOPE = re.compile(r"(\w+) read across tenants \(global access\)")
KEY_SCOPE = re.compile(r"(\w+)\.(\w+) = :(\w+) \(a key of the tenant's rows\)")


def scoped(table: str) -> str:
    return f"{table}.tenant_id = :fastapi_tenancy_tenant_id"


def tag(tenant: Any, principal: str | None = None) -> str:
    """The comment the kit appends, as the server receives it (before any %-escaping)."""
    pairs = [] if principal is None else ["principal='" + quote(principal, safe="") + "'"]
    pairs.append("tenant='" + quote(str(tenant), safe="") + "'")
    return " /*" + ",".join(pairs) + "*/"


def make_tenancy(
    like: Tenancy, engine: Engine | AsyncEngine | None = None, **options: Any
) -> Tenancy:
    """A Tenancy placing tenants as ``like`` does, on ``like``'s engine or on ``engine``."""
    return Tenancy(
        engine or like.engine,
        resolvers=[HeaderResolver()],
        key_type=KEY_TYPE,
        isolation=like.isolation,
        **options,
    )


@contextmanager
def as_principal(tenant: Any, principal: str, claim: str = "sub") -> Iterator[None]:
    token = bind(TenantContext(id=tenant, source="jwt", claims={claim: principal}))
    try:
        yield
    finally:
        unbind(token)


class Sent:
    """The statement_scoped records and the SQL strings sent, in order, inside the block."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @property
    def records(self) -> list[logging.LogRecord]:
        return [item for kind, item in self.events if kind == "record"]

    @property
    def sql(self) -> list[str]:
        return [item for kind, item in self.events if kind == "sql"]

    def pairs(self) -> list[tuple[logging.LogRecord, str]]:
        """Each record with the SQL sent right after it: the gate logs a statement just before
        the driver runs it (an insertmanyvalues statement: with its first batch)."""
        found = []
        for (kind, item), (next_kind, after) in zip(self.events, self.events[1:], strict=False):
            if kind == "record":
                assert next_kind == "sql", "a record not followed by its statement"
                found.append((item, after))
        assert len(found) == len(self.records)
        return found


@contextmanager
def sent_to(engine: Engine | AsyncEngine) -> Iterator[Sent]:
    """The records and the SQL sent on ``engine`` (on every engine when this run keeps tenants
    in databases of their own) inside the block."""
    target = sql_target(engine)
    sent = Sent()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "tenancy_event", None) == "statement_scoped":
                sent.events.append(("record", record))

    def after(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.events.append(("sql", statement))

    logger = logging.getLogger("fastapi_tenancy.audit")
    handler, level = Handler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    event.listen(target, "after_cursor_execute", after)
    try:
        yield sent
    finally:
        event.remove(target, "after_cursor_execute", after)
        logger.removeHandler(handler)
        logger.setLevel(level)


def placeholder(engine: Engine | AsyncEngine, param: str) -> str:
    """A pattern of the dialect's placeholder for the bound parameter ``param``."""
    if engine.dialect.paramstyle == "pyformat":
        return re.escape(f"%({param})s")
    return r"(?:\?|\$\d+|%s)"


def assert_carried(engine: Engine | AsyncEngine, record: logging.LogRecord, sql: str) -> None:
    """Every scope of ``record`` is in ``sql``; every tenant table of ``sql`` is listed."""
    listed = [t for t in TENANT_TABLES if re.search(rf"\b{t}\b", sql)]
    assert set(record.tenancy_tables) == set(listed), (record.tenancy_tables, sql)
    assert record.tenancy_scopes, sql
    for scope in record.tenancy_scopes:
        if scope.startswith("writes "):
            column, param = re.fullmatch(r"writes \w+\.(\w+) = :(\w+) \(.*\)", scope).groups()
            assert re.search(rf"\b{column}\b", sql), (scope, sql)
            assert re.search(placeholder(engine, param), sql), (scope, sql)
            continue
        if read_across := GLOBAL_SCOPE.fullmatch(scope):
            assert f"{read_across.group(1)}.tenant_id" not in sql, (scope, sql)
            continue
        keyed = KEY_SCOPE.fullmatch(scope) or SHARED_SCOPE.fullmatch(scope)
        table, column, param = (
            keyed.groups() if keyed else re.fullmatch(r"(\w+)\.(\w+) = :(\w+)", scope).groups()
        )
        assert re.search(rf"\b{table}\.{column} = {placeholder(engine, param)}", sql), (scope, sql)


def audited(like: Tenancy, work) -> list[tuple[logging.LogRecord, str]]:
    """Run ``work(session)`` in an audited acme session; every record checked against its SQL."""
    engine = like.engine
    tenancy = make_tenancy(like, audit_statements=True)
    with (
        sent_to(engine) as sent,
        as_principal(ACME, "alice"),
        tenancy.make_session(SessionScope(ACME)) as session,
    ):
        work(session)
        session.commit()
    pairs = sent.pairs()
    assert len(pairs) == len(sent.sql), "a statement of the session without its record"
    for record, sql in pairs:
        assert_carried(engine, record, sql)
        assert record.levelno == logging.INFO
        assert (record.tenancy_tenant, record.tenancy_principal) == (ACME, "alice")
    return pairs


def the(pairs: list[tuple[logging.LogRecord, str]], verb: str) -> logging.LogRecord:
    """The one record whose statement starts with ``verb``."""
    found = [record for record, sql in pairs if sql.lstrip().startswith(verb)]
    assert len(found) == 1, [sql for _, sql in pairs]
    return found[0]


def test_a_join_lists_both_tables_and_both_scopes(tenancy, world):
    pairs = audited(
        tenancy,
        lambda s: s.execute(select(Task.name).join(Project, Project.id == Task.project_id)).all(),
    )

    [(record, _)] = pairs
    assert record.tenancy_tables == (TASK, PROJECT)
    assert record.tenancy_scopes == (scoped(TASK), scoped(PROJECT))


def test_a_subquery_lists_the_table_it_reads(tenancy, world):
    pairs = audited(
        tenancy,
        lambda s: s.execute(
            select(Project.name).where(Project.id.in_(select(Task.project_id)))
        ).all(),
    )

    [(record, _)] = pairs
    assert set(record.tenancy_tables) == {PROJECT, TASK}
    assert set(record.tenancy_scopes) == {scoped(PROJECT), scoped(TASK)}


def test_relationship_loads_are_audited(tenancy, world):
    def work(session):
        session.get(Task, world.design).project  # noqa: B018 (a lazy load)
        session.execute(select(Project).options(selectinload(Project.tasks))).all()

    pairs = audited(tenancy, work)

    # the get, its lazy load, the select and its selectin load
    assert [record.tenancy_tables for record, _ in pairs] == [
        (TASK,),
        (PROJECT,),
        (PROJECT,),
        (TASK,),
    ]
    assert all(len(record.tenancy_scopes) == 1 for record, _ in pairs)


def test_the_unit_of_works_insert_lists_the_keys_it_writes(tenancy, world):
    pairs = audited(tenancy, lambda s: s.add(Task(name="new", project_id=world.apollo)))

    record = the(pairs, "INSERT")
    assert record.tenancy_tables == (TASK,)
    assert sorted(record.tenancy_scopes) == [
        f"writes {TASK}.project_id = :project_id (a {PROJECT} row of the tenant)",
        f"writes {TASK}.tenant_id = :tenant_id (the tenant)",
    ]


def test_the_unit_of_works_update_and_delete_list_their_keys(tenancy, world):
    def work(session):
        session.get(Project, world.apollo).name = "renamed"
        session.flush()
        session.delete(session.get(Task, world.build))

    pairs = audited(tenancy, work)

    for verb, table in (("UPDATE", PROJECT), ("DELETE", TASK)):
        record = the(pairs, verb)
        assert record.tenancy_tables == (table,)
        [scope] = record.tenancy_scopes
        assert KEY_SCOPE.fullmatch(scope).groups()[:2] == (table, "id")


def test_a_bulk_update_lists_its_scope(tenancy, world):
    pairs = audited(tenancy, lambda s: s.execute(update(Task).values(done=True)))

    record = the(pairs, "UPDATE")
    assert record.tenancy_scopes == (scoped(TASK),)


def test_a_read_of_shared_rows_lists_the_shared_rows_filter(tenancy, world, create_tables):
    create_tables(tenancy.engine, Category, Product)
    column = f"{CATEGORY}.tenant_id"
    pairs = audited(tenancy, lambda s: s.execute(select(Category.name)).all())

    [(record, sql)] = pairs
    assert record.tenancy_scopes == (
        f"{column} = :fastapi_tenancy_tenant_id [OR {column} IS NULL]",
    )
    assert f"OR {column} IS NULL" in sql


def test_a_bulk_update_of_shared_rows_lists_the_filter_of_the_tenants_own(
    tenancy, world, create_tables
):
    create_tables(tenancy.engine, Category, Product)
    column = f"{CATEGORY}.tenant_id"
    renamed = update(Category).values(name="renamed").execution_options(synchronize_session="fetch")
    pairs = audited(tenancy, lambda s: s.execute(renamed))

    assert the(pairs, "UPDATE").tenancy_scopes == (f"{column} = :fastapi_tenancy_tenant_id",)
    # MariaDB reads the rows to update first, with both filters on one parameter: the proof
    # cannot tell them apart, so the record gives the shared rows' form as possible
    for record, sql in pairs:
        if sql.startswith("SELECT"):
            assert f"OR {column} IS NULL" in sql
            assert record.tenancy_scopes == (
                f"{column} = :fastapi_tenancy_tenant_id [OR {column} IS NULL]",
            )


def test_a_global_read_without_a_tenant_says_so(tenancy, templates):
    audit = make_tenancy(tenancy, audit_statements=True)
    with (
        sent_to(tenancy.engine) as sent,
        audit.make_session(SessionScope(None, Access.GLOBAL)) as session,
    ):
        assert len(session.execute(select(Template.name)).all()) == 2

    [(record, sql)] = sent.pairs()
    assert_carried(tenancy.engine, record, sql)
    assert record.tenancy_tenant is None
    assert record.tenancy_scopes == (f"{TEMPLATE} read across tenants (global access)",)


def test_the_principal_is_the_tenancys_principal_claim(tenancy, world):
    audit = make_tenancy(tenancy, audit_statements=True, principal_claim="user")
    with (
        sent_to(tenancy.engine) as sent,
        as_principal(ACME, "42", claim="user"),
        audit.make_session(SessionScope(ACME)) as session,
    ):
        session.execute(select(Project.name)).all()
    with (
        sent_to(tenancy.engine) as unbound,  # no context bound: no principal
        audit.make_session(SessionScope(ACME)) as session,
    ):
        session.execute(select(Project.name)).all()

    assert [r.tenancy_principal for r in sent.records] == ["42"]
    assert [(r.tenancy_tenant, r.tenancy_principal) for r in unbound.records] == [(ACME, None)]


def test_off_by_default_and_never_for_unscoped_sessions(tenancy, world):
    audit = make_tenancy(tenancy, audit_statements=True, tag_statements=True)
    with sent_to(tenancy.engine) as sent:
        with tenancy.make_session(SessionScope(ACME)) as session:
            session.execute(select(Project.name)).all()
        with audit.make_session(SessionScope(None, Access.UNSCOPED)) as session:
            session.execute(select(Project.name)).all()

    assert sent.records == []
    assert len(sent.sql) == 2
    assert not any("/*" in sql for sql in sent.sql)


def test_every_statement_of_a_tagged_session_ends_with_its_tag(tenancy, world):
    tagged = make_tenancy(tenancy, tag_statements=True)
    with (
        sent_to(tenancy.engine) as sent,
        as_principal(ACME, "alice"),
        tagged.make_session(SessionScope(ACME)) as session,
    ):
        assert session.execute(select(Project.name)).scalars().all() == ["apollo"]
        session.add(Task(name="new", project_id=world.apollo))
        session.commit()

    assert sent.records == []  # the tag alone logs nothing
    assert len(sent.sql) >= 3
    for sql in sent.sql:
        assert sql.endswith(tag(ACME, "alice")), sql


def test_an_insertmanyvalues_batch_is_tagged_and_the_statement_audited_once(tenancy, world):
    both = make_tenancy(tenancy, audit_statements=True, tag_statements=True)
    rows = [{"name": f"bulk-{i}", "project_id": world.apollo} for i in range(5)]
    with sent_to(tenancy.engine) as sent, as_principal(ACME, "alice"):
        with both.make_session(SessionScope(ACME)) as session:
            session.execute(insert(Task).execution_options(insertmanyvalues_page_size=2), rows)
            session.commit()
        with both.make_session(SessionScope(ACME)) as session:
            names = session.execute(select(Task.name).where(Task.name.like("bulk-%"))).all()

    inserts = [sql for sql in sent.sql if sql.startswith("INSERT")]
    assert inserts
    assert all(sql.endswith(tag(ACME, "alice")) for sql in inserts)
    assert len([r for r in sent.records if r.tenancy_scopes[0].startswith("writes")]) == 1
    assert len(names) == 5


def test_a_tenant_and_principal_that_try_to_close_the_comment_are_encoded(tenancy, world):
    principal = "bob*/ OR 1=1 -- '%(x)s"
    tenant, expected = ACME, ["apollo"]
    if KEY_TYPE is str:  # a tenant key of any text: string keys only
        tenant, expected = "x'*/--%s;", ["evil-project"]
        with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as admin:
            admin.add(Project(name="evil-project", tenant_id=tenant))
            admin.commit()
    tagged = make_tenancy(tenancy, audit_statements=True, tag_statements=True)
    with (
        sent_to(tenancy.engine) as sent,
        as_principal(tenant, principal),
        tagged.make_session(SessionScope(tenant)) as session,
    ):
        names = session.execute(select(Project.name)).scalars().all()

    assert names == expected
    [sql] = sent.sql
    comment = tag(tenant, principal)
    assert sql.replace("%%", "%").endswith(comment)
    assert sql.count("/*") == sql.count("*/") == 1
    assert comment.startswith(" /*principal='bob%2A%2F%20OR%201%3D1%20--%20%27%25%28x%29s',")
    if KEY_TYPE is str:
        assert comment.endswith(",tenant='x%27%2A%2F--%25s%3B'*/")
    assert [(r.tenancy_tenant, r.tenancy_principal) for r in sent.records] == [(tenant, principal)]


def test_the_compiled_cache_does_not_grow_with_tenants(tenancy, world):
    tagged = make_tenancy(tenancy, tag_statements=True)
    engine = tenancy.engine
    keys = {
        str: [f"t{i}" for i in range(1000)],
        int: list(range(1000, 2000)),
        uuid.UUID: [uuid.UUID(int=i + 1) for i in range(1000)],
    }[KEY_TYPE]

    def run(key):
        with tagged.make_session(SessionScope(key)) as session:
            session.execute(select(Project.name).where(Project.name != "x")).all()

    with sent_to(engine) as sent:
        run(keys[0])
        size = len(engine._compiled_cache)
        for key in keys[1:]:
            run(key)

    assert len(engine._compiled_cache) == size
    assert len(set(sent.sql)) == 1000  # one SQL text per tenant, one compiled statement


def widen(conn, cursor, statement, parameters, context, executemany):
    return statement.replace("WHERE", "WHERE 1=1 OR"), parameters


def comment(conn, cursor, statement, parameters, context, executemany):
    return statement + " /*tenant='acme'*/", parameters


@pytest.mark.parametrize("tagger_first", [True, False], ids=["tagger-first", "listener-first"])
@pytest.mark.parametrize("change", [widen, comment], ids=["widen", "comment"])
def test_a_listener_that_changes_the_sql_is_still_refused_with_the_tag_on(
    tenancy, world, change, tagger_first
):
    engine = sql_target(tenancy.engine)
    tagged = make_tenancy(tenancy, tag_statements=True) if tagger_first else None
    event.listen(engine, "before_cursor_execute", change, retval=True)
    tagged = tagged or make_tenancy(tenancy, tag_statements=True)
    try:
        with (
            tagged.make_session(SessionScope(ACME)) as session,
            pytest.raises(UnscopedStatement, match="changed"),
        ):
            session.execute(select(Project.name)).all()
    finally:
        event.remove(engine, "before_cursor_execute", change)


def test_another_tenants_session_on_the_same_engine_carries_its_own_tag(tenancy, world):
    tagged = make_tenancy(tenancy, tag_statements=True)
    with sent_to(tenancy.engine) as sent:
        for tenant in (ACME, GLOBEX):
            with tagged.make_session(SessionScope(tenant)) as session:
                session.execute(select(Project.name)).all()

    assert [sql[sql.index(" /*") :] for sql in sent.sql] == [tag(ACME), tag(GLOBEX)]


@pytest.mark.backends("postgres")
def test_postgres_sees_the_tag_in_pg_stat_activity(database, tenancy, world):
    tagged = make_tenancy(tenancy, tag_statements=True)
    watcher = database.create_engine()
    seen: list[str] = []
    try:
        with tagged.make_session(SessionScope(ACME)) as session, as_principal(ACME, "alice"):
            # On the connection of the tenant's tables (its own database's, if it has one).
            first = select(func.pg_backend_pid()).select_from(Project).limit(1)
            pid = session.execute(first).scalar_one()
            statement = select(Project.name, func.pg_sleep(1.5))
            slow = threading.Thread(  # in this context, where the principal is bound
                target=contextvars.copy_context().run,
                args=(lambda: session.execute(statement).all(),),
            )
            slow.start()
            deadline = time.monotonic() + 5
            with watcher.connect() as conn:
                while not seen and time.monotonic() < deadline:
                    query = conn.execute(
                        text("SELECT query FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                    ).scalar_one()
                    if "pg_sleep" in query:
                        seen.append(query)
                    time.sleep(0.05)
            slow.join()
    finally:
        watcher.dispose()

    assert seen
    assert seen[0].endswith(tag(ACME, "alice")), seen


@pytest.mark.anyio
async def test_an_async_session_is_audited_and_tagged(async_tenancy, async_engine, world):
    tenancy = make_tenancy(async_tenancy, audit_statements=True, tag_statements=True)
    with sent_to(async_engine) as sent, as_principal(ACME, "alice"):
        async with tenancy.make_async_session(SessionScope(ACME)) as session:
            rows = await session.exec(
                select(Task.name).join(Project, Project.id == Task.project_id)
            )
            assert sorted(name for (name,) in rows.all()) == ["build", "design"]
            session.add(Task(name="new", project_id=world.apollo))
            await session.commit()

    pairs = sent.pairs()
    assert len(pairs) == len(sent.sql) >= 3
    for record, sql in pairs:
        assert_carried(async_engine, record, sql)
        assert sql.endswith(tag(ACME, "alice"))
    assert pairs[0][0].tenancy_scopes == (scoped(TASK), scoped(PROJECT))


def test_the_record_lists_each_row_scope_the_sql_carried(tenancy, create_tables):
    from models import Memo

    create_tables(tenancy.engine, Memo)
    memo = Memo.__table__.name  # type: ignore[attr-defined]
    audited_tenancy = make_tenancy(tenancy, audit_statements=True)
    with (
        sent_to(tenancy.engine) as sent,
        as_principal(ACME, "alice"),
        audited_tenancy.session() as session,
    ):
        session.add(Memo(title="mine"))
        session.flush()
        session.execute(select(Memo.title)).all()
        session.commit()
    [(insert_record, insert_sql), (select_record, select_sql)] = sent.pairs()
    owner = f"{memo}.owner_id = :fastapi_tenancy_scope_owner (the owner)"
    assert select_record.tenancy_scopes == (scoped(memo), owner)
    for scope in (f"{memo}.tenant_id", f"{memo}.owner_id"):
        param = "fastapi_tenancy_tenant_id" if "tenant" in scope else "fastapi_tenancy_scope_owner"
        assert re.search(rf"\b{scope} = {placeholder(tenancy.engine, param)}", select_sql)
    assert f"writes {memo}.owner_id = :owner_id (the owner)" in insert_record.tenancy_scopes
    assert "owner_id" in insert_sql
