"""Attacks through many-to-one references: acme's rows pointing at globex's rows."""

from __future__ import annotations

import pytest
from models import ACME, Project, Task, detached_row, snapshot
from sqlalchemy import insert, update
from sqlalchemy.orm import make_transient_to_detached

from fastapi_tenancy import CrossTenantWrite


def test_new_task_whose_project_is_another_tenants_object_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)
    zeus = detached_row(tenancy, Project, world.zeus)

    with session_for(ACME) as session:
        task = Task(name="hijack")
        session.add(task)
        with pytest.raises(CrossTenantWrite):
            task.project = zeus  # the cascade attaches globex's project to acme's session

    assert snapshot(tenancy) == before


def test_new_task_whose_project_id_is_another_tenants_key_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        session.add(Task(name="hijack", project_id=world.zeus))
        with pytest.raises(CrossTenantWrite):
            session.flush()

    assert snapshot(tenancy) == before


def test_repointing_the_tenants_task_at_another_tenants_project_is_refused(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    hermes = detached_row(tenancy, Project, world.hermes)

    with session_for(ACME) as session:
        design = session.get(Task, world.design)
        design.project_id = world.zeus
        with pytest.raises(CrossTenantWrite):
            session.flush()
        session.rollback()

        build = session.get(Task, world.build)
        with pytest.raises(CrossTenantWrite):
            build.project = hermes  # the cascade attaches globex's project to acme's session

    assert snapshot(tenancy) == before


def test_appending_another_tenants_task_to_the_tenants_project_is_refused(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    secret = detached_row(tenancy, Task, world.secret_plan)
    copy = Task(id=world.planted, name="planted", tenant_id=ACME, project_id=world.apollo)
    make_transient_to_detached(copy)

    for stolen in (secret, copy):
        with session_for(ACME) as session:
            apollo = session.get(Project, world.apollo)
            with pytest.raises(CrossTenantWrite):
                # refused as it attaches (tenant_id), or at flush (the key is globex's)
                append_and_flush(session, apollo, stolen)

    assert snapshot(tenancy) == before


def test_pointing_at_the_tenants_own_project_is_allowed(tenancy, session_for, world):
    with session_for(ACME) as session:
        session.add(Task(name="by-id", project_id=world.apollo))
        apollo = session.get(Project, world.apollo)
        session.add(Task(name="by-object", project=apollo))
        session.commit()

    with session_for(ACME) as session:
        apollo = session.get(Project, world.apollo)
        assert {t.name for t in apollo.tasks} == {"design", "build", "by-id", "by-object"}


def test_insert_statements_pointing_at_another_tenants_project_are_refused(
    tenancy, session_for, world
):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(Task).values(name="hijack", project_id=world.zeus))
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(Task), [{"name": "hijack", "project_id": world.hermes}])
        session.commit()

    # A task of acme's on zeus would also tell acme that zeus exists, and pin it in place.
    assert snapshot(tenancy) == before


def test_bulk_updates_pointing_at_another_tenants_project_are_refused(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):
            session.execute(
                update(Task).where(Task.id == world.design).values(project_id=world.zeus)
            )
        with pytest.raises(CrossTenantWrite):
            session.execute(update(Task), [{"id": world.build, "project_id": world.hermes}])
        session.commit()

    assert snapshot(tenancy) == before


def append_and_flush(session, project, task) -> None:
    project.tasks.append(task)
    session.flush()
