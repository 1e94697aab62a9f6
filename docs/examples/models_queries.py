"""Queries of docs/models-and-scoping.md, on the models of models_basic.py.

Every function takes a session of the kit (``TenantSession`` in a route, ``tenancy.session()``
elsewhere) and writes no ``tenant_id`` condition of its own: the session adds it.
"""

from __future__ import annotations

from sqlalchemy import delete, false, func, text, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import selectinload
from sqlmodel import Session, col, select

from docs.examples.models_basic import Project, Task


# --8<-- [start:reads]
def project_names(session: Session) -> list[str]:
    return list(session.exec(select(Project.name).order_by(Project.name)).all())


def task_titles_with_project(session: Session) -> list[tuple[str, str]]:
    # A join: both tables are filtered, each on its own tenant_id.
    statement = (
        select(Task.title, Project.name)
        .join(Project, col(Task.project_id) == col(Project.id))
        .order_by(Task.title)
    )
    return [(title, project) for title, project in session.exec(statement).all()]


def projects_with_open_tasks(session: Session) -> list[str]:
    # A subquery is filtered too, wherever it sits in the statement.
    open_tasks = select(Task.project_id).where(Task.done == false())
    statement = select(Project.name).where(col(Project.id).in_(open_tasks)).order_by(Project.name)
    return list(session.exec(statement).all())


def count_tasks(session: Session) -> int:
    return session.exec(select(func.count(col(Task.id)))).one()


def project_by_id(session: Session, project_id: int) -> Project | None:
    # Another tenant's id answers None, exactly like an id that does not exist.
    return session.get(Project, project_id)


# --8<-- [end:reads]


# --8<-- [start:loads]
def task_titles_of(session: Session, project_id: int) -> list[str]:
    project = session.get(Project, project_id)
    if project is None:
        return []
    return sorted(task.title for task in project.tasks)  # a lazy load, filtered


def projects_with_tasks(session: Session) -> dict[str, list[str]]:
    statement = select(Project).options(selectinload(Project.tasks))  # type: ignore[arg-type]
    return {
        project.name: sorted(task.title for task in project.tasks)
        for project in session.exec(statement).all()
    }


# --8<-- [end:loads]


# --8<-- [start:bulk]
def close_every_task(session: Session) -> int:
    result = session.exec(update(Task).values(done=True))  # this tenant's tasks only
    session.commit()
    return result.rowcount


def delete_done_tasks(session: Session) -> int:
    result = session.exec(delete(Task).where(col(Task.done)))
    session.commit()
    return result.rowcount


# --8<-- [end:bulk]


# --8<-- [start:writes]
def add_project(session: Session, name: str) -> Project:
    project = Project(name=name)  # no tenant_id: the session stamps the bound tenant on flush
    session.add(project)
    session.commit()
    return project


def add_task(session: Session, project_id: int, title: str) -> Task:
    # A project_id of another tenant's project is refused (cross_tenant_write) on flush.
    task = Task(title=title, project_id=project_id)
    session.add(task)
    session.commit()
    return task


# --8<-- [end:writes]


# --8<-- [start:refused]
def names_by_raw_sql(session: Session) -> list[str]:
    # Refused (unscoped_statement): the kit cannot add a tenant condition to SQL text.
    return list(session.execute(text("SELECT name FROM models_project")).scalars().all())


def names_by_core_table(session: Session) -> list[str]:
    # Refused (unscoped_statement): nothing adds a tenant filter to a core SELECT, and the wall
    # refuses a tenant table it cannot prove filtered.
    projects = Project.__table__  # type: ignore[attr-defined]
    return list(session.exec(select(projects.c.name)).all())


def upsert_project(session: Session, name: str) -> None:
    # Refused (unscoped_statement): ON CONFLICT / ON DUPLICATE KEY could update a row that
    # belongs to another tenant.
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.exec(postgresql.insert(Project).values(name=name).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.exec(sqlite.insert(Project).values(name=name).on_conflict_do_nothing())
    else:
        session.exec(mysql.insert(Project).values(name=name).on_duplicate_key_update(name=name))


# --8<-- [end:refused]
