"""docs/models-and-scoping.md, tenant-first keys: the page's Board and Card, on every database.

The tables' keys lead with the tenant, the ORM's key stays the id, and the UPDATE and DELETE
the unit of work sends name the tenant, as the page says.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event, inspect

from docs.examples.models_tenant_first import Board, Card, metadata
from fastapi_tenancy import HeaderResolver, SessionScope, Tenancy


def test_the_pages_models_keep_the_tenant_in_the_key_and_in_every_write(
    engine: Engine, create_tables: Any
) -> None:
    create_tables(engine, metadata)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()])
    assert [c.name for c in Board.__table__.primary_key.columns] == ["tenant_id", "id"]
    assert [c.name for c in inspect(Board).primary_key] == ["id"]
    ids = {}
    for tenant in ("acme", "globex"):
        with tenancy.make_session(SessionScope(tenant)) as session:
            board = Board(name="roadmap")
            session.add(Card(title="ship", board=board))
            session.commit()
            ids[tenant] = board.id
    assert ids["acme"] != ids["globex"]

    writes: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.startswith(("UPDATE", "DELETE")):
            writes.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with tenancy.make_session(SessionScope("acme")) as session:
            assert session.get(Board, ids["globex"]) is None
            board = session.get(Board, ids["acme"])
            assert board is not None
            board.name = "plans"
            session.delete(board.cards[0])
            session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert len(writes) == 2
    assert all("WHERE boards.tenant_id = " in w or "WHERE cards.tenant_id = " in w for w in writes)
