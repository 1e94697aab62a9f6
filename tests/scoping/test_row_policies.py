"""Named row policies: a fixed predicate on a model's rows, ANDed with the tenant filter.

``Document`` declares two policies: ``live`` (``archived = false``) and ``cleared`` (``level <=
2 OR status IN ('public', 'declassified')``, one term on two columns, with an expanding
parameter). The world, in acme: a live cleared document, an archived one, a secret one (level
5, internal), a public one (level 5, public); in globex, a live cleared document. An acme
session reads and writes only acme's live, cleared documents. Every attack reads or writes
another row (archived, secret, globex's) or leaves one outside a policy; each must fail on
every database and leave every row as it was.
"""

# No "from __future__ import annotations": SQLModel resolves relationships from real annotations.

import logging
from typing import Any

import pytest
from models import ACME, GLOBEX, KEY_TYPE, Keyed
from sqlalchemy import (
    bindparam,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import (
    aliased,
    joinedload,
    make_transient_to_detached,
    registry,
    selectinload,
)
from sqlmodel import Field, Relationship, SQLModel

from fastapi_tenancy import (
    Access,
    CrossTenantWrite,
    HeaderResolver,
    RowPolicy,
    RowPolicyViolation,
    SessionScope,
    Tenancy,
    TenancyMisuse,
    TenantScoped,
    UnscopedStatement,
    owner_field,
)
from fastapi_tenancy.wall import TENANT_PARAM

policy_registry = registry()


class PolicyModel(SQLModel, registry=policy_registry):
    """Base of this module's tables: their own registry and metadata."""


def live(cls: Any) -> Any:
    return cls.archived == false()


def cleared(cls: Any) -> Any:
    return or_(cls.level <= 2, cls.status.in_(["public", "declassified"]))


class Document(PolicyModel, Keyed, table=True):
    __tablename__ = "policy_document"
    __row_policies__ = (RowPolicy("live", live), RowPolicy("cleared", cleared))

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=50)
    archived: bool = False
    level: int = 0
    status: str = Field(default="internal", max_length=20)

    notes: list["DocumentNote"] = Relationship(back_populates="document")


class DocumentNote(PolicyModel, Keyed, table=True):
    __tablename__ = "policy_document_note"

    id: int | None = Field(default=None, primary_key=True)
    document_id: int | None = Field(default=None, foreign_key="policy_document.id")
    body: str = Field(max_length=50)

    document: Document | None = Relationship(back_populates="notes")


DOCUMENTS = [  # tenant, title, archived, level, status
    (ACME, "live", False, 1, "internal"),
    (ACME, "archived", True, 1, "internal"),
    (ACME, "secret", False, 5, "internal"),
    (ACME, "public", False, 5, "public"),
    (GLOBEX, "globex", False, 1, "internal"),
]
VISIBLE = ["live", "public"]


def unscoped(tenancy: Tenancy):
    return tenancy.make_session(SessionScope(None, Access.UNSCOPED))


@pytest.fixture
def documents(tenancy: Tenancy, create_tables) -> dict[str, int]:
    create_tables(tenancy.engine, Document, DocumentNote)
    ids = {}
    with unscoped(tenancy) as session:
        for tenant, title, archived, level, status in DOCUMENTS:
            document = Document(
                tenant_id=tenant, title=title, archived=archived, level=level, status=status
            )
            session.add(document)
            session.flush()
            ids[title] = document.id
            session.add(DocumentNote(tenant_id=tenant, document_id=document.id, body=title))
        session.commit()
    return ids  # type: ignore[return-value]


def state(tenancy: Tenancy) -> list[tuple[Any, ...]]:
    """Every row of both tables, read unscoped: compare before and after an attack."""
    with unscoped(tenancy) as session:
        rows = session.execute(
            select(
                Document.id,
                Document.tenant_id,
                Document.title,
                Document.archived,
                Document.level,
                Document.status,
            ).order_by(Document.id)
        ).all()
        notes = session.execute(
            select(DocumentNote.id, DocumentNote.document_id, DocumentNote.body).order_by(
                DocumentNote.id
            )
        ).all()
    return [tuple(row) for row in (*rows, *notes)]


def acme(tenancy: Tenancy, **scope: Any):
    return tenancy.make_session(SessionScope(ACME, **scope))


def titles(session: Any, statement: Any = None) -> list[str]:
    return sorted(
        session.execute(statement if statement is not None else select(Document.title)).scalars()
    )


def test_a_tenant_reads_only_the_rows_meeting_every_policy(tenancy, documents):
    with acme(tenancy) as session:
        assert titles(session) == VISIBLE
        for hidden in ("archived", "secret", "globex"):
            assert session.get(Document, documents[hidden]) is None
        assert session.execute(select(func.count(Document.id))).scalar_one() == 2
        other = aliased(Document)
        pairs = session.execute(
            select(Document.title, other.title).join(other, other.level >= Document.level)
        ).all()
        assert sorted(pairs) == [("live", "live"), ("live", "public"), ("public", "public")]
        outer = session.execute(
            select(DocumentNote.body, Document.title).outerjoin(DocumentNote.document)
        ).all()
        assert sorted(outer) == [
            ("archived", None),
            ("live", "live"),
            ("public", "public"),
            ("secret", None),
        ]
        sub = select(DocumentNote.body).where(
            DocumentNote.document_id.in_(select(Document.id).where(Document.level > 2))
        )
        assert titles(session, sub) == ["public"]
        has = select(DocumentNote.body).where(
            exists().where(Document.id == DocumentNote.document_id)
        )
        assert titles(session, has) == VISIBLE
        both = union_all(select(Document.title), select(Document.title).where(true()))
        assert titles(session, both) == sorted(VISIBLE * 2)
        cte = select(Document.title).cte("docs")
        assert titles(session, select(cte.c.title)) == VISIBLE


def test_relationship_loads_keep_to_the_policies(tenancy, documents):
    with acme(tenancy) as session:
        notes = session.execute(select(DocumentNote).order_by(DocumentNote.id)).scalars().all()
        assert [note.document and note.document.title for note in notes] == [
            "live",
            None,
            None,
            "public",
        ]
        for loader in (selectinload, joinedload):
            session.expunge_all()
            loaded = (
                session.execute(select(DocumentNote).options(loader(DocumentNote.document)))
                .unique()
                .scalars()
            )
            assert sorted(n.body for n in loaded if n.document is not None) == VISIBLE
        document = session.get(Document, documents["live"])
        assert [note.body for note in document.notes] == ["live"]


def test_rows_outside_a_policy_cannot_be_changed_or_deleted_by_statements(tenancy, documents):
    before = state(tenancy)
    with acme(tenancy) as session:
        for strategy in ("evaluate", "fetch", False):
            options = {"synchronize_session": strategy}
            for hidden in ("archived", "secret", "globex"):
                changed = session.execute(
                    update(Document).where(Document.id == documents[hidden]).values(title="x"),
                    execution_options=options,
                )
                assert changed.rowcount == 0
                gone = session.execute(
                    delete(Document).where(Document.id == documents[hidden]),
                    execution_options=options,
                )
                assert gone.rowcount == 0
            session.rollback()
    assert state(tenancy) == before


def test_no_write_may_leave_a_row_outside_a_policy(tenancy, documents, backend):
    before = state(tenancy)
    with acme(tenancy) as session:
        # a new row, an object changed, either policy
        for bad in ({"archived": True}, {"level": 5}, {"level": 5, "status": "secret"}):
            session.add(Document(title="new", **bad))
            with pytest.raises(RowPolicyViolation):
                session.flush()
            session.rollback()
            document = session.get(Document, documents["live"])
            for key, value in bad.items():
                setattr(document, key, value)
            with pytest.raises(RowPolicyViolation):
                session.flush()
            session.rollback()
        # statements: bulk UPDATE with every strategy, INSERT values, executemany, by key
        for strategy in ("evaluate", "fetch", False):
            with pytest.raises(RowPolicyViolation):
                session.execute(
                    update(Document).values(archived=True),
                    execution_options={"synchronize_session": strategy},
                )
            session.rollback()
        with pytest.raises(RowPolicyViolation):
            session.execute(insert(Document).values(title="x", archived=True, level=0))
        session.rollback()
        with pytest.raises(RowPolicyViolation):
            session.execute(
                insert(Document),
                [
                    {"title": "fine", "archived": False, "level": 0, "status": "x"},
                    {"title": "bad", "archived": False, "level": 9, "status": "x"},
                ],
            )
        session.rollback()
        with pytest.raises(RowPolicyViolation):
            session.execute(
                update(Document),
                [{"id": documents["live"], "archived": True}],
            )
        session.rollback()
        with pytest.raises(RowPolicyViolation):
            session.execute(update(Document).values(archived=bindparam("flag")), {"flag": True})
        session.rollback()
    assert state(tenancy) == before


def test_a_write_must_name_every_column_of_a_policy_term(tenancy, documents):
    before = state(tenancy)
    with acme(tenancy) as session:
        # level alone could leave level 5 with status internal: the statement is refused
        with pytest.raises(UnscopedStatement, match="sets only part"):
            session.execute(update(Document).values(level=5))
        session.rollback()
        # a SQL expression cannot be checked before it runs
        with pytest.raises(UnscopedStatement, match="SQL expression"):
            session.execute(update(Document).values(archived=~Document.archived))
        session.rollback()
        # the unit of work sends the term's other column too, so the wall checks the row
        document = session.get(Document, documents["public"])
        document.level = 4
        session.commit()
        assert session.get(Document, documents["public"]).level == 4
    with unscoped(tenancy) as session:
        session.get(Document, documents["public"]).level = 5
        session.commit()
    assert state(tenancy) == before


def test_writes_that_meet_the_policies_go_through(tenancy, documents):
    with acme(tenancy) as session:
        session.add(Document(title="fresh", level=2))
        session.execute(insert(Document).values(title="core", archived=False, level=1))
        session.execute(
            update(Document).where(Document.title == "live").values(level=2, status="public")
        )
        session.commit()
        assert titles(session) == ["core", "fresh", "live", "public"]


def test_a_hand_built_statement_must_carry_every_policy_with_its_values(tenancy, documents):
    table = Document.__table__
    tenant = table.c.tenant_id == bindparam(TENANT_PARAM)
    attempts = [
        # the tenant alone
        select(table.c.title).where(tenant),
        # the policy OR-ed with the tenant filter by mistake
        select(table.c.title).where(or_(tenant, table.c.archived == false())),
        # the policy inside an OR that admits everything
        select(table.c.title).where(
            tenant,
            or_(table.c.archived == false(), true()),
            or_(table.c.level <= 2, table.c.status.in_(["public", "declassified"])),
        ),
        # another value in the policy
        select(table.c.title).where(
            tenant,
            table.c.archived == true(),
            or_(table.c.level <= 2, table.c.status.in_(["public", "declassified"])),
        ),
        select(table.c.title).where(
            tenant,
            table.c.archived == false(),
            or_(table.c.level <= 9, table.c.status.in_(["public", "declassified"])),
        ),
        select(table.c.title).where(
            tenant,
            table.c.archived == false(),
            or_(table.c.level <= 2, table.c.status.in_(["public", "internal"])),
        ),
        # the policy on another occurrence of the table
        select(table.c.title)
        .select_from(table.join(other := table.alias("other"), other.c.id == table.c.id))
        .where(
            tenant,
            other.c.tenant_id == bindparam(TENANT_PARAM),
            other.c.archived == false(),
            or_(other.c.level <= 2, other.c.status.in_(["public", "declassified"])),
        ),
    ]
    with acme(tenancy) as session:
        for attempt in attempts:
            with pytest.raises(UnscopedStatement):
                session.execute(attempt)
        with pytest.raises(UnscopedStatement):
            session.execute(text("SELECT title FROM policy_document"))
        honest = select(table.c.title).where(
            tenant,
            table.c.archived == false(),
            or_(table.c.level <= 2, table.c.status.in_(["public", "declassified"])),
        )
        found = session.execute(honest).scalars().all()
        assert sorted(found) == VISIBLE


def test_a_policy_value_replaced_at_execution_is_refused(tenancy, documents):
    table = Document.__table__
    statement = select(table.c.title).where(
        table.c.tenant_id == bindparam(TENANT_PARAM),
        table.c.archived == false(),
        or_(table.c.level <= 2, table.c.status.in_(["public", "declassified"])),
    )
    named = select(table.c.title).where(
        table.c.tenant_id == bindparam(TENANT_PARAM),
        table.c.archived == false(),
        or_(table.c.level <= bindparam("ceiling", 2), table.c.status.in_(["public"])),
    )
    with acme(tenancy) as session:
        assert sorted(session.execute(statement).scalars()) == VISIBLE
        # the compiled names of the policy's values, given other values by the caller
        for forged in ({"level_1": 9}, {"status_1": ["public", "internal"]}):
            with pytest.raises(UnscopedStatement):
                session.execute(statement, forged)
        # a parameter of the caller's own in the policy's place proves nothing
        with pytest.raises(UnscopedStatement):
            session.execute(named, {"ceiling": 2})

    def widen(conn, clauseelement, multiparams, params, execution_options):
        return clauseelement, multiparams, {**params, "level_1": 9}

    event.listen(tenancy.engine, "before_execute", widen, retval=True)
    try:
        with acme(tenancy) as session, pytest.raises(UnscopedStatement):
            session.execute(statement)
    finally:
        event.remove(tenancy.engine, "before_execute", widen)


def test_a_forged_object_or_reference_cannot_reach_a_row_outside_a_policy(tenancy, documents):
    before = state(tenancy)
    with acme(tenancy) as session:
        for hidden in ("archived", "secret"):
            forged = Document(id=documents[hidden], tenant_id=ACME, title="forged")
            make_transient_to_detached(forged)
            planted = session.merge(forged, load=False)
            planted.title = "hijacked"
            with pytest.raises(CrossTenantWrite):
                session.flush()
            session.rollback()
            session.add(DocumentNote(body="pointer", document_id=documents[hidden]))
            with pytest.raises(CrossTenantWrite):
                session.flush()
            session.rollback()
            with pytest.raises(CrossTenantWrite):  # an ORM bulk UPDATE by primary key
                session.execute(update(Document), [{"id": documents[hidden], "title": "x"}])
            session.rollback()
            core = Document.__table__  # a core UPDATE naming the row by key: scoped
            changed = session.execute(
                update(core).where(core.c.id == documents[hidden]).values(title="x")
            )
            assert changed.rowcount == 0
            session.rollback()
    assert state(tenancy) == before


def test_a_lifted_policy_reads_and_writes_past_it_and_keeps_the_tenant(tenancy, documents, caplog):
    with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
        session = tenancy.session(tenant=ACME, lift=["live"])
    with session:
        assert titles(session) == ["archived", "live", "public"]  # never secret, never globex
        other = aliased(Document)  # the policies still applied reach aliases too
        joined = select(Document.title, other.title).join(other, other.id == Document.id)
        assert sorted(session.execute(joined).all()) == [
            ("archived", "archived"),
            ("live", "live"),
            ("public", "public"),
        ]
        document = session.get(Document, documents["live"])
        document.archived = True
        session.commit()
        assert session.get(Document, documents["globex"]) is None
        with pytest.raises(RowPolicyViolation):
            session.execute(update(Document).values(level=9, status="internal"))
    [record] = [r for r in caplog.records if getattr(r, "tenancy_event", "") == "row_scope_lifted"]
    assert record.tenancy_scopes == ["live"]
    with acme(tenancy) as session:
        assert titles(session) == ["public"]
    with pytest.raises(TenancyMisuse):
        tenancy.session(tenant=ACME, lift=["nonexistent"])


def test_the_audit_record_lists_each_policy_the_sql_carried(tenancy, documents, caplog):
    audited = Tenancy(
        tenancy.engine, resolvers=[HeaderResolver()], key_type=KEY_TYPE, audit_statements=True
    )
    with (
        caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"),
        audited.make_session(SessionScope(ACME)) as session,
    ):
        session.execute(select(Document.title)).all()
        session.add(Document(title="audited"))
        session.flush()
    records = [r for r in caplog.records if getattr(r, "tenancy_event", "") == "statement_scoped"]
    select_scopes = records[0].tenancy_scopes
    assert any("policy_document.archived = false (the row policy live)" in s for s in select_scopes)
    assert any(
        "(the row policy cleared)" in s and "'public', 'declassified'" in s for s in select_scopes
    )
    insert_scopes = records[-1].tenancy_scopes
    assert any(
        s.startswith("writes policy_document meeting") and "live" in s for s in insert_scopes
    )


def test_policies_share_one_compiled_statement_for_every_tenant(tenancy, documents):
    def run(tenant: Any) -> None:
        with tenancy.make_session(SessionScope(tenant)) as session:
            session.execute(select(Document.title)).all()

    run(ACME)
    size = len(tenancy.engine._compiled_cache)
    for tenant in (GLOBEX, ACME, GLOBEX):
        run(tenant)
    assert len(tenancy.engine._compiled_cache) == size


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ((RowPolicy("loud", lambda cls: func.lower(cls.status) == "x"),), "cannot be evaluated"),
        ((RowPolicy("sub", lambda cls: cls.id.in_(select(Document.id))),), "cannot be evaluated"),
        ((RowPolicy("owner", lambda cls: cls.flag == true()),), "row policy and a row scope"),
        ((RowPolicy("Bad-Name", lambda cls: cls.flag == true()),), "1 to 31 characters"),
        ((RowPolicy("twice", lambda cls: cls.flag == true()),) * 2, "twice"),
        ((RowPolicy("constant", lambda cls: true()),), "reads no column"),
        ((RowPolicy("plain", lambda cls: True),), "not a SQL expression"),
    ],
)
def test_policies_the_wall_cannot_check_are_refused_at_mapping(policies, message):
    mapper_registry = registry()

    class Base(SQLModel, registry=mapper_registry):
        pass

    try:
        with pytest.raises(TenancyMisuse, match=message):

            class Refused(Base, TenantScoped, table=True):  # type: ignore[misc]
                __tablename__ = "policy_refused"
                __row_policies__ = policies

                id: int | None = Field(default=None, primary_key=True)
                owner_id: str | None = owner_field()
                flag: bool = False
                status: str = ""
    finally:
        mapper_registry.dispose()


def test_an_update_from_or_delete_using_a_policy_model_reaches_only_its_visible_rows(
    tenancy, documents, backend
):
    """``UPDATE ... FROM`` and ``DELETE ... USING`` a policy model: the joined table keeps to
    its policies, so notes on archived or secret documents are never reached."""
    other = aliased(Document)
    for joined in (Document, other):
        with acme(tenancy) as session:
            changed = session.execute(
                update(DocumentNote)
                .where(DocumentNote.document_id == joined.id, joined.title != "")
                .values(body="touched"),
                execution_options={"synchronize_session": False},
            )
            assert changed.rowcount == len(VISIBLE)
            notes = session.execute(select(DocumentNote.document_id, DocumentNote.body)).all()
            title_of = {id_: title for title, id_ in documents.items()}
            assert sorted(title_of[d] for d, body in notes if body == "touched") == VISIBLE
            session.rollback()
    if backend == "sqlite":
        return  # no DELETE ... USING
    with acme(tenancy) as session:
        gone = session.execute(
            delete(DocumentNote).where(DocumentNote.document_id == Document.id),
            execution_options={"synchronize_session": False},
        )
        assert gone.rowcount == len(VISIBLE)
        session.rollback()
