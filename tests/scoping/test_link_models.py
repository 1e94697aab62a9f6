"""Many-to-many relationships between tenant models: the link rows are tenant rows too.

A link model that is ``TenantScoped`` is stamped with the session's tenant when the unit of
work inserts it for a relationship, its foreign keys are checked like any others, and reads
through it (lazy, ``selectinload``, ``joinedload``, ``join()``) reach only the tenant's rows. A
plain link table between tenant models is refused when the mappers are configured.
"""

# No "from __future__ import annotations": SQLModel resolves relationships from real annotations.

from dataclasses import dataclass
from typing import Any

import pytest
from models import ACME, GLOBEX, KEY_TYPE, Keyed
from sqlalchemy import Column, ForeignKey, Table, func, select
from sqlalchemy.orm import configure_mappers, joinedload, registry, selectinload
from sqlalchemy.orm import relationship as sqlalchemy_relationship
from sqlmodel import Field, Relationship, SQLModel

from fastapi_tenancy import (
    Access,
    CrossTenantWrite,
    HeaderResolver,
    SessionScope,
    Tenancy,
    TenancyMisuse,
)

link_registry = registry()


class LinkBase(SQLModel, registry=link_registry):
    """Base of this module's tables: their own registry and metadata."""


class PostTag(LinkBase, Keyed, table=True):
    __tablename__ = "links_post_tag"

    post_id: int | None = Field(default=None, foreign_key="links_post.id", primary_key=True)
    tag_id: int | None = Field(default=None, foreign_key="links_tag.id", primary_key=True)


class Post(LinkBase, Keyed, table=True):
    __tablename__ = "links_post"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    tags: list["Tag"] = Relationship(back_populates="posts", link_model=PostTag)


class Tag(LinkBase, Keyed, table=True):
    __tablename__ = "links_tag"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    posts: list[Post] = Relationship(back_populates="tags", link_model=PostTag)


@dataclass(frozen=True)
class Seed:
    acme_post: int
    acme_tag: int
    globex_post: int
    globex_tag: int


@pytest.fixture
def links(engine, create_tables) -> tuple[Tenancy, Seed]:
    create_tables(engine, link_registry.metadata)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], key_type=KEY_TYPE)
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        rows = {
            tenant: (Post(name="post", tenant_id=tenant), Tag(name="tag", tenant_id=tenant))
            for tenant in (ACME, GLOBEX)
        }
        for post, tag in rows.values():
            session.add_all([post, tag])
            session.flush()
            session.add(PostTag(post_id=post.id, tag_id=tag.id, tenant_id=post.tenant_id))
        session.commit()
        seed = Seed(
            acme_post=rows[ACME][0].id,
            acme_tag=rows[ACME][1].id,
            globex_post=rows[GLOBEX][0].id,
            globex_tag=rows[GLOBEX][1].id,
        )
    return tenancy, seed


def all_links(tenancy: Tenancy) -> list[tuple[Any, ...]]:
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        return [
            tuple(row)
            for row in session.execute(
                select(PostTag.tenant_id, PostTag.post_id, PostTag.tag_id).order_by(
                    PostTag.tenant_id, PostTag.post_id
                )
            )
        ]


def test_a_link_row_the_unit_of_work_inserts_is_stamped_with_the_tenant(links):
    tenancy, seed = links
    with tenancy.make_session(SessionScope(ACME)) as session:
        post = Post(name="new")
        post.tags.append(session.get(Tag, seed.acme_tag))
        session.add(post)
        session.commit()
        new_id = post.id

    assert (ACME, new_id, seed.acme_tag) in all_links(tenancy)


@pytest.mark.parametrize(
    "load",
    ["lazy", "selectinload", "joinedload"],
)
def test_loads_through_a_link_model_reach_only_the_tenants_rows(links, load):
    tenancy, seed = links
    options = {
        "lazy": (),
        "selectinload": (selectinload(Post.tags),),
        "joinedload": (joinedload(Post.tags),),
    }[load]
    with tenancy.make_session(SessionScope(ACME)) as session:
        posts = session.execute(select(Post).options(*options)).unique().scalars().all()
        tags = {(post.id, tag.id) for post in posts for tag in post.tags}

    assert tags == {(seed.acme_post, seed.acme_tag)}


def test_a_join_and_a_count_through_a_link_model_see_only_the_tenants_links(links):
    tenancy, seed = links
    with tenancy.make_session(SessionScope(ACME)) as session:
        pairs = session.execute(select(Post.id, Tag.id).join(Post.tags)).all()
        count = session.execute(select(func.count()).select_from(PostTag)).scalar_one()

    assert [tuple(pair) for pair in pairs] == [(seed.acme_post, seed.acme_tag)]
    assert count == 1


def test_removing_from_a_many_to_many_collection_deletes_only_the_tenants_link(links):
    tenancy, seed = links
    with tenancy.make_session(SessionScope(ACME)) as session:
        post = session.get(Post, seed.acme_post)
        post.tags.clear()
        session.commit()

    assert all_links(tenancy) == [(GLOBEX, seed.globex_post, seed.globex_tag)]


def test_a_link_to_another_tenants_row_is_refused(links):
    tenancy, seed = links
    before = all_links(tenancy)
    with tenancy.make_session(SessionScope(ACME)) as session:
        session.add(PostTag(post_id=seed.acme_post, tag_id=seed.globex_tag))
        with pytest.raises(CrossTenantWrite):
            session.flush()

    assert all_links(tenancy) == before


def test_a_plain_link_table_between_tenant_models_is_refused_when_mappers_configure():
    plain = registry()

    class PlainBase(SQLModel, registry=plain):
        pass

    link = Table(
        "links_plain",
        plain.metadata,
        Column("a_id", ForeignKey("links_plain_a.id"), primary_key=True),
        Column("b_id", ForeignKey("links_plain_b.id"), primary_key=True),
    )

    class PlainA(PlainBase, Keyed, table=True):
        __tablename__ = "links_plain_a"
        id: int | None = Field(default=None, primary_key=True)

    class PlainB(PlainBase, Keyed, table=True):
        __tablename__ = "links_plain_b"
        id: int | None = Field(default=None, primary_key=True)

    from sqlalchemy.orm import relationship

    PlainA.bs = relationship(PlainB, secondary=link)  # type: ignore[attr-defined]
    try:
        with pytest.raises(TenancyMisuse, match="make the link a tenant model"):
            configure_mappers()
    finally:
        plain.dispose()  # the failed mappers would stop every later configuration


class Membership(LinkBase, Keyed, table=True):
    """A link model with a surrogate key of its own (SQLModel's usual spelling)."""

    __tablename__ = "links_membership"

    id: int | None = Field(default=None, primary_key=True)
    post_id: int | None = Field(default=None, foreign_key="links_post.id")
    tag_id: int | None = Field(default=None, foreign_key="links_tag.id")


Post.member_tags = sqlalchemy_relationship(  # type: ignore[attr-defined]
    Tag, secondary=Membership.__table__, viewonly=True
)


def test_loads_through_a_link_model_with_a_surrogate_key_reach_only_the_tenants_rows(links):
    tenancy, seed = links
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        for tenant, post, tag in (
            (ACME, seed.acme_post, seed.acme_tag),
            (GLOBEX, seed.globex_post, seed.globex_tag),
        ):
            session.add(Membership(post_id=post, tag_id=tag, tenant_id=tenant))
        session.commit()
    with tenancy.make_session(SessionScope(ACME)) as session:
        posts = session.execute(select(Post).options(selectinload(Post.member_tags))).scalars()
        tags = {(post.id, tag.id) for post in posts for tag in post.member_tags}

    assert tags == {(seed.acme_post, seed.acme_tag)}
