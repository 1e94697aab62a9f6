"""Models of docs/models-and-scoping.md#keys-that-lead-with-the-tenant-__tenant_first_key__.

The tables live in a registry of their own (``metadata`` below), so they never mix with other
SQLModel tables in the same process.
"""

# No "from __future__ import annotations": SQLModel resolves relationships from real annotations.

from sqlalchemy import BigInteger, MetaData
from sqlalchemy.orm import registry
from sqlmodel import Field, Relationship, SQLModel

from fastapi_tenancy import TenantScoped, identity_key, tenant_foreign_key

first_registry = registry()


class DocsModel(SQLModel, registry=first_registry):
    """Base of this page's tables."""


metadata: MetaData = first_registry.metadata


# --8<-- [start:board]
class Board(DocsModel, TenantScoped, table=True):
    __tablename__ = "boards"
    __tenant_first_key__ = True  # PRIMARY KEY (tenant_id, id); the ORM's key stays id

    id: int | None = identity_key()  # a bigint identity
    name: str = Field(max_length=100)

    cards: list["Card"] = Relationship(
        back_populates="board", sa_relationship_kwargs={"foreign_keys": "[Card.board_id]"}
    )


class Card(DocsModel, TenantScoped, table=True):
    __tablename__ = "cards"
    __tenant_first_key__ = True
    # FOREIGN KEY (tenant_id, board_id) REFERENCES boards (tenant_id, id): the board's key
    __table_args__ = (tenant_foreign_key("board_id", "boards.id"),)

    id: int | None = identity_key()
    title: str = Field(max_length=200)
    board_id: int = Field(sa_type=BigInteger)

    board: Board | None = Relationship(
        back_populates="cards", sa_relationship_kwargs={"foreign_keys": "[Card.board_id]"}
    )


# --8<-- [end:board]
