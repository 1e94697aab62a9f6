"""Row scopes: owner-only rows and a second scoping field, held like the tenant column.

The world, in acme: alice's memo ``alice-memo`` and bob's memo ``bob-memo``, with a reply of
alice's on each (bob's memo carries a reply of alice's, planted unscoped, and alice's memo a
reply of bob's); in globex, a memo of a user also called alice. Every attack is alice, in acme,
trying to read, change or point at bob's rows, or globex's alice's; each must fail on every
database, and leave every row as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
from models import ACME, GLOBEX, Memo, MemoReply, TeamDoc, detached_row, seed_rows, snapshot
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import aliased, selectinload

from fastapi_tenancy import (
    CrossScopeWrite,
    CrossTenantWrite,
    RowScopeRequired,
    SessionScope,
    Tenancy,
    UnscopedStatement,
    with_tenant,
)
from fastapi_tenancy.row_scopes import row_scope_param
from fastapi_tenancy.wall import TENANT_PARAM

ALICE = (("owner", "alice"),)
BOB = (("owner", "bob"),)


@dataclass(frozen=True)
class Memos:
    alice: int
    bob: int
    globex_alice: int
    alice_reply_on_bob: int
    bob_reply_on_alice: int


@pytest.fixture
def memos(tenancy: Tenancy, create_tables) -> Memos:
    create_tables(tenancy.engine, Memo, MemoReply)
    alice, bob, globex_alice = seed_rows(
        tenancy,
        Memo(title="alice-memo", owner_id="alice", tenant_id=ACME),
        Memo(title="bob-memo", owner_id="bob", tenant_id=ACME),
        Memo(title="globex-alice-memo", owner_id="alice", tenant_id=GLOBEX),
    )
    alice_on_bob, bob_on_alice = seed_rows(
        tenancy,
        MemoReply(body="alice-on-bob", owner_id="alice", memo_id=bob, tenant_id=ACME),
        MemoReply(body="bob-on-alice", owner_id="bob", memo_id=alice, tenant_id=ACME),
    )
    return Memos(alice, bob, globex_alice, alice_on_bob, bob_on_alice)


def as_user(tenancy: Tenancy, values=ALICE, tenant=ACME, **scope):
    return tenancy.make_session(SessionScope(tenant, row_values=values, **scope))


def titles(session, statement=None) -> list[str]:
    return sorted(
        session.execute(statement if statement is not None else select(Memo.title)).scalars()
    )


def test_an_owner_reads_only_its_own_rows_of_its_own_tenant(tenancy, memos):
    with as_user(tenancy) as session:
        assert titles(session) == ["alice-memo"]
        assert session.get(Memo, memos.bob) is None
        assert session.get(Memo, memos.globex_alice) is None
        assert session.get(Memo, memos.alice).title == "alice-memo"
    with as_user(tenancy, BOB) as session:
        assert titles(session) == ["bob-memo"]
    with as_user(tenancy, ALICE, GLOBEX) as session:
        assert titles(session) == ["globex-alice-memo"]


def test_joins_subqueries_and_aggregates_keep_to_the_owner(tenancy, memos):
    with as_user(tenancy) as session:
        joined = select(MemoReply.body, Memo.title).join(Memo, MemoReply.memo_id == Memo.id)
        assert session.execute(joined).all() == []  # alice's reply is on bob's memo
        outer = select(Memo.title, MemoReply.body).outerjoin(
            MemoReply, MemoReply.memo_id == Memo.id
        )
        assert session.execute(outer).all() == [("alice-memo", None)]
        sub = select(Memo.title).where(Memo.id.in_(select(MemoReply.memo_id)))
        assert titles(session, sub) == []
        assert session.execute(select(func.count(Memo.id))).scalar_one() == 1
        assert session.execute(select(func.count()).select_from(MemoReply)).scalar_one() == 1
        other = aliased(Memo)
        assert titles(session, select(other.title)) == ["alice-memo"]


def test_relationship_loads_keep_to_the_owner(tenancy, memos):
    with as_user(tenancy) as session:
        memo = session.get(Memo, memos.alice)
        assert memo.replies == []  # bob's reply on it stays bob's
        reply = session.get(MemoReply, memos.alice_reply_on_bob)
        assert reply.memo is None  # the memo it answers is bob's
    with as_user(tenancy) as session:
        loaded = session.execute(select(Memo).options(selectinload(Memo.replies))).scalars().all()
        assert [(m.title, m.replies) for m in loaded] == [("alice-memo", [])]


def test_a_filter_or_a_parameter_naming_another_owner_changes_nothing(tenancy, memos):
    with as_user(tenancy) as session:
        assert titles(session, select(Memo.title).where(Memo.owner_id == "bob")) == []
        forged = {row_scope_param("owner"): "bob", TENANT_PARAM: ACME}
        assert sorted(session.execute(select(Memo.title), forged).scalars()) == ["alice-memo"]


def test_a_statement_without_the_owner_filter_is_refused_by_the_wall(tenancy, memos):
    table = Memo.__table__
    only_tenant = select(table.c.title).where(table.c.tenant_id == bindparam(TENANT_PARAM))
    own_param = only_tenant.where(table.c.owner_id == bindparam(row_scope_param("owner")))
    by_caller = only_tenant.where(table.c.owner_id == bindparam("who"))
    with as_user(tenancy) as session:
        with pytest.raises(UnscopedStatement, match="row scope"):
            session.execute(only_tenant)
        with pytest.raises(UnscopedStatement, match="row scope"):
            session.execute(by_caller, {"who": "bob"})
        # the kit's own parameter always carries the session's value, whatever the caller sent
        forged = {row_scope_param("owner"): "bob"}
        assert session.execute(own_param, forged).scalars().all() == ["alice-memo"]
        assert session.execute(by_caller, {"who": "alice"}).scalars().all() == ["alice-memo"]


def test_bulk_update_and_delete_reach_only_the_owners_rows(tenancy, memos):
    before = snapshot(tenancy, Memo)
    with as_user(tenancy) as session:
        assert session.execute(update(Memo).values(title="mine")).rowcount == 1
        assert session.execute(delete(MemoReply)).rowcount == 1
        session.commit()
    after = snapshot(tenancy, Memo)
    changed = [row["title"] for row in after[Memo] if row not in before[Memo]]
    assert changed == ["mine"]
    bodies = sorted(row["body"] for row in snapshot(tenancy, MemoReply)[MemoReply])
    assert bodies == ["bob-on-alice"]


def test_new_rows_get_the_owner_and_may_not_name_another(tenancy, memos):
    with as_user(tenancy) as session:
        memo = Memo(title="fresh")
        session.add(memo)
        session.commit()
        assert memo.owner_id == "alice"
        with pytest.raises(CrossScopeWrite):  # refused as it joins the session
            session.add(Memo(title="forged", owner_id="bob"))
        session.rollback()
        for statement in (
            insert(Memo).values(title="forged", owner_id="bob"),
            insert(Memo).values(title="forged", owner_id=bindparam("who")),
        ):
            with pytest.raises(CrossScopeWrite):
                session.execute(statement, {"who": "bob"} if "who" in str(statement) else {})
            session.rollback()
        with pytest.raises(CrossScopeWrite):
            session.execute(insert(Memo), [{"title": "x"}, {"title": "y", "owner_id": "bob"}])
        session.rollback()
    owners = sorted((row["title"], row["owner_id"]) for row in snapshot(tenancy, Memo)[Memo])
    assert ("fresh", "alice") in owners
    assert not any(title in ("forged", "x", "y") for title, _ in owners)


def test_a_row_cannot_be_given_to_another_owner(tenancy, memos):
    before = snapshot(tenancy, Memo)
    with as_user(tenancy) as session:
        memo = session.get(Memo, memos.alice)
        memo.owner_id = "bob"
        with pytest.raises(CrossScopeWrite):
            session.flush()
        session.rollback()
        moved = update(Memo).where(Memo.id == memos.alice).values(owner_id="bob")
        with pytest.raises(CrossScopeWrite):
            session.execute(moved)
        session.rollback()
        by_key = update(Memo)
        with pytest.raises(CrossScopeWrite):
            session.execute(by_key, [{"id": memos.alice, "owner_id": "bob"}])
        session.rollback()
    assert snapshot(tenancy, Memo) == before


def test_references_to_another_owners_row_are_refused(tenancy, memos):
    before = snapshot(tenancy, Memo, MemoReply)
    with as_user(tenancy) as session:
        session.add(MemoReply(body="sneaky", memo_id=memos.bob))
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(MemoReply).values(body="sneaky", memo_id=memos.bob))
        session.rollback()
        mine = session.get(MemoReply, memos.alice_reply_on_bob)
        assert mine is not None
        mine.memo_id = memos.globex_alice
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
        session.add(MemoReply(body="fine", memo_id=memos.alice))
        session.commit()
    after = snapshot(tenancy, Memo, MemoReply)
    assert after[Memo] == before[Memo]
    assert [r["body"] for r in after[MemoReply] if r not in before[MemoReply]] == ["fine"]


def test_another_owners_object_cannot_join_the_session(tenancy, memos):
    bobs = detached_row(tenancy, Memo, memos.bob)
    with as_user(tenancy) as session:
        with pytest.raises(CrossScopeWrite):
            session.merge(bobs, load=False)
        with pytest.raises(CrossScopeWrite):
            session.add(bobs)


def test_no_owner_value_fails_closed(tenancy, memos):
    with as_user(tenancy, ()) as session:
        with pytest.raises(RowScopeRequired):
            session.execute(select(Memo)).all()
        session.add(Memo(title="orphan"))
        with pytest.raises(RowScopeRequired):
            session.flush()
    with (
        with_tenant(ACME),  # no principal bound
        tenancy.session() as session,
        pytest.raises(RowScopeRequired),
    ):
        session.get(Memo, memos.alice)


def test_the_owner_comes_from_the_principal_of_the_bound_context(tenancy, memos):
    from fastapi_tenancy.context import TenantContext, bind, unbind

    token = bind(TenantContext(id=ACME, claims={"sub": "bob"}))
    try:
        with tenancy.session() as session:
            assert titles(session) == ["bob-memo"]
    finally:
        unbind(token)


def test_a_lifted_session_sees_every_owner_of_its_tenant_only(tenancy, memos, caplog):
    with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
        scope = tenancy.lift(SessionScope(ACME, row_values=ALICE), ["owner"], reason="test")
    assert [r.tenancy_event for r in caplog.records] == ["row_scope_lifted"]
    with tenancy.make_session(scope) as session:
        assert titles(session) == ["alice-memo", "bob-memo"]
        assert session.get(Memo, memos.globex_alice) is None
        memo = session.get(Memo, memos.bob)
        memo.owner_id = "alice"  # reassigning is the lifted session's business
        session.add(Memo(title="for-bob", owner_id="bob"))
        session.commit()
        assert session.execute(update(Memo).values(title="t")).rowcount == 3
        session.rollback()
    with as_user(tenancy, BOB) as session:
        assert titles(session) == ["for-bob"]


def test_two_row_scopes_are_both_applied(tenancy, create_tables):
    create_tables(tenancy.engine, TeamDoc)
    seed_rows(
        tenancy,
        *(
            TeamDoc(title=f"{team}-{owner}", team_id=team, owner_id=owner, tenant_id=ACME)
            for team, owner in ((1, "alice"), (1, "bob"), (2, "alice"))
        ),
    )
    alice_team1 = (("owner", "alice"), ("team", 1))
    with as_user(tenancy, alice_team1) as session:
        assert sorted(session.execute(select(TeamDoc.title)).scalars()) == ["1-alice"]
        session.add(TeamDoc(title="new"))
        session.commit()
        with pytest.raises(CrossScopeWrite):
            session.add(TeamDoc(title="other-team", team_id=2))
        session.rollback()
    lifted = tenancy.lift(SessionScope(ACME, row_values=alice_team1), ["owner"], reason=None)
    with tenancy.make_session(lifted) as session:
        assert sorted(session.execute(select(TeamDoc.title)).scalars()) == [
            "1-alice",
            "1-bob",
            "new",
        ]
    no_team = (("owner", "alice"),)
    with as_user(tenancy, no_team) as session, pytest.raises(RowScopeRequired):
        session.execute(select(TeamDoc)).all()


@pytest.mark.anyio
async def test_async_sessions_keep_to_the_owner(async_tenancy, memos):
    async with async_tenancy.make_async_session(SessionScope(ACME, row_values=ALICE)) as session:
        result = await session.exec(select(Memo.title))
        assert [row[0] for row in result] == ["alice-memo"]
        assert await session.get(Memo, memos.bob) is None
        with pytest.raises(CrossScopeWrite):
            session.add(Memo(title="async", owner_id="bob"))


def test_one_compiled_statement_serves_every_owner_and_a_lift_never_sticks(tenancy, memos):
    engine = tenancy.engine
    lifted = tenancy.lift(SessionScope(ACME, row_values=ALICE), ["owner"], reason=None)

    def read(scope):
        with tenancy.make_session(scope) as session:
            return titles(session)

    assert read(SessionScope(ACME, row_values=ALICE)) == ["alice-memo"]
    cached = len(engine._compiled_cache)
    for i in range(200):
        owner = (("owner", f"user-{i}"),)
        assert read(SessionScope(ACME if i % 2 else GLOBEX, row_values=owner)) == []
    assert len(engine._compiled_cache) == cached
    # a lifted session compiles its own form, and the owners' form stays scoped after it
    assert read(lifted) == ["alice-memo", "bob-memo"]
    assert read(SessionScope(ACME, row_values=BOB)) == ["bob-memo"]
    assert read(lifted) == ["alice-memo", "bob-memo"]
    assert read(SessionScope(ACME, row_values=ALICE)) == ["alice-memo"]


def test_unions_ctes_exists_and_eager_joins_keep_to_the_owner(tenancy, memos):
    from sqlalchemy import exists, union_all
    from sqlalchemy.orm import contains_eager

    with as_user(tenancy) as session:
        both = union_all(select(Memo.title), select(Memo.title).where(Memo.id == memos.bob))
        assert sorted(session.execute(both).scalars()) == ["alice-memo"]
        cte = select(Memo.id, Memo.title).cte("mine")
        assert session.execute(select(cte.c.title)).scalars().all() == ["alice-memo"]
        replied = select(Memo.title).where(exists().where(MemoReply.memo_id == Memo.id))
        assert titles(session, replied) == []  # bob's reply on alice's memo is not hers to see
        assert titles(session, select(Memo.title).where(Memo.replies.any())) == []
        eager = (
            select(Memo)
            .outerjoin(Memo.replies)
            .options(contains_eager(Memo.replies))
            .execution_options(populate_existing=True)
        )
        loaded = session.execute(eager).unique().scalars().all()
        assert [(m.title, m.replies) for m in loaded] == [("alice-memo", [])]


def test_bulk_writes_with_each_synchronize_strategy_keep_to_the_owner(tenancy, memos):
    before = snapshot(tenancy, Memo)
    for strategy in ("fetch", "evaluate", False):
        with as_user(tenancy) as session:
            statement = (
                update(Memo)
                .where(Memo.title.in_(["bob-memo", "globex-alice-memo"]))
                .values(title="taken")
                .execution_options(synchronize_session=strategy)
            )
            assert session.execute(statement).rowcount == 0
            gone = delete(Memo).where(Memo.id == memos.bob)
            assert (
                session.execute(gone.execution_options(synchronize_session=strategy)).rowcount == 0
            )
            session.commit()
    assert snapshot(tenancy, Memo) == before


def test_insert_from_select_into_a_row_scoped_model_is_refused(tenancy, memos):
    before = snapshot(tenancy, Memo)
    with as_user(tenancy) as session:
        copy = insert(Memo).from_select(["title", "owner_id"], select(Memo.title, Memo.owner_id))
        with pytest.raises(UnscopedStatement):
            session.execute(copy)
        session.rollback()
    assert snapshot(tenancy, Memo) == before


def test_whole_tenant_sessions_take_every_owners_rows_whoever_asks(tenancy, memos):
    # A platform admin's request (a principal of its own) or a script (none) purging, exporting
    # or renaming a tenant: its session must see every owner's rows, and the tenant's only.
    from fastapi_tenancy.context import TenantContext, bind, unbind

    for claims in ({"sub": "root"}, {}):
        token = bind(TenantContext(id=None, claims=claims))
        try:
            with tenancy.make_session(tenancy.whole_tenant_scope(ACME)) as session:
                assert titles(session) == ["alice-memo", "bob-memo"]
                assert session.get(Memo, memos.globex_alice) is None
                assert session.execute(select(func.count()).select_from(MemoReply)).scalar() == 2
        finally:
            unbind(token)


def test_a_script_lifting_the_owner_keeps_its_tenant_and_is_audited(tenancy, memos, caplog):
    from fastapi_tenancy import TenancyMisuse

    with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
        with with_tenant(ACME), tenancy.session(lift=["owner"]) as session:
            assert titles(session) == ["alice-memo", "bob-memo"]
            assert session.get(Memo, memos.globex_alice) is None
            assert session.execute(update(Memo).values(title="t")).rowcount == 2
            session.rollback()
        with tenancy.session(tenant=GLOBEX, lift=["owner"]) as session:
            assert titles(session) == ["globex-alice-memo"]
    lifted = [r for r in caplog.records if r.tenancy_event == "row_scope_lifted"]
    assert [r.tenancy_tenant for r in lifted] == [ACME, GLOBEX]
    with pytest.raises(TenancyMisuse):
        tenancy.session(tenant=ACME, lift=["nobody"])
