"""Attacks on the tenant wall: SQL that reaches a tenant table where no loader criteria go.

Every attack runs in acme's session and must end one of two ways (``scoped_or_refused``):

- refused with ``UnscopedStatement``, ``CrossTenantWrite`` or ``TenantRequired``, with the
  database unchanged after the rollback; or
- run, returning and changing only acme's rows: no globex value in the result, globex's rows
  byte-identical, no acme row written with a globex value or pointing at a globex row.

Tests marked MUST WORK in their docstring must run, with the tenant's rows only. The families
are numbered as in the wall's threat list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from models import (
    ACME,
    GLOBEX,
    Blueprint,
    Folder,
    Plan,
    Project,
    Task,
    World,
    detached_row,
    owned_by,
    rows_of,
    run_unscoped,
    seed_rows,
    snapshot,
)
from sqlalchemy import (
    Integer,
    and_,
    bindparam,
    cast,
    column,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import (
    aliased,
    joinedload,
    selectinload,
    undefer,
    with_expression,
)
from sqlalchemy.sql.elements import quoted_name

from fastapi_tenancy import (
    Access,
    CrossTenantWrite,
    Tenancy,
    TenantRequired,
    UnscopedStatement,
)

TENANT_PARAM = "fastapi_tenancy_tenant_id"
REFUSALS = (UnscopedStatement, CrossTenantWrite, TenantRequired)
REFUSED = "<refused>"
"""What ``scoped_or_refused`` returns for an attack that was refused."""

PROJECTS = Project.__table__  # type: ignore[attr-defined]
TASKS = Task.__table__  # type: ignore[attr-defined]

GLOBEX_VALUES = frozenset(
    {
        GLOBEX,
        "zeus",
        "hermes",
        "secret-plan",
        "planted",
        "globex-root",
        "globex-stray",
        "globex-blueprint",
    }
)
"""Every string of globex's seeded rows: none may reach acme, in a result or a written row."""

FOREIGN_KEYS: Mapping[Any, tuple[str, Any]] = {
    Task: ("project_id", Project),
    Folder: ("parent_id", Folder),
    Blueprint: ("project_id", Project),
}
"""The foreign key of each model to a tenant model, checked on the rows an attack writes."""


# --------------------------------------------------------------------------------------------
# Seeds of the models of this file


@dataclass(frozen=True)
class Folders:
    """acme: root, child (in root), stray (planted in globex's root);
    globex: root, stray (planted in acme's root)."""

    acme_root: int
    acme_child: int
    acme_stray: int
    globex_root: int
    globex_stray: int


@pytest.fixture
def folders(tenancy, world, create_tables) -> Folders:
    create_tables(tenancy.engine, Folder)
    acme_root, globex_root = seed_rows(
        tenancy,
        Folder(name="acme-root", tenant_id=ACME),
        Folder(name="globex-root", tenant_id=GLOBEX),
    )
    acme_child, acme_stray, globex_stray = seed_rows(
        tenancy,
        Folder(name="acme-child", tenant_id=ACME, parent_id=acme_root),
        Folder(name="acme-stray", tenant_id=ACME, parent_id=globex_root),
        Folder(name="globex-stray", tenant_id=GLOBEX, parent_id=acme_root),
        plant=True,
    )
    return Folders(acme_root, acme_child, acme_stray, globex_root, globex_stray)


@pytest.fixture
def blueprints(tenancy, world, create_tables) -> None:
    """One Blueprint (global-access) of each tenant, on a project of its tenant."""
    create_tables(tenancy.engine, Blueprint)
    seed_rows(
        tenancy,
        Blueprint(name="acme-blueprint", tenant_id=ACME, project_id=world.apollo),
        Blueprint(name="globex-blueprint", tenant_id=GLOBEX, project_id=world.zeus),
        plant=True,  # a shared table pointing into the tenants' places, when they have them
    )


# --------------------------------------------------------------------------------------------
# The "scoped or refused" assertion


def _flatten(value: Any) -> Iterator[Any]:
    if hasattr(value, "_mapping"):  # a Row
        value = tuple(value)
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _flatten(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _flatten(item)
    elif hasattr(value, "__table__"):  # a mapped object: its loaded attributes
        for key, item in vars(value).items():
            if not key.startswith("_"):
                yield from _flatten(item)
    else:
        yield value


def _has_tenant(model: Any) -> bool:
    return "tenant_id" in model.__table__.c


def _assert_only_acme_changed(
    before: Mapping[Any, list[dict[str, Any]]],
    after: Mapping[Any, list[dict[str, Any]]],
    globex_keys: Mapping[Any, set[Any]],
) -> None:
    for model, rows in after.items():
        if _has_tenant(model):
            assert {row["tenant_id"] for row in rows} <= {ACME, GLOBEX}
            assert owned_by(rows, GLOBEX) == owned_by(before[model], GLOBEX), (
                f"globex's {model.__name__} rows changed"
            )
            visible = owned_by(rows, ACME)
        else:
            visible = rows
        earlier = {row["id"]: row for row in before[model]}
        written = [row for row in visible if row not in before[model]]
        for row in written:
            leaked = GLOBEX_VALUES & {v for v in row.values() if isinstance(v, str)}
            assert not leaked, f"a {model.__name__} row was written with globex's {leaked}: {row}"
            if model in FOREIGN_KEYS:
                key, target = FOREIGN_KEYS[model]
                old = earlier.get(row["id"], {}).get(key)
                assert row[key] == old or row[key] not in globex_keys[target], (
                    f"a {model.__name__} row now points at a globex {target.__name__}: {row}"
                )


def _assert_no_globex_value(result: Any) -> None:
    leaked = GLOBEX_VALUES & {v for v in _flatten(result) if isinstance(v, str)}
    assert not leaked, f"the attack read globex's {sorted(leaked)}: {result!r}"


def _globex_keys(tenancy: Tenancy, tables: tuple[Any, ...]) -> dict[Any, set[Any]]:
    targets = {FOREIGN_KEYS[m][1] for m in tables if m in FOREIGN_KEYS}
    return {target: set(rows_of(tenancy, target, GLOBEX)) for target in targets}


Attack = Callable[[Any], Any]


@pytest.fixture
def scoped_or_refused(tenancy, session_for) -> Callable[..., Any]:
    """``scoped_or_refused(attack, tables=(Project, Task))``: run ``attack(session)`` in acme's
    session and commit; return ``REFUSED`` if it raised a tenancy refusal (the database then
    unchanged), else its result, checked to hold and to have written nothing of globex."""

    def run(attack: Attack, *, tables: tuple[Any, ...] = (Project, Task)) -> Any:
        globex_keys = _globex_keys(tenancy, tables)
        before = snapshot(tenancy, *tables)
        with session_for(ACME) as session:
            try:
                result = attack(session)
                session.commit()
            except REFUSALS:
                session.rollback()
                assert snapshot(tenancy, *tables) == before, "refused, but the database changed"
                return REFUSED
        _assert_no_globex_value(result)
        _assert_only_acme_changed(before, snapshot(tenancy, *tables), globex_keys)
        return result

    return run


AsyncAttack = Callable[[Any], Awaitable[Any]]


@pytest.fixture
def async_scoped_or_refused(tenancy, async_session_for) -> Callable[..., Awaitable[Any]]:
    """``await async_scoped_or_refused(attack)``: ``scoped_or_refused`` in an AsyncSession."""

    async def run(attack: AsyncAttack, *, tables: tuple[Any, ...] = (Project, Task)) -> Any:
        globex_keys = _globex_keys(tenancy, tables)
        before = snapshot(tenancy, *tables)
        async with async_session_for(ACME) as session:
            try:
                result = await attack(session)
                await session.commit()
            except REFUSALS:
                await session.rollback()
                assert snapshot(tenancy, *tables) == before, "refused, but the database changed"
                return REFUSED
        _assert_no_globex_value(result)
        _assert_only_acme_changed(before, snapshot(tenancy, *tables), globex_keys)
        return result

    return run


def _scalars(statement: Any, parameters: Any = None) -> Attack:
    return lambda session: session.execute(statement, parameters).scalars().all()


def _rows(statement: Any, parameters: Any = None) -> Attack:
    return lambda session: [tuple(row) for row in session.execute(statement, parameters)]


def _rowcount(statement: Any, parameters: Any = None) -> Attack:
    """The number of rows the statement matched (``None`` where the ORM does not report it)."""
    return lambda session: getattr(session.execute(statement, parameters), "rowcount", None)


def _skip_without(engine: Any, feature: str | None) -> None:
    if feature is not None and not getattr(engine.dialect, feature):
        pytest.skip(f"{engine.dialect.name} has no {feature.replace('_', ' ')}")


def _secret_name(world: World) -> Any:
    """A scalar subquery reading the name of globex's task ``secret-plan``."""
    return select(Task.name).where(Task.id == world.secret_plan).scalar_subquery()


# --------------------------------------------------------------------------------------------
# 1. Expressions reaching SQL outside the loader criteria


WITH_EXPRESSIONS = {
    "subquery by another tenants id": (
        lambda w: _secret_name(w),
        None,
    ),
    "count of every task": (lambda w: select(func.count(Task.id)).scalar_subquery(), 3),
    "core columns of the task table": (
        lambda w: select(TASKS.c.name).where(TASKS.c.id == w.secret_plan).scalar_subquery(),
        None,
    ),
}


@pytest.mark.parametrize(
    ("make_expression", "expected"), WITH_EXPRESSIONS.values(), ids=WITH_EXPRESSIONS.keys()
)
def test_with_expression_over_tasks_reads_only_the_tenants_tasks(
    scoped_or_refused, world, folders, make_expression, expected
):
    """1: a query_expression() filled by with_expression() with a subquery over Task."""
    statement = (
        select(Folder)
        .options(with_expression(Folder.probe, make_expression(world)))
        .order_by(Folder.id)
    )

    outcome = scoped_or_refused(
        lambda s: [(f.name, f.probe) for f in s.execute(statement).scalars()],
        tables=(Project, Task, Folder),
    )

    assert outcome in (
        REFUSED,
        [("acme-root", expected), ("acme-child", expected), ("acme-stray", expected)],
    )


@pytest.mark.anyio
async def test_with_expression_over_tasks_reads_only_the_tenants_tasks_in_async_sessions(
    async_scoped_or_refused, world, folders
):
    """1: with_expression() with a subquery over another tenant's task, through AsyncSession."""
    statement = select(Folder).options(with_expression(Folder.probe, _secret_name(world)))

    async def attack(session: Any) -> Any:
        return [(f.name, f.probe) for f in (await session.exec(statement)).scalars()]

    outcome = await async_scoped_or_refused(attack, tables=(Project, Task, Folder))

    assert outcome == REFUSED or {probe for _, probe in outcome} == {None}


def _undefer(attribute: Any) -> Attack:
    statement = select(Folder).options(undefer(attribute)).order_by(Folder.id)
    return lambda s: [getattr(f, attribute.key) for f in s.execute(statement).scalars()]


def _deferred_load(attribute: Any) -> Attack:
    def attack(session: Any) -> Any:
        folders = session.execute(select(Folder).order_by(Folder.id)).scalars().all()
        return [getattr(f, attribute.key) for f in folders]

    return attack


COLUMN_PROPERTIES = {
    "undefer count": (_undefer(Folder.all_task_count), 3),
    "deferred load of max name": (_deferred_load(Folder.top_task_name), "leak-probe"),
    "selected as a column": (
        _scalars(select(Folder.top_task_name).order_by(Folder.id)),
        "leak-probe",
    ),
}


@pytest.mark.parametrize(
    ("attack", "expected"), COLUMN_PROPERTIES.values(), ids=COLUMN_PROPERTIES.keys()
)
def test_column_property_on_core_task_columns_reads_only_the_tenants_tasks(
    scoped_or_refused, folders, attack, expected
):
    """1: a column_property built over ``Task.__table__.c`` (no ORM entity, no criteria)."""
    outcome = scoped_or_refused(attack, tables=(Project, Task, Folder))

    assert outcome in (REFUSED, [expected] * 3)


INSERTS_OF_SUBQUERIES = {
    "values": lambda w: insert(Plan).values(name=func.coalesce(_secret_name(w), "none")),
    "multi-row values": lambda w: insert(Plan).values(
        [{"name": func.coalesce(_secret_name(w), "none")}, {"name": "plain"}]
    ),
}


@pytest.mark.parametrize("make", INSERTS_OF_SUBQUERIES.values(), ids=INSERTS_OF_SUBQUERIES.keys())
def test_subquery_over_tasks_inserted_into_a_shared_table_copies_only_the_tenants_values(
    scoped_or_refused, world, plans, make
):
    """1: a scalar subquery over Task inside ``insert(Plan).values(...)``."""
    outcome = scoped_or_refused(_rowcount(make(world)), tables=(Project, Task, Plan))

    # -1: PostgreSQL reports no count for an ORM INSERT that returns its keys
    assert outcome == REFUSED or outcome >= 1 or outcome == -1


@pytest.mark.anyio
async def test_subquery_over_tasks_inserted_into_a_shared_table_in_async_sessions(
    async_scoped_or_refused, world, plans
):
    """1: a scalar subquery over another tenant's task in an INSERT, through AsyncSession."""
    statement = insert(Plan).values(name=func.coalesce(_secret_name(world), "none"))

    async def attack(session: Any) -> Any:
        return (await session.exec(statement)).rowcount

    await async_scoped_or_refused(attack, tables=(Project, Task, Plan))


RETURNINGS = {
    "insert into a shared table": (
        "insert_returning",
        lambda w: insert(Plan).values(name="x").returning(Plan.name, _secret_name(w)),
    ),
    "update of a shared table": (
        "update_returning",
        lambda w: update(Plan).values(name="y").returning(Plan.name, _secret_name(w)),
    ),
    "delete from a shared table": (
        "delete_returning",
        lambda w: delete(Plan).returning(Plan.name, _secret_name(w)),
    ),
    "insert of a tenant row": (
        "insert_returning",
        lambda w: insert(Project).values(name="new").returning(Project.name, _secret_name(w)),
    ),
}


@pytest.mark.parametrize(("feature", "make"), RETURNINGS.values(), ids=RETURNINGS.keys())
def test_subquery_over_tasks_in_returning_reads_only_the_tenants_tasks(
    scoped_or_refused, tenancy, world, plans, feature, make
):
    """1: a scalar subquery over another tenant's task in a statement's RETURNING."""
    _skip_without(tenancy.engine, feature)

    outcome = scoped_or_refused(_rows(make(world)), tables=(Project, Task, Plan))

    assert outcome == REFUSED or all(row[1] is None for row in outcome)


def _project_named_by(expression: Callable[[World], Any]) -> Callable[[World], Attack]:
    def make(world: World) -> Attack:
        def attack(session: Any) -> Any:
            apollo = session.get(Project, world.apollo)
            apollo.name = expression(world)
            session.flush()
            return apollo.name

        return attack

    return make


def _task_named_by(expression: Callable[[World], Any]) -> Callable[[World], Attack]:
    def make(world: World) -> Attack:
        def attack(session: Any) -> Any:
            design = session.get(Task, world.design)
            design.name = expression(world)
            session.flush()
            return design.name

        return attack

    return make


def _new_project_named_by(expression: Callable[[World], Any]) -> Callable[[World], Attack]:
    def make(world: World) -> Attack:
        def attack(session: Any) -> Any:
            project = Project(name=expression(world))
            session.add(project)
            session.flush()
            return project.name

        return attack

    return make


FLUSHED_EXPRESSIONS = {
    "project name from another tenants task": _project_named_by(
        lambda w: func.coalesce(_secret_name(w), "none")
    ),
    "task name from another tenants project": _task_named_by(
        lambda w: func.coalesce(
            select(Project.name).where(Project.id == w.zeus).scalar_subquery(), "none"
        )
    ),
    "new project named from another tenants task": _new_project_named_by(
        lambda w: func.coalesce(_secret_name(w), "none")
    ),
}


@pytest.mark.parametrize("make", FLUSHED_EXPRESSIONS.values(), ids=FLUSHED_EXPRESSIONS.keys())
def test_attribute_set_to_a_subquery_is_never_written_with_another_tenants_value(
    scoped_or_refused, world, make
):
    """1: an attribute of an acme object set to a SQL expression; the unit of work writes it."""
    scoped_or_refused(make(world))


UPDATES_FROM_VALUES = {
    "bare column": lambda: update(Project).values(name=Task.name),
    "function of the column": lambda: update(Project).values(name=func.upper(Task.name)),
    "tenant column": lambda: update(Project).values(name=Task.tenant_id),
}


@pytest.mark.filterwarnings("ignore:(UPDATE|SELECT) statement has a cartesian product")
@pytest.mark.parametrize("make", UPDATES_FROM_VALUES.values(), ids=UPDATES_FROM_VALUES.keys())
def test_update_whose_values_name_another_model_copies_only_the_tenants_values(
    scoped_or_refused, tenancy, world, make
):
    """1: ``update(Project).values(name=Task.name)``: Task enters UPDATE ... FROM via SET."""
    # acme has no task left, so the tenant's join is empty and any row copied is globex's.
    run_unscoped(tenancy, Task, delete(Task).where(Task.tenant_id == ACME))

    outcome = scoped_or_refused(_rowcount(make()))

    assert outcome in (REFUSED, 0)


# --------------------------------------------------------------------------------------------
# 2. Write checks on the wrong value


def _flush_task_pointing(expression: Callable[[World], Any], *, new: bool) -> Any:
    def make(world: World) -> Attack:
        def attack(session: Any) -> Any:
            if new:
                task = Task(name="x", project_id=expression(world))
                session.add(task)
            else:
                task = session.get(Task, world.design)
                task.project_id = expression(world)
            session.flush()

        return attack

    return make


def _zeus_by_name() -> Any:
    return select(Project.id).where(Project.name == "zeus").scalar_subquery()


FOREIGN_KEY_EXPRESSIONS = {
    "insert with a cast": lambda w: _rowcount(
        insert(Task).values(name="x", project_id=cast(w.zeus, Integer))
    ),
    "insert with a subquery": lambda w: _rowcount(
        insert(Task).values(name="x", project_id=_zeus_by_name())
    ),
    "update with a cast": lambda w: _rowcount(
        update(Task).where(Task.id == w.design).values(project_id=cast(w.zeus, Integer))
    ),
    "update with a subquery": lambda w: _rowcount(
        update(Task).where(Task.id == w.design).values(project_id=_zeus_by_name())
    ),
    "flush of a loaded task with a subquery": _flush_task_pointing(
        lambda w: _zeus_by_name(), new=False
    ),
    "flush of a new task with a cast": _flush_task_pointing(
        lambda w: cast(w.zeus, Integer), new=True
    ),
}


@pytest.mark.parametrize(
    "make", FOREIGN_KEY_EXPRESSIONS.values(), ids=FOREIGN_KEY_EXPRESSIONS.keys()
)
def test_foreign_key_given_as_a_sql_expression_cannot_point_at_another_tenants_project(
    scoped_or_refused, world, make
):
    """2: a foreign key given as a cast or a subquery must not link to globex's project."""
    scoped_or_refused(make(world))


BINDPARAM_SWAPS = {
    "tenant_id of an insert": lambda w: (
        insert(Project).values(name="x", tenant_id=bindparam("p", value=ACME)),
        {"p": GLOBEX},
    ),
    "project_id of an insert": lambda w: (
        insert(Task).values(name="x", project_id=bindparam("p", value=w.apollo)),
        {"p": w.zeus},
    ),
    "project_id of an update": lambda w: (
        update(Task).where(Task.id == w.design).values(project_id=bindparam("p", value=w.apollo)),
        {"p": w.zeus},
    ),
    "tenant_id of an update": lambda w: (
        update(Project).values(tenant_id=bindparam("p", value=ACME)),
        {"p": GLOBEX},
    ),
}


@pytest.mark.parametrize("make", BINDPARAM_SWAPS.values(), ids=BINDPARAM_SWAPS.keys())
def test_tenant_or_foreign_key_given_as_a_bindparam_cannot_be_swapped_at_execution(
    scoped_or_refused, world, make
):
    """2: a bindparam whose value is checked but whose execution-time value is globex's."""
    statement, parameters = make(world)

    scoped_or_refused(_rowcount(statement, parameters))


# --------------------------------------------------------------------------------------------
# 3. Raw SQL other than text()


def _alias() -> Any:
    return PROJECTS.alias()


def _table_aliased() -> Any:
    return aliased(PROJECTS)


def _join_alias() -> Any:
    projects = aliased(PROJECTS)
    return (
        select(Task.name, projects.c.name)
        .join(projects, Task.project_id == projects.c.id)
        .order_by(Task.id)
    )


CORE_ALIAS_READS = {
    "alias() columns": lambda w: (_scalars(select(_alias().c.name)), ["apollo"]),
    "aliased(Table) columns": lambda w: (_scalars(select(_table_aliased().c.name)), ["apollo"]),
    "aliased(Table) joined to the model": lambda w: (
        _rows(_join_alias()),
        [("design", "apollo"), ("build", "apollo")],
    ),
    "alias() in a subquery": lambda w: (
        _scalars(
            select(Task.name).where(Task.project_id.in_(select(_alias().c.id))).order_by(Task.id)
        ),
        ["design", "build"],
    ),
}


@pytest.mark.parametrize("make", CORE_ALIAS_READS.values(), ids=CORE_ALIAS_READS.keys())
def test_alias_of_a_tenant_table_reads_only_the_tenants_rows(scoped_or_refused, world, make):
    """3: ``Project.__table__.alias()`` / ``aliased(Project.__table__)`` in a SELECT."""
    attack, expected = make(world)

    outcome = scoped_or_refused(attack)

    assert outcome in (REFUSED, expected)


def _rename(projects: Any) -> Any:
    """Every row gets a name of its own (one name for all would break the unique constraint)."""
    return update(projects).values(name=projects.c.name + "-pwn")


def _delete_hermes(projects: Any) -> Any:
    return delete(projects).where(projects.c.name == "hermes")


def _update_from_alias(world: World) -> Any:
    projects = _alias()
    return (
        update(Project)
        .where(Project.id == projects.c.id)
        .where(projects.c.name == "zeus")
        .values(name="pwn")
    )


CORE_ALIAS_WRITES = {
    "update of alias()": (lambda w: _rename(_alias()), ()),
    "update of aliased(Table)": (lambda w: _rename(_table_aliased()), ()),
    # MariaDB has no DELETE FROM table AS alias (before 11.6).
    "delete from alias()": (lambda w: _delete_hermes(_alias()), ("mariadb",)),
    "update of the model from an alias": (lambda w: _update_from_alias(w), ()),
}


@pytest.mark.parametrize(
    ("make", "lacking"), CORE_ALIAS_WRITES.values(), ids=CORE_ALIAS_WRITES.keys()
)
def test_alias_of_a_tenant_table_writes_only_the_tenants_rows(
    scoped_or_refused, backend, world, make, lacking
):
    """3: ``Project.__table__.alias()`` / ``aliased(Project.__table__)`` in UPDATE and DELETE."""
    if backend in lacking:
        pytest.skip(f"{backend} has no such statement")

    scoped_or_refused(_rowcount(make(world)))


UNION_ALL_NAMES = "UNION SELECT name FROM scoping_project"

RAW_FRAGMENTS = {
    "prefix_with": lambda: select(Project.name).prefix_with(
        "scoping_project.name FROM scoping_project UNION SELECT"
    ),
    "suffix_with": lambda: select(Project.name).suffix_with(UNION_ALL_NAMES),
    "with_hint": lambda: select(Project.name).with_hint(
        Project, UNION_ALL_NAMES, dialect_name="mysql"
    ),
    "with_statement_hint": lambda: select(Project.name).with_statement_hint(UNION_ALL_NAMES),
    "literal_column": lambda: select(Project.name).where(
        literal_column("1 = 1 OR scoping_project.name") == "x"
    ),
    "column of a raw quoted_name": lambda: select(Project.name).where(
        column(quoted_name("1 = 1 OR scoping_project.name", quote=False)) == "x"
    ),
    "label of a raw quoted_name": lambda: select(
        Project.name.label(quoted_name("n FROM scoping_project UNION SELECT name", quote=False))
    ),
    "custom operator": lambda: select(Project.name).where(
        Project.name.op("= name OR 1=1 OR name =")("x")
    ),
    "custom operator of high precedence": lambda: select(Project.name).where(
        Project.name.op("= name OR 1=1 OR name =", precedence=100)("x")
    ),
}


@pytest.mark.parametrize("make", RAW_FRAGMENTS.values(), ids=RAW_FRAGMENTS.keys())
def test_raw_sql_fragments_cannot_widen_a_select(scoped_or_refused, world, make):
    """3: raw SQL in prefixes, suffixes, hints, literal columns, names and custom operators."""
    outcome = scoped_or_refused(lambda s: sorted(set(s.execute(make()).scalars())))

    assert outcome in (REFUSED, ["apollo"], [])


@pytest.mark.anyio
async def test_raw_sql_prefix_cannot_widen_a_select_in_async_sessions(
    async_scoped_or_refused, world
):
    """3: a raw UNION in ``prefix_with()``, through AsyncSession."""
    statement = RAW_FRAGMENTS["prefix_with"]()

    async def attack(session: Any) -> Any:
        return sorted(set((await session.exec(statement)).scalars()))

    outcome = await async_scoped_or_refused(attack)

    assert outcome in (REFUSED, ["apollo"])


def _prefix_commenting_out_the_rest(dialect: Any) -> Any:
    """``UPDATE <prefix> scoping_task SET ... WHERE tenant`` with a prefix that writes its own
    SET and WHERE and comments the rest out; its WHERE consumes the tenant parameter, so that
    the drivers find as many placeholders as parameters."""
    placeholder = "?" if dialect.paramstyle == "qmark" else f":{TENANT_PARAM}"
    prefix = f"scoping_task SET done = true WHERE CAST({placeholder} AS CHAR(63)) IS NOT NULL -- "
    return update(Task).values(done=true()).prefix_with(prefix)


RAW_WRITE_FRAGMENTS = {
    "update prefix commenting out the rest": _prefix_commenting_out_the_rest,
    "update where a raw quoted_name": lambda d: (
        update(Project)
        .where(column(quoted_name("1 = 1 OR scoping_project.name", quote=False)) == "x")
        .values(name=Project.name + "-pwn")
    ),
    "delete where a custom operator of high precedence": lambda d: delete(Task).where(
        Task.name.op("= name OR 1=1 OR name =", precedence=100)("x")
    ),
}


@pytest.mark.parametrize("make", RAW_WRITE_FRAGMENTS.values(), ids=RAW_WRITE_FRAGMENTS.keys())
def test_raw_sql_fragments_cannot_widen_a_write(scoped_or_refused, tenancy, world, make):
    """3: raw SQL in an UPDATE prefix, a raw column name or a custom operator of a write."""
    scoped_or_refused(_rowcount(make(tenancy.engine.dialect)))


OR_REPLACE = {
    "project by values": lambda w: _rowcount(
        insert(Project).prefix_with("OR REPLACE").values(id=w.hermes, name="mine")
    ),
    "project by parameters": lambda w: _rowcount(
        insert(Project).prefix_with("OR REPLACE"), [{"id": w.hermes, "name": "mine"}]
    ),
    "task by values": lambda w: _rowcount(
        insert(Task).prefix_with("OR REPLACE").values(id=w.secret_plan, name="mine")
    ),
}


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("make", OR_REPLACE.values(), ids=OR_REPLACE.keys())
def test_insert_or_replace_cannot_replace_another_tenants_row(scoped_or_refused, world, make):
    """3: SQLite ``INSERT OR REPLACE`` reusing a globex primary key would delete globex's row."""
    scoped_or_refused(make(world))


# --------------------------------------------------------------------------------------------
# 5. Identity map


def _globex_zeus(tenancy: Tenancy, world: World) -> Project:
    return detached_row(tenancy, Project, world.zeus)  # type: ignore[no-any-return]


def _described(project: Project | None) -> Any:
    """A project as plain data, read before the commit expires it."""
    return None if project is None else (project.id, project.name, project.tenant_id)


def _get_one_or_none(session: Any, key: int) -> Any:
    try:
        return session.get_one(Project, key)
    except NoResultFound:
        return None


IDENTITY_MAP_READS = {
    "get": lambda s, w: s.get(Project, w.zeus),
    "get_one": lambda s, w: _get_one_or_none(s, w.zeus),
    "lazy load of a many-to-one": lambda s, w: s.get(Task, w.leak_probe).project,
    "get of the tenants own row": lambda s, w: s.get(Project, w.apollo),
}


@pytest.mark.parametrize("read", IDENTITY_MAP_READS.values(), ids=IDENTITY_MAP_READS.keys())
def test_another_tenants_object_added_to_the_session_is_never_returned(
    scoped_or_refused, tenancy, world, read
):
    """5: a globex object loaded unscoped, expunged, added to acme's session, then read."""
    zeus = _globex_zeus(tenancy, world)

    def attack(session: Any) -> Any:
        session.add(zeus)
        return _described(read(session, world))

    outcome = scoped_or_refused(attack)

    assert outcome in (REFUSED, None, (world.apollo, "apollo", ACME))


@pytest.mark.anyio
async def test_another_tenants_object_added_to_an_async_session_is_never_returned(
    async_scoped_or_refused, tenancy, world
):
    """5: the identity map attack through AsyncSession."""
    zeus = _globex_zeus(tenancy, world)

    async def attack(session: Any) -> Any:
        session.add(zeus)
        return await session.get(Project, world.zeus)

    outcome = await async_scoped_or_refused(attack)

    assert outcome in (REFUSED, None)


# --------------------------------------------------------------------------------------------
# 9. Scoping attached to the wrong place


COMPOUND_WHERES = {
    "count select_from with and_": lambda w: (
        select(func.count())
        .select_from(Project)
        .where(and_(Project.name == "zeus", Project.id > 0)),
        [0],
    ),
    "count with no from and and_": lambda w: (
        select(func.count()).where(and_(Project.name == "zeus", Project.id == w.zeus)),
        [0],
    ),
    "count with no from and or_": lambda w: (
        select(func.count()).where(or_(Project.name == "zeus", Project.name == "hermes")),
        [0],
    ),
    "exists with no from": lambda w: (
        select(exists().where(and_(Project.name == "zeus", Project.id > 0))),
        [False],
    ),
}


@pytest.mark.parametrize("make", COMPOUND_WHERES.values(), ids=COMPOUND_WHERES.keys())
def test_tenant_model_reached_only_through_a_compound_where_is_scoped(
    scoped_or_refused, world, make
):
    """9: the tenant model enters only through a compound WHERE of a FROM-less select."""
    statement, expected = make(world)

    outcome = scoped_or_refused(_scalars(statement))

    assert outcome in (REFUSED, expected)


SQL_FUNCTIONS = {
    "max of project ids": lambda w: (select(func.max(Project.id)), [w.apollo]),
    "lower of project names": lambda w: (select(func.lower(Project.name)), ["apollo"]),
    "function in the where": lambda w: (
        select(func.count()).where(func.length(Project.name) > 0),
        [1],
    ),
}


@pytest.mark.parametrize("make", SQL_FUNCTIONS.values(), ids=SQL_FUNCTIONS.keys())
def test_sql_function_over_a_tenant_column_reads_only_the_tenants_rows(
    scoped_or_refused, world, make
):
    """9: a SQL function wrapped around a tenant column, with no FROM of its own."""
    statement, expected = make(world)

    outcome = scoped_or_refused(_scalars(statement))

    assert outcome in (REFUSED, expected)


SELF_REFERENCES = {
    "select has": (
        _scalars(select(Folder.name).where(Folder.parent.has(Folder.name == "globex-root"))),
        [],
    ),
    "select has of any parent": (
        _scalars(select(Folder.name).where(Folder.parent.has()).order_by(Folder.id)),
        ["acme-child"],
    ),
    "select any": (
        _scalars(select(Folder.name).where(Folder.children.any(Folder.name == "globex-stray"))),
        [],
    ),
    "update has": (
        _rowcount(
            update(Folder)
            .where(Folder.parent.has(Folder.name == "globex-root"))
            .values(name="found")
        ),
        0,
    ),
    "update any": (
        _rowcount(
            update(Folder)
            .where(Folder.children.any(Folder.name == "globex-stray"))
            .values(name="found")
        ),
        0,
    ),
    "delete has": (
        _rowcount(delete(Folder).where(Folder.parent.has(Folder.name == "globex-root"))),
        0,
    ),
}


@pytest.mark.parametrize(
    ("attack", "expected"), SELF_REFERENCES.values(), ids=SELF_REFERENCES.keys()
)
def test_self_referential_has_and_any_do_not_match_another_tenants_rows(
    scoped_or_refused, folders, attack, expected
):
    """9: ``.has()`` / ``.any()`` of a self-referential relationship in SELECT, UPDATE, DELETE."""
    outcome = scoped_or_refused(attack, tables=(Project, Task, Folder))

    assert outcome in (REFUSED, expected)


INSERTS_FROM_SELECT = {
    "project names": (lambda w: select(Project.name), ["apollo"]),
    "task name by another tenants id": (
        lambda w: select(Task.name).where(Task.id == w.secret_plan),
        [],
    ),
    "union of project and task names": (
        lambda w: select(Project.name).union_all(select(Task.name).where(Task.done)),
        ["apollo", "build"],
    ),
}


@pytest.mark.parametrize(
    ("make", "expected"), INSERTS_FROM_SELECT.values(), ids=INSERTS_FROM_SELECT.keys()
)
def test_insert_from_select_copies_only_the_tenants_values(
    scoped_or_refused, tenancy, world, plans, make, expected
):
    """9: ``insert(Plan).from_select(["name"], select(Project.name))`` into a shared table."""
    outcome = scoped_or_refused(
        _rowcount(insert(Plan).from_select(["name"], make(world))), tables=(Project, Task, Plan)
    )

    if outcome != REFUSED:
        names = sorted(p["name"] for p in snapshot(tenancy, Plan)[Plan])
        assert names == sorted(["free", "pro", *expected])


NO_TENANT_COPIES = {
    "from select of project names": lambda w: insert(Plan).from_select(
        ["name"], select(Project.name)
    ),
    "values of a subquery over tasks": lambda w: insert(Plan).values(
        name=select(func.max(Task.name)).scalar_subquery()
    ),
}


@pytest.mark.parametrize("make", NO_TENANT_COPIES.values(), ids=NO_TENANT_COPIES.keys())
def test_insert_from_select_with_no_tenant_bound_fails_closed(
    tenancy, session_for, world, plans, make
):
    """9: the same copies into a shared table with no tenant bound raise TenantRequired."""
    before = snapshot(tenancy, Project, Task, Plan)

    with session_for(None) as session:
        with pytest.raises(TenantRequired):
            session.execute(make(world))
        session.rollback()

    assert snapshot(tenancy, Project, Task, Plan) == before


DATA_MODIFYING_CTES = {
    "update": lambda w: update(Project).values(name=Project.name + "-pwn").returning(Project.id),
    "insert naming another tenant": lambda w: (
        insert(Project).values(name="pwn", tenant_id=GLOBEX).returning(Project.id)
    ),
    "insert with no tenant": lambda w: insert(Project).values(name="pwn").returning(Project.id),
    "delete": lambda w: delete(Task).returning(Task.id),
    "delete by another tenants id": lambda w: (
        delete(Task).where(Task.id == w.secret_plan).returning(Task.id)
    ),
}


@pytest.mark.backends("postgres")
@pytest.mark.parametrize("make", DATA_MODIFYING_CTES.values(), ids=DATA_MODIFYING_CTES.keys())
def test_data_modifying_cte_changes_only_the_tenants_rows(scoped_or_refused, world, make):
    """9: PostgreSQL ``WITH x AS (UPDATE/INSERT/DELETE ... RETURNING) SELECT ... FROM x``."""
    statement = select(make(world).cte("changed"))

    scoped_or_refused(_rows(statement))


# --------------------------------------------------------------------------------------------
# 10. The tenant parameter itself


PARAMETER_STATEMENTS = {
    "select": lambda w: (_scalars, select(Project.name), ["apollo"]),
    "select naming the parameter": lambda w: (
        _scalars,
        select(Project.name).where(Project.tenant_id == bindparam(TENANT_PARAM)),
        ["apollo"],
    ),
    "update": lambda w: (_rowcount, update(Project).values(name="renamed"), 1),
    "delete": lambda w: (_rowcount, delete(Task), 3),
}


@pytest.mark.parametrize("make", PARAMETER_STATEMENTS.values(), ids=PARAMETER_STATEMENTS.keys())
def test_tenant_parameter_given_at_execution_cannot_switch_the_tenant(
    scoped_or_refused, world, make
):
    """10: ``session.execute(stmt, {"fastapi_tenancy_tenant_id": GLOBEX})``."""
    run, statement, expected = make(world)

    outcome = scoped_or_refused(run(statement, {TENANT_PARAM: GLOBEX}))

    assert outcome in (REFUSED, expected)


@pytest.mark.parametrize("make", PARAMETER_STATEMENTS.values(), ids=PARAMETER_STATEMENTS.keys())
def test_tenant_parameter_given_at_execution_with_no_tenant_bound_fails_closed(
    tenancy, session_for, world, make
):
    """10: with no tenant bound, the tenant parameter does not make the session globex's."""
    _, statement, _ = make(world)
    before = snapshot(tenancy)

    with session_for(None) as session:
        with pytest.raises(TenantRequired):
            session.execute(statement, {TENANT_PARAM: GLOBEX})
        session.rollback()

    assert snapshot(tenancy) == before


@pytest.mark.anyio
async def test_tenant_parameter_given_at_execution_cannot_switch_an_async_sessions_tenant(
    async_scoped_or_refused, async_session_for, world
):
    """10: the tenant parameter at execution, through AsyncSession, bound and not bound."""

    async def attack(session: Any) -> Any:
        result = await session.exec(select(Project.name), params={TENANT_PARAM: GLOBEX})
        return result.scalars().all()

    assert await async_scoped_or_refused(attack) in (REFUSED, ["apollo"])
    async with async_session_for(None) as session:
        with pytest.raises(TenantRequired):
            await session.exec(select(Project.name), params={TENANT_PARAM: GLOBEX})


# --------------------------------------------------------------------------------------------
# 11. What must keep working


UPDATES_RETURNING = {
    "by name": Project.name == "apollo",
    "by names of both tenants": Project.name.in_(["apollo", "zeus"]),
}


@pytest.mark.parametrize("where", UPDATES_RETURNING.values(), ids=UPDATES_RETURNING.keys())
def test_orm_update_returning_reports_only_the_tenants_rows(tenancy, session_for, world, where):
    """11 MUST WORK: ORM ``update(...).returning(...)`` returns and changes acme's rows."""
    _skip_without(tenancy.engine, "update_returning")
    before = snapshot(tenancy)
    statement = (
        update(Project).where(where).values(name="apollo2").returning(Project.id, Project.name)
    )

    with session_for(ACME) as session:
        returned = [tuple(row) for row in session.execute(statement)]
        session.commit()

    assert returned == [(world.apollo, "apollo2")]
    after = snapshot(tenancy)
    assert owned_by(after[Project], GLOBEX) == owned_by(before[Project], GLOBEX)
    assert rows_of(tenancy, Project, ACME)[world.apollo].name == "apollo2"


DELETES_RETURNING = {
    "by name": lambda w: (Task.name == "design", {(w.design,)}),
    "by names of both tenants": lambda w: (
        Task.name.in_(["design", "secret-plan", "planted"]),
        {(w.design,)},
    ),
}


@pytest.mark.parametrize("make", DELETES_RETURNING.values(), ids=DELETES_RETURNING.keys())
def test_orm_delete_returning_reports_only_the_tenants_rows(tenancy, session_for, world, make):
    """11 MUST WORK: ORM ``delete(...).returning(...)`` returns and deletes acme's rows."""
    _skip_without(tenancy.engine, "delete_returning")
    where, expected = make(world)
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        result = session.execute(delete(Task).where(where).returning(Task.id))
        deleted = {tuple(row) for row in result}
        session.commit()

    assert deleted == expected
    after = snapshot(tenancy)
    assert owned_by(after[Task], GLOBEX) == owned_by(before[Task], GLOBEX)
    assert not {key for (key,) in expected} & set(rows_of(tenancy, Task, ACME))


def _apollo_by_name() -> Any:
    return select(Project.id).where(Project.name == "apollo").scalar_subquery()


def _update_to_apollo(world: World, session: Any) -> int:
    statement = update(Task).where(Task.id == world.leak_probe).values(project_id=_apollo_by_name())
    session.execute(statement)
    return world.leak_probe


def _insert_on_apollo(world: World, session: Any) -> int:
    session.execute(insert(Task).values(name="new", project_id=_apollo_by_name()))
    task = session.execute(select(Task).where(Task.name == "new")).scalar_one()
    return task.id  # type: ignore[no-any-return]


def _flush_to_apollo(world: World, session: Any) -> int:
    probe = session.get(Task, world.leak_probe)
    probe.project_id = _apollo_by_name()
    session.flush()
    return world.leak_probe


OWN_SUBQUERY_WRITES = {
    "update": (_update_to_apollo, False),
    "insert": (_insert_on_apollo, False),
    "flush of a loaded task": (_flush_to_apollo, False),
    "update, globex has an apollo too": (_update_to_apollo, True),
    "insert, globex has an apollo too": (_insert_on_apollo, True),
    "flush, globex has an apollo too": (_flush_to_apollo, True),
}


@pytest.mark.parametrize(
    ("write", "globex_apollo"), OWN_SUBQUERY_WRITES.values(), ids=OWN_SUBQUERY_WRITES.keys()
)
def test_foreign_key_set_to_a_subquery_of_the_tenants_own_project_is_allowed(
    tenancy, session_for, world, write, globex_apollo
):
    """11 MUST WORK: a foreign key given as a subquery selecting the tenant's own project."""
    if globex_apollo:
        seed_rows(tenancy, Project(name="apollo", tenant_id=GLOBEX))
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        task_id = write(world, session)
        session.commit()

    assert rows_of(tenancy, Task, ACME)[task_id].project_id == world.apollo
    after = snapshot(tenancy)
    for model in (Project, Task):
        assert owned_by(after[model], GLOBEX) == owned_by(before[model], GLOBEX)


def _first_blueprint(session: Any) -> Any:
    return session.execute(select(Blueprint).order_by(Blueprint.id)).scalars().first()


GLOBAL_READS_OF_TENANT_DATA = {
    "joinedload": lambda s: (
        s.execute(select(Blueprint).options(joinedload(Blueprint.project))).unique().all()
    ),
    "selectinload": lambda s: s.execute(
        select(Blueprint).options(selectinload(Blueprint.project))
    ).all(),
    "undefer of a column_property": lambda s: s.execute(
        select(Blueprint).options(undefer(Blueprint.task_count))
    ).all(),
    "deferred column_property load": lambda s: _first_blueprint(s).task_count,
    "lazy load": lambda s: _first_blueprint(s).project,
}


@pytest.mark.parametrize(
    "read", GLOBAL_READS_OF_TENANT_DATA.values(), ids=GLOBAL_READS_OF_TENANT_DATA.keys()
)
def test_global_read_reaching_a_tenant_model_with_no_tenant_raises_tenant_required(
    session_for, blueprints, read
):
    """11 MUST be TenantRequired: a global-access read that loads a non-global tenant model."""
    with session_for(None, Access.GLOBAL) as session:
        assert [b.name for b in session.execute(select(Blueprint)).scalars()] == [
            "acme-blueprint",
            "globex-blueprint",
        ]
        with pytest.raises(TenantRequired):
            read(session)


@pytest.mark.anyio
async def test_global_read_reaching_a_tenant_model_with_no_tenant_in_async_sessions(
    async_session_for, blueprints
):
    """11 MUST be TenantRequired: a joinedload of a tenant model, through AsyncSession."""
    statement = select(Blueprint).options(joinedload(Blueprint.project))

    async with async_session_for(None, Access.GLOBAL) as session:
        with pytest.raises(TenantRequired):
            await session.exec(statement)
