"""Ways around the wall found by reviewing it: each is refused, or scoped, before any SQL.

Raw SQL in disguise (comment markers spelled as operators, a user type's own column spec, an
``@compiles`` construct), tables the wall would not know (a reflected copy of a tenant table, a
tenant session on an engine the ``Tenancy`` never saw), SQL changed after it was proven, the
kit's own setting statement abused, and ``merge(load=False)`` of another tenant's row.
"""

from __future__ import annotations

import gc
import logging
import warnings
from typing import Any

import pytest
from models import ACME, GLOBEX, KEY_TYPE, Keyed, Project, Task, snapshot
from scoping_places import PLACED, ROWS_STAY_IN_PLACE, sql_target
from sqlalchemy import MetaData, Table, cast, create_engine, event, select, text, update
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import column_property, make_transient_to_detached, registry
from sqlalchemy.sql.expression import ColumnClause
from sqlalchemy.types import UserDefinedType
from sqlmodel import Field, SQLModel

from fastapi_tenancy import (
    CrossTenantWrite,
    HeaderResolver,
    SessionScope,
    Tenancy,
    UnscopedStatement,
    mutable_tenant,
    with_tenant,
)
from fastapi_tenancy.isolation import TENANT_SCHEMA
from fastapi_tenancy.session import SCOPE_KEY, TenantScopedSession
from fastapi_tenancy.wall.guard import kit_statement_options


def test_comment_markers_spelled_as_operators_are_refused(tenancy, session_for, world, backend):
    markers = ["/*", "*/", "--", "a--b"] + (["#", "#>"] if backend == "mariadb" else [])
    with session_for(ACME) as session:
        for marker in markers:
            with pytest.raises(UnscopedStatement, match="custom operator"):
                session.execute(select(Project.name).where(Project.name.op(marker)("x")))
        # PostgreSQL's own symbol operators stay usable where they are not comments
        if backend == "postgres":
            session.execute(select(Project.name).where(Project.name.op("~")("^a")))


class _RawSpec(UserDefinedType[Any]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "TEXT) OR 1=1 OR (1"


def test_a_cast_to_a_type_that_renders_its_own_sql_is_refused(session_for, world):
    with session_for(ACME) as session, warnings.catch_warnings():
        # MySQL has no CAST to such types: SQLAlchemy warns that it leaves the CAST out
        warnings.filterwarnings("ignore", "Datatype .* does not support CAST", SAWarning)
        with pytest.raises(UnscopedStatement, match="get_col_spec"):
            session.execute(select(cast(Project.name, _RawSpec())))


class _Everything(ColumnClause[Any]):
    inherit_cache = True


@compiles(_Everything)
def _compile_everything(element: Any, compiler: Any, **kw: Any) -> str:
    return "1=1 OR 1"


def test_a_construct_compiled_by_a_compiles_function_is_refused(session_for, world):
    with session_for(ACME) as session, pytest.raises(UnscopedStatement, match="@compiles"):
        session.execute(select(Project.name).where(_Everything("x")))


def test_a_reflected_copy_of_a_tenant_table_is_a_tenant_table(tenancy, session_for, world):
    reflected = Table("scoping_project", MetaData(), autoload_with=tenancy.engine)
    if PLACED:  # a copy without the tenant schema reaches the shared tables: never acme's own
        with session_for(ACME) as session:
            for statement in (
                select(reflected.c.name),
                select(reflected.c.name).where(reflected.c.tenant_id == ACME),
            ):
                with pytest.raises(UnscopedStatement, match="without its tenant schema"):
                    session.execute(statement)
        return
    with session_for(ACME) as session:
        with pytest.raises(UnscopedStatement, match="without a filter"):
            session.execute(select(reflected.c.name))
        names = session.execute(
            select(reflected.c.name).where(reflected.c.tenant_id == ACME)
        ).scalars()
        assert list(names) == ["apollo"]
        with pytest.raises(UnscopedStatement):
            session.execute(select(reflected.c.name).where(reflected.c.tenant_id == GLOBEX)).all()


def test_a_tenant_session_on_an_engine_the_tenancy_never_saw_is_still_gated(
    database, world, tenancy
):
    other = database.create_engine()
    try:
        session = TenantScopedSession(other, info={SCOPE_KEY: SessionScope(ACME)})
        with session, pytest.raises(UnscopedStatement):
            session.execute(select(Project.__table__.c.name))
    finally:
        other.dispose()


def test_sql_changed_after_it_was_proven_is_refused(tenancy, session_for, world):
    def widen(conn, cursor, statement, parameters, context, executemany):
        return statement.replace("WHERE", "WHERE 1=1 OR"), parameters

    target = sql_target(tenancy.engine)
    event.listen(target, "before_cursor_execute", widen, retval=True)
    try:
        with session_for(ACME) as session, pytest.raises(UnscopedStatement, match="changed"):
            session.execute(select(Project.name)).all()
    finally:
        event.remove(target, "before_cursor_execute", widen)


def test_the_kits_setting_statement_cannot_name_another_tenant(session_for, world):
    for setting in (
        text("SELECT set_config('fastapi_tenancy.tenant_id', :tenant, true)"),
        text("SET LOCAL fastapi_tenancy.tenant_id = 'globex'"),
    ):
        with pytest.raises(ValueError, match="not one of the kit's"):
            kit_statement_options(setting)
        with session_for(ACME) as session, pytest.raises(UnscopedStatement, match="textual"):
            session.execute(setting, {"tenant": GLOBEX})


def test_merge_without_load_of_another_tenants_row_is_refused_and_not_kept(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    copy = Project(id=world.zeus, name="zeus", tenant_id=GLOBEX)
    make_transient_to_detached(copy)
    with session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):
            session.merge(copy, load=False)
        assert session.get(Project, world.zeus) is None

    assert snapshot(tenancy) == before


def test_a_refusal_at_the_cursor_is_audited(tenancy, session_for, world, caplog):
    caplog.set_level(logging.INFO, logger="fastapi_tenancy.audit")
    with session_for(ACME) as session, pytest.raises(CrossTenantWrite):
        session.execute(update(Task), [{"id": world.secret_plan, "name": "pwned"}])

    refusals = [
        r for r in caplog.records if getattr(r, "tenancy_event", None) == "cross_tenant_write"
    ]
    assert refusals, "the refusal left no audit line"
    assert refusals[-1].tenancy_tenant == ACME


def test_every_new_engine_gets_the_gate_even_where_a_dead_engines_id_comes_back(tmp_path):
    """SQLAlchemy's event registry knows targets by id(): a new engine at a dead engine's
    address, whose dialect something still holds, was taken for one that had the gate."""
    held = []  # dialects outliving their engines, as cached compiled statements hold them
    ungated = 0
    for number in range(60):
        engine = create_engine(f"sqlite:///{tmp_path / f'{number}.db'}")
        if PLACED:  # Project's table is in the placeholder: the shared copy, this time
            engine.update_execution_options(schema_translate_map={TENANT_SCHEMA: None})
        Project.metadata.create_all(engine, tables=[Project.__table__])
        tenancy = Tenancy(engine, resolvers=[HeaderResolver()], key_type=KEY_TYPE)
        held.append(engine.dialect)
        with tenancy.make_session(SessionScope(ACME)) as session:
            try:
                session.execute(select(Project.__table__.c.name)).all()
                ungated += 1
            except UnscopedStatement:
                pass
        engine.dispose()
        del engine, tenancy
        gc.collect()

    assert ungated == 0


bypass_registry = registry()


class _BypassBase(SQLModel, registry=bypass_registry):
    """This module's own registry, so its table cannot clash with other tests'."""


class _Widget(_BypassBase, Keyed, table=True):
    __tablename__ = "bypass_widget"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


# A column property whose SQL an @compiles function writes: the ORM adds it when compiling
_Widget.everything = column_property(_Everything("x"))  # type: ignore[attr-defined]


def test_a_compiles_construct_inside_a_column_property_is_refused(engine, create_tables):
    create_tables(engine, _Widget)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], key_type=KEY_TYPE)
    session = tenancy.make_session(SessionScope(ACME))
    with session, pytest.raises(UnscopedStatement, match="@compiles"):
        session.execute(select(_Widget)).all()


@ROWS_STAY_IN_PLACE
def test_a_row_moved_away_in_mutable_tenant_is_no_longer_written_by_key(
    tenancy, session_for, world
):
    """The transaction's ledger of the tenant's keys forgets a table's keys once rows of it
    leave the tenant: a later UPDATE by key must find the row the tenant's again."""
    with with_tenant(ACME), mutable_tenant(reason="test"), session_for(ACME) as session:
        apollo = session.get(Project, world.apollo)
        apollo.name = "apollo-2"
        session.flush()  # proves apollo the tenant's: into the ledger
        apollo.tenant_id = GLOBEX
        session.flush()  # moves it away
        with pytest.raises(CrossTenantWrite):
            session.execute(update(Project), [{"id": world.apollo, "name": "still-mine?"}])
