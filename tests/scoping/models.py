"""The world every scoping attack runs against: two tenants, their projects and tasks.

The tenant keys are strings unless ``TENANCY_KEY_TYPE`` is ``int`` or ``uuid``: CI runs the
whole folder once per key type, with the tenants ``ACME``, ``GLOBEX`` and ``INITECH`` spelled
in that type. The models live in a registry of their own, so their class and table names
cannot clash with other tests' SQLModel tables. The seed plants two rows that only an unscoped
admin could write, so that a relationship, join or subquery that forgets the tenant shows up at
once:

- acme's task ``leak-probe`` points at globex's project ``zeus``;
- globex's task ``planted`` points at acme's project ``apollo``.
"""

# No "from __future__ import annotations": SQLModel resolves relationships from real annotations.

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from key_types import ACME, GLOBEX, INITECH, KEY_TYPE, UMBRELLA, Keyed  # noqa: F401 (re-exported)
from scoping_places import (
    PLACED,
    SEND_EVENTS,
    is_placed,
    place_session,
    placed,
    placed_key,
    places_of,
    sent_to_tenant_databases,
)
from sqlalchemy import Column, and_, event, false, func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import column_property, query_expression, registry, relationship
from sqlmodel import Field, Relationship, SQLModel

from fastapi_tenancy import (
    Access,
    RowPolicy,
    SessionScope,
    Tenancy,
    owner_field,
    row_scope_field,
    tenant_field,
    tenant_unique,
)
from fastapi_tenancy.keys import key_type_for

scoping_registry = registry()


class ScopingModel(SQLModel, registry=scoping_registry):
    """Base of this folder's tables: their own registry and metadata."""


class Plan(ScopingModel, table=True):
    """Shared reference data: no tenant column, never scoped."""

    __tablename__ = "scoping_plan"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


class Project(ScopingModel, Keyed, table=True):
    __tablename__ = "scoping_project"
    __table_args__ = placed(tenant_unique("name", name="uq_scoping_project_tenant_name"))

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)

    tasks: list["Task"] = Relationship(back_populates="project")


class Task(ScopingModel, Keyed, table=True):
    __tablename__ = "scoping_task"
    __table_args__ = placed()

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    done: bool = False
    project_id: int | None = Field(default=None, foreign_key=placed_key("scoping_project.id"))

    project: Project | None = Relationship(back_populates="tasks")


class Template(ScopingModel, Keyed, table=True):
    """A tenant model declared readable across tenants through the global-access switch."""

    __tablename__ = "scoping_template"
    __global_access__ = True

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


class Note(ScopingModel, Keyed, table=True):
    """A tenant model whose tenant lives in a column named ``org_id``."""

    __tablename__ = "scoping_note"
    __table_args__ = placed(
        tenant_unique("title", name="uq_scoping_note_org_title", tenant_column="org_id")
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: KEY_TYPE = tenant_field(KEY_TYPE, column_name="org_id")
    title: str = Field(max_length=50)


# A correlated subquery on another tenant model, loaded with the project on request.
Project.task_count = column_property(  # type: ignore[attr-defined]
    select(func.count(Task.id))
    .where(Task.project_id == Project.id)
    .correlate_except(Task)
    .scalar_subquery(),
    deferred=True,
)

# A relationship whose join condition is written on the tables' columns, not the attributes.
_project_t = Project.__table__  # type: ignore[attr-defined]
_task_t = Task.__table__  # type: ignore[attr-defined]
Project.open_tasks = relationship(  # type: ignore[attr-defined]
    Task,
    primaryjoin=and_(_task_t.c.project_id == _project_t.c.id, _task_t.c.done == false()),
    viewonly=True,
    order_by=_task_t.c.id,
)

CORE_MODELS = (Project, Task)
"""The tables of every test; the others are created only by the tests that use them."""


@dataclass(frozen=True)
class World:
    """Primary keys of the seeded projects and tasks, by name."""

    apollo: int  # acme's project
    zeus: int  # globex's project
    hermes: int  # globex's project
    design: int  # acme's task on apollo
    build: int  # acme's task on apollo, done
    leak_probe: int  # acme's task planted on globex's zeus
    secret_plan: int  # globex's task on zeus
    planted: int  # globex's task planted on acme's apollo


@dataclass(frozen=True)
class Pair:
    """Primary keys of one acme row and one globex row of a model."""

    acme: int
    globex: int


def _admin(tenancy: Tenancy) -> Any:
    return tenancy.make_session(SessionScope(None, Access.UNSCOPED))


@contextmanager
def _writer(tenancy: Tenancy, *, plant: bool = False) -> Iterator[Callable[[Any], Any]]:
    """``session_of(row)``: an unscoped session that can write ``row``: the admin session on
    the shared tables, or a plain one in the place of the row's tenant when this run places
    tenants apart (``plant``: one that lets a row point at a row of another place). Commits
    every session it opened at the end."""
    with ExitStack() as stack:
        sessions: dict[Any, Any] = {}

        def session_of(row: Any) -> Any:
            place = row.tenant_id if PLACED and is_placed(type(row).__table__) else None
            if place not in sessions:
                if PLACED:
                    opened = place_session(tenancy, place, foreign_keys=not plant)
                else:
                    opened = _admin(tenancy)
                sessions[place] = stack.enter_context(opened)
            return sessions[place]

        yield session_of
        for session in sessions.values():
            session.commit()


def _write(session_of: Callable[[Any], Any], row: Any) -> int:
    session = session_of(row)
    session.add(row)
    session.flush()
    return row.id  # type: ignore[no-any-return]


def seed(tenancy: Tenancy) -> World:
    """Write the world with an unscoped session (the only way to plant cross-tenant links)."""
    with _writer(tenancy, plant=True) as session_of:
        # One flush per row keeps the ids in a known order on every database.
        projects = {
            "apollo": Project(name="apollo", tenant_id=ACME),
            "zeus": Project(name="zeus", tenant_id=GLOBEX),
            "hermes": Project(name="hermes", tenant_id=GLOBEX),
        }
        ids = {name: _write(session_of, project) for name, project in projects.items()}
        apollo, zeus = ids["apollo"], ids["zeus"]
        tasks = {
            "design": Task(name="design", tenant_id=ACME, project_id=apollo),
            "build": Task(name="build", tenant_id=ACME, project_id=apollo, done=True),
            "leak_probe": Task(name="leak-probe", tenant_id=ACME, project_id=zeus),
            "secret_plan": Task(name="secret-plan", tenant_id=GLOBEX, project_id=zeus),
            "planted": Task(name="planted", tenant_id=GLOBEX, project_id=apollo),
        }
        ids |= {name: _write(session_of, task) for name, task in tasks.items()}
    return World(**ids)


def seed_pair(tenancy: Tenancy, acme: Any, globex: Any) -> Pair:
    """Write one row for each tenant (rows built with their ``tenant_id``)."""
    with _writer(tenancy) as session_of:
        return Pair(acme=_write(session_of, acme), globex=_write(session_of, globex))


def seed_rows(tenancy: Tenancy, *rows: Any, plant: bool = False) -> list[int]:
    """Write ``rows`` unscoped, in order, one flush each (each in its tenant's place when this
    run places tenants apart; ``plant``: a row may point at another place's row); their ids."""
    with _writer(tenancy, plant=plant) as session_of:
        return [_write(session_of, row) for row in rows]


def detached_row(tenancy: Tenancy, model: Any, row_id: int) -> Any:
    """The row of ``model`` with ``row_id``, read unscoped wherever it lives, detached."""
    places = places_of(model) if PLACED else (None,)
    for place in places:
        opened = place_session(tenancy, place) if PLACED else _admin(tenancy)
        with opened as session:
            row = session.get(model, row_id)
            if row is not None:
                session.expunge(row)
                return row
    raise LookupError(f"no {model.__name__} {row_id}")


def run_unscoped(tenancy: Tenancy, model: Any, statement: Any) -> None:
    """Run the write ``statement`` on ``model``'s rows unscoped, in every place they live, and
    commit."""
    if not PLACED:
        with _admin(tenancy) as session:
            session.execute(statement)
            session.commit()
        return
    for place in places_of(model):
        with place_session(tenancy, place) as session:
            session.execute(statement)
            session.commit()


Rows = list[dict[str, Any]]


def snapshot(tenancy: Tenancy, *models: Any) -> dict[Any, Rows]:
    """Every row of ``models`` (default Project and Task), read unscoped, by model.

    Compare a snapshot taken before an attack with one taken after it.
    """
    return {model: _all_rows(tenancy, model) for model in models or (Project, Task)}


def _all_rows(tenancy: Tenancy, model: Any) -> Rows:
    if not PLACED:
        with _admin(tenancy) as session:
            return _rows(session, model)
    rows: Rows = []
    for place in places_of(model):
        with place_session(tenancy, place) as session:
            rows += _rows(session, model)
    return sorted(rows, key=lambda row: row["id"])


def _rows(session: Any, model: Any) -> Rows:
    columns = [
        getattr(model, prop.key)
        for prop in inspect(model).column_attrs
        if isinstance(prop.expression, Column)  # not the computed task_count
    ]
    result = session.execute(select(*columns).order_by(model.id))
    return [dict(row._mapping) for row in result]


def owned_by(rows: Rows, tenant_id: Any) -> Rows:
    """The rows of one tenant out of a snapshot's rows."""
    return [row for row in rows if row["tenant_id"] == tenant_id]


def rows_of(tenancy: Tenancy, model: Any, tenant_id: Any) -> dict[int, Any]:
    """``{id: row}`` of one tenant's rows of ``model``, read unscoped and detached."""
    if PLACED:
        place = tenant_id if is_placed(model.__table__) else None
        opened: Any = place_session(tenancy, place)
    else:
        opened = _admin(tenancy)
    with opened as session:
        rows = session.execute(select(model).where(model.tenant_id == tenant_id)).scalars()
        found = {row.id: row for row in rows}
        session.expunge_all()
        return found


def assert_all_refused(session: Any, error: type[Exception], statements: dict[str, Any]) -> None:
    """Run each statement; every one of them must raise ``error``."""
    ran = []
    for name, statement in statements.items():
        try:
            session.execute(statement)
        except error:
            continue
        ran.append(name)
    assert ran == [], f"these statements were not refused with {error.__name__}: {ran}"


@contextmanager
def capture_sql(engine: Engine | AsyncEngine) -> Iterator[list[str]]:
    """Record every statement the engine (and the tenants' own databases' engines, when they
    have some) sends to the database inside the block.

    Recorded at the dialect's ``do_execute`` hooks, the last step before the driver, and after
    the kit's wall, which checks each statement there first (its listeners come earlier).
    """
    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    sent: list[str] = []

    def record(cursor: Any, statement: str, *args: Any) -> None:
        context = args[-1]
        if getattr(context, "compiled", None) is not None:  # not the dialect's first-connect SQL
            sent.append(statement)

    for name in SEND_EVENTS:
        event.listen(target, name, record)
    try:
        with sent_to_tenant_databases(record):
            yield sent
    finally:
        for name in SEND_EVENTS:
            event.remove(target, name, record)


# --------------------------------------------------------------------------------------------
# Models of the wall attacks (test_wall_attacks.py); their tables are created by those tests.


class Folder(ScopingModel, Keyed, table=True):
    """A self-referential tenant model: folders in folders."""

    __tablename__ = "scoping_folder"
    __table_args__ = placed()

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    parent_id: int | None = Field(default=None, foreign_key=placed_key("scoping_folder.id"))


_folder_t = Folder.__table__  # type: ignore[attr-defined]
Folder.parent = relationship(  # type: ignore[attr-defined]
    Folder, remote_side=_folder_t.c.id, back_populates="children"
)
Folder.children = relationship(  # type: ignore[attr-defined]
    Folder, back_populates="parent", order_by=_folder_t.c.id
)

# An expression the query fills in on request (with_expression()).
Folder.probe = query_expression()  # type: ignore[attr-defined]

# Subqueries written on the core columns of the task table, not on the Task attributes.
Folder.all_task_count = column_property(  # type: ignore[attr-defined]
    select(func.count(_task_t.c.id)).scalar_subquery(), deferred=True
)
Folder.top_task_name = column_property(  # type: ignore[attr-defined]
    select(func.max(_task_t.c.name)).scalar_subquery(), deferred=True
)


class Blueprint(ScopingModel, Keyed, table=True):
    """A global-access tenant model that points at a (not global) Project."""

    __tablename__ = "scoping_blueprint"
    __global_access__ = True

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    project_id: int | None = Field(default=None, foreign_key=placed_key("scoping_project.id"))

    project: Project | None = Relationship()


# A correlated subquery on the tasks of the blueprint's project (Task is not global).
Blueprint.task_count = column_property(  # type: ignore[attr-defined]
    select(func.count(Task.id))
    .where(Task.project_id == Blueprint.project_id)
    .correlate_except(Task)
    .scalar_subquery(),
    deferred=True,
)


# --------------------------------------------------------------------------------------------
# Models of the shared-rows attacks (test_shared_rows.py); their tables are created by those tests.


class Category(ScopingModel, Keyed, table=True):
    """A tenant model with shared rows: a NULL tenant is a vendor default every tenant reads."""

    __tablename__ = "scoping_category"
    __shared_rows__ = True

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


class Product(ScopingModel, Keyed, table=True):
    """A tenant's product in a category: its own, or a shared one."""

    __tablename__ = "scoping_product"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    category_id: int | None = Field(default=None, foreign_key="scoping_category.id")

    category: Category | None = Relationship()


class Memo(ScopingModel, Keyed, table=True):
    """Owner-only rows: a memo is private to its author inside the tenant."""

    __tablename__ = "scoping_memo"
    __table_args__ = placed()

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field()
    title: str = Field(max_length=50)

    replies: list["MemoReply"] = Relationship(
        back_populates="memo", sa_relationship_kwargs={"order_by": "MemoReply.id"}
    )


class MemoReply(ScopingModel, Keyed, table=True):
    """Owner-only rows pointing at a memo."""

    __tablename__ = "scoping_memo_reply"
    __table_args__ = placed()

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field()
    memo_id: int | None = Field(default=None, foreign_key=placed_key("scoping_memo.id"))
    body: str = Field(max_length=50)

    memo: Memo | None = Relationship(back_populates="replies")


class TeamDoc(ScopingModel, Keyed, table=True):
    """Two row scopes beside the tenant: its team (a claim) and its owner."""

    __tablename__ = "scoping_team_doc"
    __table_args__ = placed()

    id: int | None = Field(default=None, primary_key=True)
    team_id: int | None = row_scope_field("team", int)
    owner_id: str | None = owner_field()
    title: str = Field(max_length=50)


class Post(ScopingModel, Keyed, table=True):
    """Owner-only rows, except those their owner published: ``public OR owned``."""

    __tablename__ = "scoping_post"
    __table_args__ = placed()

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field(public="published")
    published: bool = False
    title: str = Field(max_length=50)

    comments: list["PostComment"] = Relationship(
        back_populates="post", sa_relationship_kwargs={"order_by": "PostComment.id"}
    )


class PostComment(ScopingModel, Keyed, table=True):
    """A comment, private to its author, on a post: one's own, or a published one."""

    __tablename__ = "scoping_post_comment"
    __table_args__ = placed()

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field()
    post_id: int | None = Field(default=None, foreign_key=placed_key("scoping_post.id"))
    body: str = Field(max_length=50)

    post: Post | None = Relationship(back_populates="comments")


class CatalogItem(ScopingModel, Keyed, table=True):
    """A catalogue the parents share down: a tenant reads its ancestors' items too."""

    __tablename__ = "scoping_catalog_item"
    __tenant_reads__ = "ancestors"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    parent_id: int | None = Field(default=None, foreign_key="scoping_catalog_item.id")

    variants: list["CatalogItem"] = Relationship(
        sa_relationship_kwargs={"order_by": "CatalogItem.id"}
    )


class Invoice(ScopingModel, Keyed, table=True):
    """A reseller sees its customers' invoices: a tenant reads its descendants' rows too."""

    __tablename__ = "scoping_invoice"
    __tenant_reads__ = "descendants"

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=50)


class Org(ScopingModel, table=True):
    """The tenant records of the hierarchy tests: a key, its parent's key, an active flag."""

    __tablename__ = "scoping_org"

    id: int | None = Field(default=None, primary_key=True)
    key: Any = Field(sa_column=Column(key_type_for(KEY_TYPE).column_type(), unique=True))
    parent_key: Any = Field(default=None, sa_column=Column(key_type_for(KEY_TYPE).column_type()))
    active: bool = True


# --------------------------------------------------------------------------------------------
# Models of the generated statements' owner world (test_generated.py): Project and Task again,
# with owner-only rows; their tables are created by that test.


class OwnedProject(ScopingModel, Keyed, table=True):
    """Project's twin whose rows are private to their owner inside the tenant."""

    __tablename__ = "scoping_owned_project"
    __table_args__ = placed(
        tenant_unique("owner_id", "name", name="uq_scoping_owned_project_owner_name")
    )

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field()
    name: str = Field(max_length=50)

    tasks: list["OwnedTask"] = Relationship(back_populates="project")


class OwnedTask(ScopingModel, Keyed, table=True):
    """Task's twin whose rows are private to their owner inside the tenant."""

    __tablename__ = "scoping_owned_task"
    __table_args__ = placed()

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field()
    name: str = Field(max_length=50)
    done: bool = False
    project_id: int | None = Field(default=None, foreign_key=placed_key("scoping_owned_project.id"))

    project: OwnedProject | None = Relationship(back_populates="tasks")


OwnedProject.task_count = column_property(  # type: ignore[attr-defined]
    select(func.count(OwnedTask.id))
    .where(OwnedTask.project_id == OwnedProject.id)
    .correlate_except(OwnedTask)
    .scalar_subquery(),
    deferred=True,
)

_owned_project_t = OwnedProject.__table__  # type: ignore[attr-defined]
_owned_task_t = OwnedTask.__table__  # type: ignore[attr-defined]
OwnedProject.open_tasks = relationship(  # type: ignore[attr-defined]
    OwnedTask,
    primaryjoin=and_(
        _owned_task_t.c.project_id == _owned_project_t.c.id, _owned_task_t.c.done == false()
    ),
    viewonly=True,
    order_by=_owned_task_t.c.id,
)


# --------------------------------------------------------------------------------------------
# Models of the generated statements' policy world (test_generated.py): Project and Task again,
# whose archived rows a row policy hides; their tables are created by that test.


def live(cls: Any) -> Any:
    """The row policy of the policy world: rows not archived."""
    return cls.archived == false()


class PolicyProject(ScopingModel, Keyed, table=True):
    """Project's twin whose archived rows no tenant session reads or writes."""

    __tablename__ = "scoping_policy_project"
    __table_args__ = placed(
        tenant_unique("archived", "name", name="uq_scoping_policy_project_archived_name")
    )
    __row_policies__ = (RowPolicy("live", live),)

    id: int | None = Field(default=None, primary_key=True)
    archived: bool = False
    name: str = Field(max_length=50)

    tasks: list["PolicyTask"] = Relationship(back_populates="project")


class PolicyTask(ScopingModel, Keyed, table=True):
    """Task's twin whose archived rows no tenant session reads or writes."""

    __tablename__ = "scoping_policy_task"
    __table_args__ = placed()
    __row_policies__ = (RowPolicy("live", live),)

    id: int | None = Field(default=None, primary_key=True)
    archived: bool = False
    name: str = Field(max_length=50)
    done: bool = False
    project_id: int | None = Field(
        default=None, foreign_key=placed_key("scoping_policy_project.id")
    )

    project: PolicyProject | None = Relationship(back_populates="tasks")


# --------------------------------------------------------------------------------------------
# Models of the generated statements' family world (test_generated.py): a Project twin read down
# the tenant family (a catalogue its ancestors share), and a Task twin read by its tenant only.


class FamilyProject(ScopingModel, Keyed, table=True):
    """Project's twin a tenant reads with its ancestors' rows."""

    __tablename__ = "scoping_family_project"
    __table_args__ = (tenant_unique("name", name="uq_scoping_family_project_tenant_name"),)
    __tenant_reads__ = "ancestors"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)

    tasks: list["FamilyTask"] = Relationship(back_populates="project")


class FamilyTask(ScopingModel, Keyed, table=True):
    """Task's twin, pointing at a project of the family; read by its own tenant only."""

    __tablename__ = "scoping_family_task"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    done: bool = False
    project_id: int | None = Field(default=None, foreign_key="scoping_family_project.id")

    project: FamilyProject | None = Relationship(back_populates="tasks")


def _project_extras(project: Any, task: Any) -> None:
    """A twin of Project gets Project's ``task_count`` and ``open_tasks``, over its task twin."""
    project.task_count = column_property(
        select(func.count(task.id))
        .where(task.project_id == project.id)
        .correlate_except(task)
        .scalar_subquery(),
        deferred=True,
    )
    project_t, task_t = project.__table__, task.__table__
    project.open_tasks = relationship(
        task,
        primaryjoin=and_(task_t.c.project_id == project_t.c.id, task_t.c.done == false()),
        viewonly=True,
        order_by=task_t.c.id,
    )


_project_extras(PolicyProject, PolicyTask)
_project_extras(FamilyProject, FamilyTask)
