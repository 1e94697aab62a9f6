"""SQLAlchemy caches compiled statements by shape: one tenant's value must never stick.

Each statement runs as acme, then globex, then acme again, each time in a fresh session, so a
tenant baked into a cached compiled form would show up on the second or third run.
"""

from __future__ import annotations

from models import ACME, GLOBEX, Project, Task
from sqlalchemy import func, lambda_stmt, select, update
from sqlalchemy.orm import selectinload

ORDER = (ACME, GLOBEX, ACME)


def run_as_each(session_for, work):
    results = []
    for tenant in ORDER:
        with session_for(tenant) as session:
            results.append(work(session))
    return results


def test_same_select_shape_sees_each_tenants_rows(session_for, world):
    def names(session):
        rows = session.execute(select(Project.name).where(Project.name != "none"))
        return sorted(rows.scalars())

    assert run_as_each(session_for, names) == [["apollo"], ["hermes", "zeus"], ["apollo"]]


def test_same_get_shape_sees_each_tenants_rows(session_for, world):
    def fetch(session):
        return [session.get(Project, key) is not None for key in (world.apollo, world.zeus)]

    assert run_as_each(session_for, fetch) == [[True, False], [False, True], [True, False]]


def test_same_eager_load_shape_sees_each_tenants_children(session_for, world):
    def tasks(session):
        projects = session.execute(
            select(Project).options(selectinload(Project.tasks)).order_by(Project.id)
        ).scalars()
        return {p.name: sorted(t.name for t in p.tasks) for p in projects}

    assert run_as_each(session_for, tasks) == [
        {"apollo": ["build", "design"]},
        {"zeus": ["secret-plan"], "hermes": []},
        {"apollo": ["build", "design"]},
    ]


def test_same_lambda_statement_sees_each_tenants_rows(session_for, world):
    def counted(session):
        statement = lambda_stmt(lambda: select(func.count(Task.id)))
        return session.execute(statement).scalar()

    assert run_as_each(session_for, counted) == [3, 2, 3]


def test_same_bulk_update_shape_reaches_each_tenants_rows(session_for, world):
    def touched(session):
        result = session.execute(update(Task).where(Task.done.is_(False)).values(done=False))
        session.commit()
        return result.rowcount

    # acme: design, leak-probe (build is done); globex: secret-plan, planted.
    assert run_as_each(session_for, touched) == [2, 2, 2]
