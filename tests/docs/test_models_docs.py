"""docs/models-and-scoping.md: its models and queries, run on every database.

Two tenants hold rows with the same names; every query the page shows must answer one tenant's
rows only, and every statement it says is refused must raise its documented error and write
nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, event, inspect
from sqlmodel import select

from docs.examples.models_basic import Invoice, Project, Task, Template, metadata
from docs.examples.models_queries import (
    add_project,
    add_task,
    close_every_task,
    count_tasks,
    delete_done_tasks,
    names_by_core_table,
    names_by_raw_sql,
    project_by_id,
    project_names,
    projects_with_open_tasks,
    projects_with_tasks,
    task_titles_of,
    task_titles_with_project,
    upsert_project,
)
from fastapi_tenancy import (
    Access,
    AlreadyExists,
    CrossTenantWrite,
    HeaderResolver,
    SessionScope,
    Tenancy,
    TenancyError,
    TenantRequired,
    UnscopedStatement,
    with_tenant,
    without_tenant,
)


@dataclass(frozen=True)
class World:
    """Ids of the seeded projects: both tenants have a "roadmap"."""

    acme_roadmap: int
    acme_website: int
    globex_roadmap: int


@pytest.fixture
def tenancy(engine: Engine, create_tables: Any) -> Tenancy:
    create_tables(engine, metadata)
    return Tenancy(engine, resolvers=[HeaderResolver()])


@pytest.fixture
def world(tenancy: Tenancy) -> World:
    """Seeded through the page's own write functions, one tenant at a time."""
    ids = {}
    with with_tenant("acme"), tenancy.session() as session:
        roadmap = add_project(session, "roadmap")
        website = add_project(session, "website")
        add_task(session, roadmap.id, "draft")  # type: ignore[arg-type]
        add_task(session, website.id, "launch")  # type: ignore[arg-type]
        ids["acme_roadmap"], ids["acme_website"] = roadmap.id, website.id
    with with_tenant("globex"), tenancy.session() as session:
        roadmap = add_project(session, "roadmap")
        add_task(session, roadmap.id, "secret")  # type: ignore[arg-type]
        ids["globex_roadmap"] = roadmap.id
    return World(**ids)  # type: ignore[arg-type]


def everything(tenancy: Tenancy) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read in a trusted without_tenant() block."""
    with without_tenant(reason="test snapshot"), tenancy.session() as session:
        projects = session.exec(select(Project.tenant_id, Project.id, Project.name)).all()
        tasks = session.exec(select(Task.tenant_id, Task.title, Task.done, Task.project_id)).all()
    return {"projects": sorted(map(tuple, projects)), "tasks": sorted(map(tuple, tasks))}


@contextmanager
def sql_sent(engine: Engine) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(cursor: Any, statement: str, *args: Any) -> None:
        context = args[-1]
        if getattr(context, "compiled", None) is not None:  # not the dialect's first-connect SQL
            sent.append(statement)

    # the send hooks, after the kit's wall (which checks each statement there first)
    names = ("do_execute", "do_executemany", "do_execute_no_params")
    for name in names:
        event.listen(engine, name, record)
    try:
        yield sent
    finally:
        for name in names:
            event.remove(engine, name, record)


def test_every_read_on_the_page_answers_the_bound_tenants_rows_only(
    tenancy: Tenancy, world: World
) -> None:
    with with_tenant("acme"), tenancy.session() as session:
        assert project_names(session) == ["roadmap", "website"]
        assert task_titles_with_project(session) == [("draft", "roadmap"), ("launch", "website")]
        assert projects_with_open_tasks(session) == ["roadmap", "website"]
        assert count_tasks(session) == 2
        assert project_by_id(session, world.acme_roadmap) is not None

    with with_tenant("globex"), tenancy.session() as session:
        assert project_names(session) == ["roadmap"]
        assert task_titles_with_project(session) == [("secret", "roadmap")]
        assert projects_with_open_tasks(session) == ["roadmap"]
        assert count_tasks(session) == 1


def test_another_tenants_id_reads_like_a_missing_one(tenancy: Tenancy, world: World) -> None:
    with with_tenant("globex"), tenancy.session() as session:
        assert project_by_id(session, world.acme_website) is None
        assert project_by_id(session, 10**6) is None
        assert task_titles_of(session, world.acme_roadmap) == []


def test_relationship_loads_are_scoped(tenancy: Tenancy, world: World) -> None:
    with with_tenant("acme"), tenancy.session() as session:
        assert task_titles_of(session, world.acme_roadmap) == ["draft"]
        assert projects_with_tasks(session) == {"roadmap": ["draft"], "website": ["launch"]}
    with with_tenant("globex"), tenancy.session() as session:
        assert projects_with_tasks(session) == {"roadmap": ["secret"]}


def test_bulk_update_and_delete_reach_only_the_bound_tenants_rows(
    tenancy: Tenancy, world: World
) -> None:
    globex_before = [row for row in everything(tenancy)["tasks"] if row[0] == "globex"]

    with with_tenant("acme"), tenancy.session() as session:
        assert close_every_task(session) == 2
        assert delete_done_tasks(session) == 2

    after = everything(tenancy)["tasks"]
    assert [row for row in after if row[0] == "acme"] == []
    assert [row for row in after if row[0] == "globex"] == globex_before


def test_new_rows_are_stamped_with_the_bound_tenant(tenancy: Tenancy, world: World) -> None:
    with with_tenant("globex"), tenancy.session() as session:
        project = add_project(session, "website")
        task = add_task(session, project.id, "ship")  # type: ignore[arg-type]
        stamped = (project.id, project.tenant_id, task.tenant_id)
    assert stamped[1:] == ("globex", "globex")
    assert ("globex", stamped[0], "website") in everything(tenancy)["projects"]


def assert_error(error: TenancyError, code: str, status: int) -> None:
    assert (error.code, error.status_code) == (code, status)


def test_a_task_on_another_tenants_project_is_refused_and_nothing_is_written(
    tenancy: Tenancy, world: World
) -> None:
    before = everything(tenancy)
    with (
        with_tenant("globex"),
        tenancy.session() as session,
        pytest.raises(CrossTenantWrite) as refused,
    ):
        add_task(session, world.acme_roadmap, "sneaky")
    assert_error(refused.value, "cross_tenant_write", 403)
    assert everything(tenancy) == before


def test_rows_naming_or_moving_to_another_tenant_are_refused(
    tenancy: Tenancy, world: World
) -> None:
    before = everything(tenancy)
    with with_tenant("acme"), tenancy.session() as session:
        with pytest.raises(CrossTenantWrite):
            session.add(Project(name="planted", tenant_id="globex"))

        project = session.get(Project, world.acme_website)
        assert project is not None
        project.tenant_id = "globex"
        with pytest.raises(CrossTenantWrite) as refused:
            session.commit()
    assert_error(refused.value, "cross_tenant_write", 403)
    assert everything(tenancy) == before


def test_queries_with_no_tenant_bound_fail_closed_before_any_sql(
    tenancy: Tenancy, world: World
) -> None:
    with tenancy.session() as session, sql_sent(tenancy.engine) as sent:  # type: ignore[arg-type]
        with pytest.raises(TenantRequired) as refused:
            project_names(session)
        with pytest.raises(TenantRequired):
            project_by_id(session, world.acme_roadmap)
        session.add(Project(name="orphan"))
        with pytest.raises(TenantRequired):
            session.commit()
    assert_error(refused.value, "tenant_required", 400)
    assert sent == []
    assert len(everything(tenancy)["projects"]) == 3


def test_unscopable_statements_are_refused_and_write_nothing(
    tenancy: Tenancy, world: World
) -> None:
    before = everything(tenancy)
    with with_tenant("acme"), tenancy.session() as session:
        with sql_sent(tenancy.engine) as sent:  # type: ignore[arg-type]
            for statement in (
                lambda: names_by_raw_sql(session),
                lambda: names_by_core_table(session),
                lambda: upsert_project(session, "roadmap"),
            ):
                with pytest.raises(UnscopedStatement) as refused:
                    statement()
                assert_error(refused.value, "unscoped_statement", 500)
        session.commit()
    assert sent == []
    assert everything(tenancy) == before


def test_names_are_unique_per_tenant(tenancy: Tenancy, world: World) -> None:
    # Both tenants already have a "roadmap" (see the fixture); a second one in acme is refused.
    with (
        with_tenant("acme"),
        tenancy.session() as session,
        pytest.raises(AlreadyExists) as refused,
    ):
        add_project(session, "roadmap")
    assert_error(refused.value, "already_exists", 409)
    assert [row[2] for row in everything(tenancy)["projects"]].count("roadmap") == 2


def test_a_custom_tenant_column_is_scoped_and_stamped_the_same_way(tenancy: Tenancy) -> None:
    assert inspect(Invoice).columns["tenant_id"].name == "org_id"
    for tenant in ("acme", "globex"):
        with with_tenant(tenant), tenancy.session() as session:
            session.add(Invoice(number="2024-001"))
            session.commit()

    with with_tenant("acme"), tenancy.session() as session:
        with sql_sent(tenancy.engine) as sent:  # type: ignore[arg-type]
            invoices = [(i.tenant_id, i.number) for i in session.exec(select(Invoice)).all()]
        session.add(Invoice(number="2024-001"))
        with pytest.raises(AlreadyExists):
            session.commit()
    assert invoices == [("acme", "2024-001")]
    assert "org_id" in sent[0]


def test_a_global_access_model_is_read_across_tenants_only_with_no_tenant_bound(
    tenancy: Tenancy,
) -> None:
    for tenant in ("acme", "globex"):
        with with_tenant(tenant), tenancy.session() as session:
            session.add(Template(title=f"{tenant} invoice"))
            session.commit()

    with tenancy.make_session(SessionScope(tenant_id=None, access=Access.GLOBAL)) as session:
        titles = session.exec(select(Template.title).order_by(Template.title)).all()
        with pytest.raises(TenantRequired):
            session.exec(select(Project))
    assert titles == ["acme invoice", "globex invoice"]

    with with_tenant("acme"), tenancy.session() as session:
        assert session.exec(select(Template.title)).all() == ["acme invoice"]
