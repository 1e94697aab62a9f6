"""Tenant-first keys: the table's key is ``(tenant_id, id)``, the ORM's identity stays ``id``.

Every UPDATE and DELETE the unit of work sends names its tenant (what keeps a Citus statement
on one shard), ``session.get(Model, id)`` and relationships work as before, ids are numbered by
the database on each of SQLite, PostgreSQL and MariaDB, and every way to reach another tenant's
row by its key (get, bulk UPDATE by key, a core UPDATE or DELETE, a forged object, a move) leaves
that row as it was.
"""

# No "from __future__ import annotations": SQLModel resolves relationships from real annotations.

import re
from dataclasses import dataclass
from typing import Any

import pytest
from models import ACME, GLOBEX, KEY_TYPE, Keyed, Project, World
from sqlalchemy import BigInteger, delete, event, inspect, select, text, update
from sqlalchemy.orm import registry
from sqlmodel import Field, Relationship, SQLModel

from fastapi_tenancy import (
    Access,
    CrossTenantWrite,
    HeaderResolver,
    SessionScope,
    Tenancy,
    TenancyMisuse,
    identity_key,
    tenant_foreign_key,
)
from fastapi_tenancy.wall import record_fan_out

first_registry = registry()


class FirstBase(SQLModel, registry=first_registry):
    """Base of this module's tables: their own registry and metadata."""


class Board(FirstBase, Keyed, table=True):
    __tablename__ = "first_board"
    __tenant_first_key__ = True

    id: int | None = identity_key()
    name: str = Field(max_length=50)

    cards: list["Card"] = Relationship(
        back_populates="board", sa_relationship_kwargs={"foreign_keys": "[Card.board_id]"}
    )


class Card(FirstBase, Keyed, table=True):
    __tablename__ = "first_card"
    __tenant_first_key__ = True
    # FOREIGN KEY (tenant_id, board_id) REFERENCES first_board (tenant_id, id): the board's key
    __table_args__ = (tenant_foreign_key("board_id", "first_board.id"),)

    id: int | None = identity_key()
    title: str = Field(max_length=50)
    board_id: int | None = Field(default=None, sa_type=BigInteger)

    board: Board | None = Relationship(
        back_populates="cards", sa_relationship_kwargs={"foreign_keys": "[Card.board_id]"}
    )


class Pin(FirstBase, Keyed, table=True):
    """A key of two columns, no counter: the tenant leads it, nothing else changes."""

    __tablename__ = "first_pin"
    __tenant_first_key__ = True

    board_id: int = Field(primary_key=True, sa_type=BigInteger)
    slot: int = Field(primary_key=True)
    label: str = Field(max_length=50)


@dataclass(frozen=True)
class Seed:
    acme_board: int
    acme_card: int
    globex_board: int
    globex_card: int


@pytest.fixture
def boards(engine, create_tables) -> tuple[Tenancy, Seed]:
    create_tables(engine, first_registry.metadata)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], key_type=KEY_TYPE)
    ids = {}
    for tenant in (ACME, GLOBEX):
        with tenancy.make_session(SessionScope(tenant)) as session:
            board = Board(name="board")
            card = Card(title="card", board=board)
            session.add_all([board, card, Pin(board_id=1, slot=1, label="pin")])
            session.commit()
            ids[tenant] = (board.id, card.id)
    seed = Seed(ids[ACME][0], ids[ACME][1], ids[GLOBEX][0], ids[GLOBEX][1])
    return tenancy, seed


def rows(tenancy: Tenancy) -> list[tuple[Any, ...]]:
    """Every board and card, read unscoped."""
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        found = [
            ("board", row.tenant_id, row.id, row.name)
            for row in session.execute(select(Board).order_by(Board.id)).scalars()
        ]
        found += [
            ("card", row.tenant_id, row.id, row.title, row.board_id)
            for row in session.execute(select(Card).order_by(Card.id)).scalars()
        ]
        return found


def test_the_table_key_leads_with_the_tenant_and_the_identity_stays_the_declared_key():
    for model, declared in ((Board, ["id"]), (Card, ["id"]), (Pin, ["board_id", "slot"])):
        table_key = [column.name for column in model.__table__.primary_key.columns]
        assert table_key == ["tenant_id", *declared]
        assert [column.name for column in inspect(model).primary_key] == declared


def test_the_database_keeps_the_tenant_in_the_key(boards, engine):
    keys = inspect(engine).get_pk_constraint("first_board")["constrained_columns"]
    if engine.dialect.name == "sqlite":
        # SQLite numbers only a lone INTEGER PRIMARY KEY: (tenant_id, id) is a unique key
        assert keys == ["id"]
        uniques = inspect(engine).get_unique_constraints("first_board")
        assert [u["column_names"] for u in uniques] == [["tenant_id", "id"]]
    else:
        assert keys == ["tenant_id", "id"]
    assert inspect(engine).get_pk_constraint("first_pin")["constrained_columns"] == [
        "tenant_id",
        "board_id",
        "slot",
    ]


def test_ids_are_numbered_by_the_database_and_identity_is_the_id(boards):
    tenancy, seed = boards
    assert len({seed.acme_board, seed.globex_board}) == 2
    with tenancy.make_session(SessionScope(ACME)) as session:
        board = session.get(Board, seed.acme_board)
        assert board is not None
        assert inspect(board).identity == (seed.acme_board,)
        assert [card.id for card in board.cards] == [seed.acme_card]
        more = Board(name="more")
        session.add(more)
        session.commit()
        assert more.id not in (None, seed.acme_board, seed.globex_board)


def test_every_update_and_delete_of_the_unit_of_work_names_the_tenant(boards, engine):
    tenancy, seed = boards
    sent: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("UPDATE", "DELETE")):
            sent.append((statement, context.compiled_parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with tenancy.make_session(SessionScope(ACME)) as session:
            board = session.get(Board, seed.acme_board)
            card = session.get(Card, seed.acme_card)
            board.name = "renamed"
            card.board = None
            session.flush()
            card.board = board
            session.flush()
            session.delete(card)
            session.execute(update(Board), [{"id": seed.acme_board, "name": "bulk"}])
            session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert len(sent) == 5  # rename, unlink, relink, delete, bulk by key
    for statement, parameters in sent:
        where = statement.split("WHERE", 1)[1]
        assert "tenant_id" in where, statement
        assert all(ACME in row.values() for row in parameters), (statement, parameters)


def test_get_by_id_reads_only_the_tenants_row(boards):
    tenancy, seed = boards
    with tenancy.make_session(SessionScope(ACME)) as session:
        assert session.get(Board, seed.acme_board) is not None
        assert session.get(Board, seed.globex_board) is None
        assert session.get(Card, seed.globex_card) is None
        assert session.get(Pin, (1, 1)) is not None
        assert session.get(Pin, (1, 1)).tenant_id == ACME


def _bulk_update(session, seed):
    session.execute(update(Board), [{"id": seed.globex_board, "name": "hijacked"}])


def _bulk_update_naming_the_tenant(session, seed):
    session.execute(
        update(Board), [{"id": seed.globex_board, "tenant_id": GLOBEX, "name": "hijacked"}]
    )


def _core_update(session, seed):
    session.execute(update(Board).where(Board.id == seed.globex_board).values(name="hijacked"))


def _core_delete(session, seed):
    session.execute(delete(Card).where(Card.id == seed.globex_card))


def _forged_update(session, seed):
    forged = session.merge(Board(id=seed.globex_board, name="hijacked"), load=False)
    forged.name = "hijacked again"


def _forged_delete(session, seed):
    session.delete(session.merge(Card(id=seed.globex_card, title="card"), load=False))


def _forged_with_the_other_tenant(session, seed):
    forged = session.merge(
        Board(id=seed.globex_board, tenant_id=GLOBEX, name="hijacked"), load=False
    )
    forged.name = "hijacked again"


def _card_moved_onto_the_other_board(session, seed):
    session.get(Card, seed.acme_card).board_id = seed.globex_board


def _text_update(session, seed):
    session.execute(
        text("UPDATE first_board SET name = 'hijacked' WHERE id = :id"), {"id": seed.globex_board}
    )


@pytest.mark.parametrize(
    "attack",
    [
        _bulk_update,
        _bulk_update_naming_the_tenant,
        _core_update,
        _core_delete,
        _forged_update,
        _forged_delete,
        _forged_with_the_other_tenant,
        _card_moved_onto_the_other_board,
        _text_update,
    ],
)
def test_another_tenants_row_cannot_be_changed_by_its_key(boards, attack):
    tenancy, seed = boards
    before = rows(tenancy)
    with tenancy.make_session(SessionScope(ACME)) as session:
        try:
            attack(session, seed)
            session.commit()
        except Exception:  # refused on the way (which refusal: the tests of the wall)
            session.rollback()
    after = rows(tenancy)

    assert [row for row in after if row[1] == GLOBEX] == [row for row in before if row[1] == GLOBEX]


def test_the_router_check_passes_every_statement_on_tenant_first_models(boards):
    tenancy, seed = boards
    with record_fan_out() as fanned, tenancy.make_session(SessionScope(ACME)) as session:
        board = session.get(Board, seed.acme_board)
        board.name = "renamed"
        card = board.cards[0]
        card.board = None
        session.flush()
        session.delete(card)
        session.add(Card(title="new", board=board))
        session.execute(update(Board), [{"id": seed.acme_board, "name": "bulk"}])
        session.execute(select(Board).join(Board.cards)).all()
        session.commit()

    assert fanned == []


def test_the_router_check_sees_the_unit_of_work_of_an_id_keyed_model_fan_out(
    session_for, world: World
):
    with record_fan_out() as fanned, session_for(ACME) as session:
        session.get(Project, world.apollo).name = "renamed"  # UPDATE ... WHERE id = ?
        session.flush()
        session.rollback()

    assert [(entry.tenant, entry.tables) for entry in fanned] == [(ACME, ("scoping_project",))]
    assert re.match(r"UPDATE (\S+\.)?scoping_project ", fanned[0].sql), fanned[0].sql


def test_moving_a_row_to_another_tenant_is_refused(boards):
    tenancy, seed = boards
    with tenancy.make_session(SessionScope(ACME)) as session:
        session.get(Board, seed.acme_board).tenant_id = GLOBEX
        with pytest.raises(CrossTenantWrite):
            session.flush()


def test_a_shared_rows_model_cannot_lead_its_key_with_the_tenant():
    with pytest.raises(TenancyMisuse, match="__shared_rows__ and __tenant_first_key__"):

        class SharedFirst(FirstBase, Keyed, table=True):
            __tablename__ = "first_shared"
            __tenant_first_key__ = True
            __shared_rows__ = True

            id: int | None = identity_key()

    # refused before mapping: no half-made mapper is left in the registry for others to trip on
    assert {mapper.class_.__name__ for mapper in first_registry.mappers} == {
        "Board",
        "Card",
        "Pin",
    }
