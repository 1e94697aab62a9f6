"""Attacks across tenants placed apart: every pair of strategies (shared tables, a schema of its
own, a database of its own), on SQLite (no schemas there), PostgreSQL and MariaDB. Each tenant
tries every spelling we know of to read or write the other's rows; each is refused or finds
nothing, and both tenants' rows are as seeded afterwards."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from isolation_models import Comment, Doc, Member, Plan
from isolation_support import PlaceTenants
from sqlalchemy import MetaData, Sequence, delete, func, insert, text, update
from sqlmodel import select

from fastapi_tenancy import CrossTenantWrite, Tenancy, TenancyError, UnscopedStatement
from fastapi_tenancy.isolation import TENANT_SCHEMA

STRATEGIES = ("shared", "schema", "database")
PAIRS = list(itertools.product(STRATEGIES, repeat=2))


def skip_schemas_on_sqlite(backend: str, *strategies: str) -> None:
    if backend == "sqlite" and "schema" in strategies:
        pytest.skip("SQLite has no schemas (its refusal is tested on its own)")


def refused(attempt: Callable[[], Any], *errors: type[TenancyError]) -> TenancyError:
    with pytest.raises(errors or (UnscopedStatement, CrossTenantWrite)) as raised:
        attempt()
    return raised.value


def rows_of(tenancy: Tenancy, key: str) -> tuple[list[Any], ...]:
    """What tenant ``key`` sees of each table, as (tenant, text) pairs, sorted."""
    with tenancy.session(tenant=key) as session:
        docs = sorted((d.tenant_id, d.title) for d in session.exec(select(Doc)))
        comments = sorted((c.tenant_id, c.body) for c in session.exec(select(Comment)))
        members = sorted((m.tenant_id, m.email) for m in session.exec(select(Member)))
    return docs, comments, members


def seeded(key: str) -> tuple[list[Any], ...]:
    return (
        [(key, f"{key}-doc")],
        [(key, f"{key}-comment")],
        [(key, f"someone@{key}.test")],
    )


@pytest.mark.parametrize(("mine", "theirs"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_a_tenant_reaches_none_of_another_tenants_rows_whatever_their_strategies(
    place_tenants: PlaceTenants, backend: str, database: Any, mine: str, theirs: str
) -> None:
    skip_schemas_on_sqlite(backend, mine, theirs)
    tenancy = place_tenants({"acme": mine, "globex": theirs})
    prefix = f"{database.name or 'iso'}_"
    their_schema = f"{prefix}globex"
    my_place = tenancy.placement_of("acme")
    assert my_place is not None

    assert rows_of(tenancy, "acme") == seeded("acme")
    assert rows_of(tenancy, "globex") == seeded("globex")

    with tenancy.session(tenant="acme") as session:
        # Relationship loads and joins stay in the tenant's place.
        doc = session.exec(select(Doc)).one()
        assert [c.body for c in doc.comments] == ["acme-comment"]
        joined = session.exec(select(Comment, Doc).join(Doc)).all()
        assert [(c.body, d.title) for c, d in joined] == [("acme-comment", "acme-doc")]
        assert session.exec(select(Plan.name)).all() == ["free"]

        # The translation is the session's: another schema, or none, is refused.
        for translation in ({TENANT_SCHEMA: their_schema}, {TENANT_SCHEMA: None}, {}):
            if translation == my_place.translate_map:
                continue
            refused(
                lambda t=translation: session.exec(
                    select(Doc), execution_options={"schema_translate_map": t}
                ).all()
            )
        session.rollback()

        # Another tenant's schema named outright, in a copy of the table or a function.
        theirs_copy = Doc.__table__.to_metadata(MetaData(), schema=their_schema)
        refused(lambda: session.execute(select(theirs_copy)).all())
        refused(
            lambda: session.execute(insert(theirs_copy).values(title="planted", tenant_id="acme"))
        )
        session.rollback()
        plain = MetaData()
        refused(
            lambda: session.execute(
                select(getattr(func, their_schema).count()).select_from(Doc)
            ).all()
        )
        session.rollback()
        if backend == "postgres":
            their_sequence = Sequence("iso_doc_id_seq", schema=their_schema)
            refused(lambda: session.execute(select(their_sequence.next_value())).all())
            session.rollback()

        # The table named without the placeholder reaches the shared tables' copy of it.
        unplaced = Doc.__table__.to_metadata(plain, schema=None)
        if my_place.strategy.value == "shared":
            rows = session.execute(
                select(unplaced.c.title).where(unplaced.c.tenant_id == "acme")
            ).all()
            assert [r.title for r in rows] == ["acme-doc"]
        else:
            refused(
                lambda: session.execute(
                    select(unplaced.c.title).where(unplaced.c.tenant_id == "acme")
                ).all()
            )
        session.rollback()

        # The placed tables sent to a database that is not the tenant's own.
        their_place = tenancy.placement_of("globex")
        assert their_place is not None
        elsewhere = [tenancy.engine] if my_place.url is not None else []
        if their_place.url is not None:
            elsewhere.append(tenancy._tenant_engine(tenancy.isolation, their_place.url))  # type: ignore[arg-type]
        for bind in elsewhere:
            refused(lambda b=bind: session.execute(select(Doc), bind_arguments={"bind": b}).all())
            session.rollback()
            refused(
                lambda b=bind: session.execute(
                    insert(Doc).values(title="planted"), bind_arguments={"bind": b}
                )
            )
            session.rollback()

        # Raw SQL and the raw connection are refused in a tenant session.
        raw = text(f"SELECT title FROM {their_schema}.iso_doc")  # noqa: S608 (the attack)
        refused(lambda: session.execute(raw).all())
        session.rollback()
        refused(session.connection)

        # Writes: naming the other tenant, moving a row, bulk changes.
        refused(lambda: session.add(Doc(title="planted", tenant_id="globex")), CrossTenantWrite)
        planted = Doc(title="planted")
        session.add(planted)
        planted.tenant_id = "globex"
        refused(session.flush, CrossTenantWrite)
        session.rollback()
        refused(lambda: session.execute(update(Doc).values(tenant_id="globex")), CrossTenantWrite)
        session.rollback()
        session.execute(update(Doc).values(title="acme-doc"))
        session.execute(delete(Comment).where(Comment.body == "globex-comment"))
        session.commit()

    assert rows_of(tenancy, "acme") == seeded("acme")
    assert rows_of(tenancy, "globex") == seeded("globex")
