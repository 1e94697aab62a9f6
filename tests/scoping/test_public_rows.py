"""Public or owned: a row scope whose rows their owner may publish to the whole tenant.

The world, in acme: alice's draft and alice's published post, bob's draft and bob's published
post; in globex, a published post of a user also called alice. Alice, in acme, reads her own
posts and bob's published one, and writes only her own. Every attack is alice reading bob's
draft or globex's post, or writing bob's rows; each must fail on every database and leave
every row as it was.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from models import ACME, GLOBEX, KEY_TYPE, Post, PostComment, seed_rows, snapshot
from sqlalchemy import bindparam, delete, func, or_, select, text, true, update
from sqlalchemy.orm import make_transient_to_detached, registry, selectinload
from sqlmodel import Field, SQLModel

from fastapi_tenancy import (
    CrossScopeWrite,
    CrossTenantWrite,
    SessionScope,
    Tenancy,
    TenancyMisuse,
    TenantScoped,
    UnscopedStatement,
    owner_field,
)
from fastapi_tenancy.row_scopes import row_scope_param
from fastapi_tenancy.wall import TENANT_PARAM

ALICE = (("owner", "alice"),)
BOB = (("owner", "bob"),)
POSTS = [  # tenant, owner, published, title
    (ACME, "alice", False, "alice-draft"),
    (ACME, "alice", True, "alice-public"),
    (ACME, "bob", False, "bob-draft"),
    (ACME, "bob", True, "bob-public"),
    (GLOBEX, "alice", True, "globex-public"),
]


@pytest.fixture
def posts(tenancy: Tenancy, create_tables) -> dict[str, int]:
    create_tables(tenancy.engine, Post, PostComment)
    posts = [
        Post(tenant_id=tenant, owner_id=owner, published=published, title=title)
        for tenant, owner, published, title in POSTS
    ]
    ids = dict(zip([post.title for post in posts], seed_rows(tenancy, *posts), strict=True))
    seed_rows(
        tenancy, PostComment(tenant_id=ACME, owner_id="bob", post_id=ids["bob-draft"], body="b")
    )
    return ids


def as_user(tenancy: Tenancy, values: Any = ALICE, **scope: Any):
    return tenancy.make_session(SessionScope(ACME, row_values=values, **scope))


def titles(session, statement=None) -> list[str]:
    query = statement if statement is not None else select(Post.title)
    return sorted(session.execute(query).scalars())


def test_a_user_reads_their_own_posts_and_the_published_ones_of_their_tenant(tenancy, posts):
    with as_user(tenancy) as session:
        assert titles(session) == ["alice-draft", "alice-public", "bob-public"]
        assert session.get(Post, posts["bob-draft"]) is None
        assert session.get(Post, posts["globex-public"]) is None
        assert session.get(Post, posts["bob-public"]).title == "bob-public"
        assert session.execute(select(func.count(Post.id))).scalar_one() == 3
        sub = select(Post.title).where(Post.id.in_(select(PostComment.post_id)))
        assert titles(session, sub) == []  # bob's comment is bob's
    with as_user(tenancy, BOB) as session:
        assert titles(session) == ["alice-public", "bob-draft", "bob-public"]


def test_relationship_loads_keep_to_public_or_owned(tenancy, posts):
    with as_user(tenancy, BOB) as session:
        comment = session.execute(select(PostComment)).scalar_one()
        assert comment.post.title == "bob-draft"
    with as_user(tenancy) as session:
        loaded = session.execute(select(Post).options(selectinload(Post.comments))).scalars()
        assert all(post.comments == [] for post in loaded)


def test_a_published_post_of_another_owner_cannot_be_changed_or_deleted(tenancy, posts):
    before = snapshot(tenancy, Post, PostComment)
    with as_user(tenancy) as session:
        post = session.get(Post, posts["bob-public"])
        post.title = "hijacked"
        with pytest.raises(CrossScopeWrite):
            session.flush()
        session.rollback()
        post = session.get(Post, posts["bob-public"])
        post.published = False
        with pytest.raises(CrossScopeWrite):
            session.flush()
        session.rollback()
        session.delete(session.get(Post, posts["bob-public"]))
        with pytest.raises(CrossScopeWrite):
            session.flush()
        session.rollback()
        for strategy in ("evaluate", "fetch", False):
            changed = session.execute(
                update(Post).where(Post.id == posts["bob-public"]).values(title="x"),
                execution_options={"synchronize_session": strategy},
            )
            assert changed.rowcount == 0
            gone = session.execute(
                delete(Post).where(Post.published == true()),
                execution_options={"synchronize_session": strategy},
            )
            assert gone.rowcount == 1  # alice's own published post only
            session.rollback()
    assert snapshot(tenancy, Post, PostComment) == before


def test_a_forged_object_cannot_write_a_published_post(tenancy, posts):
    before = snapshot(tenancy, Post)
    with as_user(tenancy) as session:
        forged = Post(id=posts["bob-public"], tenant_id=ACME, owner_id="alice", title="forged")
        make_transient_to_detached(forged)
        planted = session.merge(forged, load=False)
        planted.title = "hijacked"
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
    assert snapshot(tenancy, Post) == before


def test_a_comment_may_point_at_a_published_post_and_never_at_a_draft(tenancy, posts):
    with as_user(tenancy) as session:
        session.add(PostComment(body="nice", post_id=posts["bob-public"]))
        session.flush()  # a published post is one alice may point at
        session.add(PostComment(body="sneaky", post_id=posts["bob-draft"]))
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()
        # pointing at bob's published post does not make it alice's to write
        session.add(PostComment(body="nice", post_id=posts["bob-public"]))
        session.flush()
        forged = Post(id=posts["bob-public"], tenant_id=ACME, owner_id="alice", title="forged")
        make_transient_to_detached(forged)
        session.merge(forged, load=False).title = "hijacked"
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()


def test_the_wall_accepts_the_public_arm_only_as_declared_and_only_for_reads(tenancy, posts):
    table = Post.__table__
    owner = table.c.owner_id == bindparam(row_scope_param("owner"))
    tenant = table.c.tenant_id == bindparam(TENANT_PARAM)
    declared = select(table.c.title).where(tenant, or_(owner, table.c.published == true()))
    by_mistake = select(table.c.title).where(or_(tenant, table.c.published == true()), owner)
    other_flag = select(table.c.title).where(tenant, or_(owner, table.c.id == table.c.id))
    public_write = (
        update(table).where(tenant, or_(owner, table.c.published == true())).values(title="x")
    )
    with as_user(tenancy) as session:
        assert titles(session, declared) == ["alice-draft", "alice-public", "bob-public"]
        with pytest.raises(UnscopedStatement):
            session.execute(by_mistake)  # the policy OR-ed with the tenant filter
        with pytest.raises(UnscopedStatement):
            session.execute(other_flag)
        before = snapshot(tenancy, Post)
        changed = session.execute(public_write)  # the kit adds the owner filter of a write
        assert changed.rowcount == 2
        session.rollback()
        assert snapshot(tenancy, Post) == before
        with pytest.raises(UnscopedStatement):
            session.execute(text("SELECT title FROM scoping_post"))


def test_a_lifted_session_reads_and_writes_every_post_of_its_tenant_only(tenancy, posts):
    with as_user(tenancy, lifted=frozenset({"owner"})) as session:
        assert titles(session) == ["alice-draft", "alice-public", "bob-draft", "bob-public"]


def test_the_audit_record_names_the_public_arm(engine, posts, caplog):
    audited = Tenancy(engine, resolvers=[], key_type=KEY_TYPE, audit_statements=True)
    scope = SessionScope(ACME, row_values=ALICE)
    with caplog.at_level(logging.INFO, "fastapi_tenancy.audit"), audited.make_session(scope) as s:
        titles(s)
    record = next(r for r in caplog.records if r.tenancy_event == "statement_scoped")
    param = row_scope_param("owner")
    assert record.tenancy_scopes == (
        f"scoping_post.tenant_id = :{TENANT_PARAM}",
        f"scoping_post.owner_id = :{param} [OR scoping_post.published = true] (the owner)",
    )


def test_a_public_flag_must_be_a_bool_column_of_the_model():
    mapper_registry = registry()

    class Base(SQLModel, registry=mapper_registry):
        pass

    try:
        with pytest.raises(TenancyMisuse, match="no column"):

            class Missing(Base, TenantScoped, table=True):  # type: ignore[misc]
                id: int | None = Field(default=None, primary_key=True)
                owner_id: str | None = owner_field(public="shown")

        with pytest.raises(TenancyMisuse, match="must be a bool"):

            class NotBool(Base, TenantScoped, table=True):  # type: ignore[misc]
                id: int | None = Field(default=None, primary_key=True)
                owner_id: str | None = owner_field(public="shown")
                shown: str = "yes"

    finally:
        mapper_registry.dispose()
