"""Citus: what it would refuse of a schema, the statements that distribute one, and the
startup check of the setting propagation the tenant needs.

The tests marked ``citus`` run against a real coordinator (``TENANCY_TEST_CITUS_URL``) and are
left out otherwise, with one line in the summary; CI has no Citus. The others run everywhere.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlmodel import select

from docs.examples.citus_distribute import distribute_at_start
from example_app.models import Plan, Project, Tenant
from example_app.models import metadata as example_metadata
from fastapi_tenancy import (
    Access,
    CrossTenantWrite,
    HeaderResolver,
    SessionScope,
    Tenancy,
    TenancyMisuse,
    mutable_tenant,
    with_tenant,
)
from fastapi_tenancy.database_errors import classify_database_error
from fastapi_tenancy.models import TENANT_SHARED_ROWS_INFO_KEY, TENANT_TABLE_INFO_KEY
from fastapi_tenancy.postgres.alembic import DistributeTablesOp, UndistributeTablesOp
from fastapi_tenancy.postgres.check import check_database
from fastapi_tenancy.postgres.citus import (
    DistributedTable,
    citus_state,
    distribute,
    distribution_problems,
    distribution_statements,
)
from fastapi_tenancy.postgres.guard import citus_problem


def test_citus_without_local_set_propagation_is_refused_with_the_fix():
    for propagation in ("", "none"):
        problem = citus_problem([("role", "app", None, True), ("citus", propagation, None, True)])
        assert problem is not None
        assert "citus.propagate_set_commands=local" in problem


@pytest.mark.parametrize(
    "rows",
    [
        [("role", "app", None, True)],  # plain PostgreSQL: no citus row
        [("role", "app", None, True), ("citus", "local", None, True)],
    ],
)
def test_plain_postgres_and_citus_with_local_propagation_pass(rows):
    assert citus_problem(rows) is None


# --------------------------------------------------------------------------------------------
# What Citus would refuse, from the metadata alone


def _tenant_table(metadata: MetaData, name: str, *columns: Any, **info: Any) -> Table:
    return Table(name, metadata, *columns, info={TENANT_TABLE_INFO_KEY: "tenant_id", **info})


def test_the_example_apps_tables_distribute_as_they_are():
    assert distribution_problems(example_metadata) == []


def test_every_problem_citus_would_refuse_is_found_with_its_fix():
    metadata = MetaData()
    Table("plans", metadata, Column("code", String(20), primary_key=True))
    _tenant_table(
        metadata,
        "projects",
        Column("id", Integer, primary_key=True),  # SERIAL, and a key without the tenant
        Column("tenant_id", String(63), nullable=False),
        Column("name", String(50)),
        UniqueConstraint("name", name="uq_projects_name"),
    )
    _tenant_table(
        metadata,
        "tasks",
        Column("tenant_id", String(63), primary_key=True),
        Column("id", Integer, Identity(), primary_key=True),  # an int4 identity
        Column("project_id", Integer, ForeignKey("projects.id")),  # without the tenant
        Index("ix_tasks_code", "id", unique=True),
    )
    _tenant_table(
        metadata,
        "defaults",
        Column("tenant_id", Integer, primary_key=True),  # another type
        Column("id", BigInteger, Identity(), primary_key=True),
        **{TENANT_SHARED_ROWS_INFO_KEY: True},
    )
    Table(
        "audit",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("task_id", Integer, ForeignKey("tasks.id")),
    )

    found = {(f.code, f.subject) for f in distribution_problems(metadata)}

    assert found == {
        ("citus_key_without_tenant", "projects"),
        ("citus_serial_id", "projects.id"),
        ("citus_unique_without_tenant", "projects.uq_projects_name"),
        ("citus_identity_not_bigint", "tasks.id"),
        ("citus_foreign_key_without_tenant", "tasks.project_id"),
        ("citus_unique_without_tenant", "tasks.ix_tasks_code"),
        ("citus_shared_rows", "defaults"),
        ("citus_tenant_types_differ", "tenant columns"),
        ("citus_reference_to_tenant_table", "audit.task_id"),
    }
    assert all(f.fix for f in distribution_problems(metadata))


def test_distribute_refuses_a_schema_citus_would_refuse_before_sending_anything():
    metadata = MetaData()
    _tenant_table(
        metadata,
        "projects",
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("tenant_id", String(63), nullable=False),
    )
    engine = create_engine("sqlite://")  # nothing is sent: no Citus needed to refuse
    with pytest.raises(TenancyMisuse, match="citus_key_without_tenant"):
        distribute(engine, metadata)


# --------------------------------------------------------------------------------------------
# The statements, in the order Citus needs

FOREIGN_KEYS = [
    (
        "fk_tasks_project",
        "tasks",
        "FOREIGN KEY (tenant_id, project_id) REFERENCES projects(tenant_id, id)",
    ),
    ("fk_projects_plan", "projects", "FOREIGN KEY (plan) REFERENCES plans(code)"),
]


def test_a_fresh_schema_is_distributed_in_the_order_citus_needs():
    statements = distribution_statements(
        {}, FOREIGN_KEYS, {"projects": "tenant_id", "tasks": "tenant_id"}, ["plans"]
    )

    assert statements == [
        "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'",
        "ALTER TABLE tasks DROP CONSTRAINT fk_tasks_project",
        "ALTER TABLE projects DROP CONSTRAINT fk_projects_plan",
        "SELECT create_reference_table('plans')",
        "SELECT create_distributed_table('projects', 'tenant_id', colocate_with => 'none')",
        "SELECT create_distributed_table('tasks', 'tenant_id', colocate_with => 'projects')",
        "ALTER TABLE tasks ADD CONSTRAINT fk_tasks_project "
        "FOREIGN KEY (tenant_id, project_id) REFERENCES projects(tenant_id, id)",
        "ALTER TABLE projects ADD CONSTRAINT fk_projects_plan FOREIGN KEY (plan) "
        "REFERENCES plans(code)",
    ]


def test_distributing_again_sends_nothing_and_a_new_table_joins_the_group():
    done = {
        "plans": DistributedTable("reference", None, 1),
        "projects": DistributedTable("distributed", "tenant_id", 2),
        "tasks": DistributedTable("distributed", "tenant_id", 2),
    }
    tables = {"projects": "tenant_id", "tasks": "tenant_id"}
    assert distribution_statements(done, [], tables, ["plans"]) == []

    more = distribution_statements(done, [], {**tables, "notes": "tenant_id"}, ["plans"])
    assert more[-1] == (
        "SELECT create_distributed_table('notes', 'tenant_id', colocate_with => 'projects')"
    )


@pytest.mark.parametrize(
    "state",
    [
        {"projects": DistributedTable("distributed", "id", 2)},  # another column
        {"projects": DistributedTable("reference", None, 1)},
        {  # not colocated
            "projects": DistributedTable("distributed", "tenant_id", 2),
            "tasks": DistributedTable("distributed", "tenant_id", 3),
        },
    ],
)
def test_a_table_citus_holds_otherwise_is_refused_not_moved(state):
    with pytest.raises(TenancyMisuse):
        distribution_statements(state, [], {"projects": "tenant_id", "tasks": "tenant_id"}, [])


# --------------------------------------------------------------------------------------------
# On plain PostgreSQL: what the checker and the migration operations say without Citus


@pytest.mark.backends("postgres")
def test_the_checkers_citus_mode_reports_a_database_without_citus(engine):
    findings = check_database(engine, citus=True)

    assert [f.code for f in findings if f.code.startswith("citus")] == ["citus_missing"]


def test_the_distribution_operations_refuse_to_guess_offline():
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": io.StringIO()}
    )
    with pytest.raises(TenancyMisuse, match="online"):
        Operations(context).distribute_tables(tenant_tables={"projects": "tenant_id"})
    assert isinstance(DistributeTablesOp({"projects": "tenant_id"}).reverse(), UndistributeTablesOp)


# --------------------------------------------------------------------------------------------
# On a Citus coordinator (TENANCY_TEST_CITUS_URL), never in CI


PROPAGATION = "citus.propagate_set_commands"


@pytest.fixture
def coordinator() -> Iterator[Engine]:
    engine = create_engine(
        os.environ["TENANCY_TEST_CITUS_URL"],
        poolclass=NullPool,
        connect_args={"options": f"-c {PROPAGATION}=local"},
    )
    metadata_names = [table.name for table in reversed(example_metadata.sorted_tables)]
    try:
        with engine.begin() as conn:
            for name in metadata_names:  # named, never REASSIGN OWNED (a Citus 13.2 crash)
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name} CASCADE")
        example_metadata.create_all(engine)
        yield engine
        with engine.begin() as conn:
            for name in metadata_names:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name} CASCADE")
    finally:
        engine.dispose()


@pytest.mark.citus
def test_the_example_apps_tables_distribute_once_colocated_and_pass_the_check(coordinator):
    ran = distribute_at_start(coordinator, example_metadata)  # the docs' sample
    assert any("create_distributed_table" in statement for statement in ran)
    assert distribute(coordinator, example_metadata) == []  # safe to run again

    with coordinator.connect() as conn:
        state = citus_state(conn)
    tenant = {t.name for t in example_metadata.sorted_tables if TENANT_TABLE_INFO_KEY in t.info}
    shared = {t.name for t in example_metadata.sorted_tables} - tenant
    assert {name for name, t in state.items() if t.kind == "distributed"} >= tenant
    assert {state[name].column for name in tenant} == {"tenant_id"}
    assert len({state[name].group for name in tenant}) == 1
    assert all(state[name].kind == "reference" for name in shared)
    findings = check_database(coordinator, metadata=example_metadata, citus=True)
    assert [f for f in findings if f.code.startswith("citus")] == [], findings
    plain = create_engine(os.environ["TENANCY_TEST_CITUS_URL"], poolclass=NullPool)
    try:
        findings = check_database(plain, metadata=example_metadata, citus=True)
    finally:
        plain.dispose()
    assert [f.code for f in findings if f.code.startswith("citus")] == ["citus_set_propagation"]


@pytest.mark.citus
def test_moving_a_row_to_another_tenant_is_refused_clearly_on_citus(coordinator):
    distribute(coordinator, example_metadata)
    tenancy = Tenancy(coordinator, resolvers=[HeaderResolver()])
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        session.add(Plan(code="free", name="Free"))
        session.flush()
        for slug in ("acme", "globex"):
            session.add(Tenant(slug=slug, name=slug, plan="free"))
        session.flush()
        session.add(Project(name="apollo", tenant_id="acme"))
        session.commit()
    with with_tenant("acme"), mutable_tenant(reason="a test"), tenancy.session() as session:
        project = session.exec(select(Project)).one()
        project.tenant_id = "globex"
        with pytest.raises(DBAPIError) as raised:
            session.commit()
    answer = classify_database_error(raised.value)  # what a request answers (403)
    assert isinstance(answer, CrossTenantWrite)
    assert "export the tenant" in answer.detail
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        assert [p.tenant_id for p in session.exec(select(Project))] == ["acme"]
