"""Attacks on reads: acme tries to see globex's rows through every kind of SELECT.

Each test runs as acme on the seeded world (see models.py), where globex's task ``planted``
hangs off acme's project and acme's task ``leak-probe`` off globex's ``zeus``: any path that
forgets the tenant returns one of them.
"""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Project, Task
from sqlalchemy import exists, func, select, union, union_all
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import aliased, joinedload, selectinload, undefer


def names(rows) -> set[str]:
    return {row.name for row in rows}


def test_select_of_projects_returns_only_the_tenants_rows(session_for, world):
    with session_for(ACME) as session:
        by_id = session.execute(select(Project).where(Project.id == world.zeus)).all()
        every = session.execute(select(Project.name)).scalars().all()

    assert by_id == []
    assert every == ["apollo"]


def test_session_get_and_get_one_of_another_tenants_id_find_nothing(session_for, world):
    with session_for(ACME) as session:
        assert session.get(Project, world.zeus) is None
        assert session.get(Task, world.secret_plan) is None
        with pytest.raises(NoResultFound):
            session.get_one(Project, world.zeus)
        assert session.get(Project, world.apollo).name == "apollo"


def test_joins_along_relationships_never_reach_another_tenants_rows(session_for, world):
    with session_for(ACME) as session:
        to_projects = session.execute(
            select(Task.name, Project.name).join(Task.project).order_by(Task.id)
        ).all()
        to_tasks = session.execute(
            select(Project.name, Task.name).join(Project.tasks).order_by(Task.id)
        ).all()

    # leak-probe is acme's but its project is globex's zeus; planted is globex's on apollo.
    assert [tuple(r) for r in to_projects] == [("design", "apollo"), ("build", "apollo")]
    assert [tuple(r) for r in to_tasks] == [("apollo", "design"), ("apollo", "build")]


def test_explicit_joins_are_scoped_on_both_sides(session_for, world):
    with session_for(ACME) as session:
        inner = session.execute(
            select(Task.name)
            .join(Project, Project.id == Task.project_id)
            .where(Project.name == "zeus")
        ).all()
        outer = session.execute(
            select(Task.name, Project.name)
            .outerjoin(Project, Project.id == Task.project_id)
            .order_by(Task.id)
        ).all()

    assert inner == []
    assert [tuple(r) for r in outer] == [
        ("design", "apollo"),
        ("build", "apollo"),
        ("leak-probe", None),
    ]


def test_in_subquery_over_another_tenants_tasks_matches_nothing(session_for, world):
    subquery = select(Task.project_id).where(Task.name == "planted")

    with session_for(ACME) as session:
        found = session.execute(select(Project.name).where(Project.id.in_(subquery))).all()

    # The planted task is globex's; if the subquery were unscoped it would return apollo.
    assert found == []


def test_exists_over_another_tenants_rows_is_false(session_for, world):
    planted_there = exists().where(Task.project_id == Project.id, Task.name == "planted")
    zeus = select(Project.id).where(Project.name == "zeus")

    with session_for(ACME) as session:
        correlated = session.execute(select(Project.name).where(planted_there)).all()
        as_method = session.execute(select(zeus.exists())).scalar()
        as_function = session.execute(select(exists(zeus))).scalar()

    assert correlated == []
    assert as_method is False
    assert as_function is False


def test_exists_with_a_where_clause_on_another_tenants_row_is_false(session_for, world):
    with session_for(ACME) as session:
        found = session.execute(select(exists().where(Project.name == "zeus"))).scalar()

    # SQLAlchemy's documented spelling; refusing it would be a false refusal.
    assert found is False


def test_count_of_projects_counts_only_the_tenants_rows(session_for, world):
    with session_for(ACME) as session:
        count_star = session.execute(select(func.count()).select_from(Project)).scalar()
        count_column = session.execute(select(func.count(Project.id))).scalar()
        tasks_per_project = session.execute(
            select(Task.project_id, func.count(Task.id)).group_by(Task.project_id)
        ).all()

    assert count_star == 1
    assert count_column == 1
    assert {tuple(r) for r in tasks_per_project} == {(world.apollo, 2), (world.zeus, 1)}


def test_scalar_subquery_counts_only_the_tenants_tasks(session_for, world):
    task_count = select(func.count(Task.id)).where(Task.project_id == Project.id).scalar_subquery()
    another_name = select(Project.name).where(Project.id == world.zeus).scalar_subquery()

    with session_for(ACME) as session:
        counted = session.execute(select(Project.name, task_count)).all()
        leaked = session.execute(select(another_name)).scalar()

    assert [tuple(r) for r in counted] == [("apollo", 2)]
    assert leaked is None


def test_union_of_selects_is_scoped_in_every_branch(session_for, world):
    statement = union(
        select(Project.name).where(Project.tenant_id == GLOBEX),
        select(Task.name).where(Task.tenant_id == GLOBEX),
    )

    with session_for(ACME) as session:
        rows = session.execute(statement).all()
        everything = session.execute(union_all(select(Project.name), select(Task.name))).all()

    assert rows == []
    assert sorted(r[0] for r in everything) == ["apollo", "build", "design", "leak-probe"]


def test_cte_over_another_tenants_projects_is_empty(session_for, world):
    wanted = select(Project.id, Project.name).where(Project.name == "zeus").cte("wanted")

    with session_for(ACME) as session:
        direct = session.execute(select(wanted.c.name)).all()
        joined = session.execute(
            select(Task.name).join(wanted, wanted.c.id == Task.project_id)
        ).all()

    # leak-probe points at zeus: joined to an unscoped CTE it would come back.
    assert direct == []
    assert joined == []


def test_aliased_entity_is_scoped_like_the_entity(session_for, world):
    other = aliased(Project)

    with session_for(ACME) as session:
        direct = session.execute(select(other).where(other.name == "zeus")).all()
        pairs = session.execute(
            select(Project.name, other.name).join(other, other.id != Project.id)
        ).all()
        by_alias = session.execute(
            select(Task.name).join(other, Task.project).where(other.name == "zeus")
        ).all()

    assert direct == []
    assert pairs == []
    assert by_alias == []


def test_lazy_loads_skip_another_tenants_rows(session_for, world):
    with session_for(ACME) as session:
        apollo = session.get(Project, world.apollo)
        probe = session.get(Task, world.leak_probe)

        assert names(apollo.tasks) == {"design", "build"}
        assert probe.project_id == world.zeus
        assert probe.project is None


def test_selectinload_skips_another_tenants_rows(session_for, world):
    with session_for(ACME) as session:
        apollo = session.execute(select(Project).options(selectinload(Project.tasks))).scalar_one()
        probe = session.execute(
            select(Task).where(Task.id == world.leak_probe).options(selectinload(Task.project))
        ).scalar_one()

        assert names(apollo.tasks) == {"design", "build"}
        assert probe.project is None


def test_joinedload_skips_another_tenants_rows(session_for, world):
    with session_for(ACME) as session:
        apollo = (
            session.execute(select(Project).options(joinedload(Project.tasks)))
            .unique()
            .scalar_one()
        )
        probe = session.execute(
            select(Task).where(Task.id == world.leak_probe).options(joinedload(Task.project))
        ).scalar_one()

        assert names(apollo.tasks) == {"design", "build"}
        assert probe.project is None


def test_has_and_any_comparisons_do_not_match_another_tenants_rows(session_for, world):
    with session_for(ACME) as session:
        has = session.execute(
            select(Task.name).where(Task.project.has(Project.name == "zeus"))
        ).all()
        any_ = session.execute(
            select(Project.name).where(Project.tasks.any(Task.name == "planted"))
        ).all()

    # leak-probe's project is zeus; planted hangs off apollo: unscoped, both would match.
    assert has == []
    assert any_ == []


def test_correlated_column_property_counts_only_the_tenants_tasks(session_for, world):
    with session_for(ACME) as session:
        eager = session.execute(select(Project).options(undefer(Project.task_count))).scalar_one()
        column = session.execute(select(Project.name, Project.task_count)).all()
    with session_for(ACME) as session:
        lazy_count = session.get(Project, world.apollo).task_count  # a deferred column load

    # apollo has acme's design and build, and globex's planted task, which must not count.
    assert eager.task_count == 2
    assert [tuple(r) for r in column] == [("apollo", 2)]
    assert lazy_count == 2


def test_relationship_on_table_columns_skips_another_tenants_rows(session_for, world):
    with session_for(ACME) as session:
        apollo = session.get(Project, world.apollo)
        lazy = names(apollo.open_tasks)
        session.expunge_all()
        eager = session.execute(
            select(Project).options(selectinload(Project.open_tasks))
        ).scalar_one()
        joined = session.execute(select(Project.name, Task.name).join(Project.open_tasks)).all()

        # design is open, build is done; globex's open planted task hangs off apollo too.
        assert lazy == {"design"}
        assert names(eager.open_tasks) == {"design"}
        assert [tuple(r) for r in joined] == [("apollo", "design")]
