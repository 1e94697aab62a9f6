"""Tenant keys compare exactly on every database: ``ACME`` is another tenant than ``acme``.

MySQL and MariaDB compare strings case-insensitively under their default collations, so with a
key pattern that admits upper case, tenant ``ACME`` would read ``acme``'s rows. The tenant column
of ``TenantScoped`` (and any column declared ``TenantKey``) gets a binary collation there, and
the collation check reports tenant columns created without one.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, delete, func
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import registry
from sqlalchemy.schema import CreateTable
from sqlmodel import Field, SQLModel, select

from fastapi_tenancy import (
    Access,
    HeaderResolver,
    SessionScope,
    Tenancy,
    TenantKey,
    TenantScoped,
    tenant_unique,
)
from fastapi_tenancy.checks import find_case_insensitive_tenant_columns
from fastapi_tenancy.models import TENANT_TABLE_INFO_KEY

collation_registry = registry()


class CollationModel(SQLModel, registry=collation_registry):
    """Base of this module's tables: their own registry and metadata."""


class Doc(CollationModel, TenantScoped, table=True):
    __tablename__ = "collation_doc"
    __table_args__ = (tenant_unique("name", name="uq_collation_doc_tenant_name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


class Memo(CollationModel, TenantScoped, table=True):
    """A tenant model that redeclares its tenant column (named ``org_id``) with ``TenantKey``."""

    __tablename__ = "collation_memo"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(
        sa_type=TenantKey, index=True, max_length=63, sa_column_kwargs={"name": "org_id"}
    )
    title: str = Field(max_length=50)


legacy_metadata = MetaData()
legacy = Table(
    "collation_legacy",
    legacy_metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(63), nullable=False, index=True),
    info={TENANT_TABLE_INFO_KEY: "tenant_id"},
)
"""A tenant table created the way the kit did before: a plain string tenant column."""


def make_tenancy(engine: Engine) -> Tenancy:
    return Tenancy(engine, resolvers=[HeaderResolver()], key_pattern=r"[A-Za-z0-9]{1,63}")


def admin(tenancy: Tenancy) -> Any:
    return tenancy.make_session(SessionScope(None, Access.UNSCOPED))


def seed(tenancy: Tenancy) -> dict[str, int | None]:
    """One doc and one memo for ``acme`` and for ``ACME``; answers the docs' ids by tenant."""
    with admin(tenancy) as session:
        docs = {
            "acme": Doc(name="apollo", tenant_id="acme"),
            "ACME": Doc(name="zeus", tenant_id="ACME"),
        }
        session.add_all(docs.values())
        session.add_all(
            [Memo(title="lower memo", tenant_id="acme"), Memo(title="UPPER MEMO", tenant_id="ACME")]
        )
        session.commit()
        return {tenant: doc.id for tenant, doc in docs.items()}


def test_tenants_whose_keys_differ_only_in_case_never_see_each_others_rows(
    engine, create_tables
) -> None:
    create_tables(engine, Doc, Memo)
    tenancy = make_tenancy(engine)
    ids = seed(tenancy)
    for tenant, other, doc, memo in [
        ("ACME", "acme", "zeus", "UPPER MEMO"),
        ("acme", "ACME", "apollo", "lower memo"),
    ]:
        with tenancy.make_session(SessionScope(tenant)) as session:
            assert session.exec(select(Doc.name)).all() == [doc]
            assert session.exec(select(Memo.title)).all() == [memo]
            assert session.exec(select(func.count()).select_from(Doc)).one() == 1
            assert session.get(Doc, ids[other]) is None
            assert session.get(Doc, ids[tenant]) is not None


def test_a_bulk_delete_leaves_the_rows_of_the_tenant_spelled_in_another_case(
    engine, create_tables
) -> None:
    create_tables(engine, Doc, Memo)
    tenancy = make_tenancy(engine)
    seed(tenancy)
    with tenancy.make_session(SessionScope("ACME")) as session:
        session.execute(delete(Doc))
        session.execute(delete(Memo))
        session.commit()
    with admin(tenancy) as session:
        assert session.exec(select(Doc.tenant_id, Doc.name)).all() == [("acme", "apollo")]
        assert session.exec(select(Memo.tenant_id)).all() == ["acme"]


def test_tenant_unique_names_are_per_tenant_even_when_keys_differ_only_in_case(
    engine, create_tables
) -> None:
    create_tables(engine, Doc)
    tenancy = make_tenancy(engine)
    for tenant in ("acme", "ACME"):
        with tenancy.make_session(SessionScope(tenant)) as session:
            session.add(Doc(name="roadmap"))
            session.commit()
    with admin(tenancy) as session:
        rows = session.exec(select(Doc.tenant_id, Doc.name).order_by(Doc.id)).all()
    assert rows == [("acme", "roadmap"), ("ACME", "roadmap")]


@pytest.mark.parametrize(
    ("dialect", "tenant_type"),
    [
        (mysql.dialect(), "VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL"),
        (
            mysql.dialect(is_mariadb=True),
            "VARCHAR(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL",
        ),
        (postgresql.dialect(), "VARCHAR(63) NOT NULL"),
        (sqlite.dialect(), "VARCHAR(63) NOT NULL"),
    ],
    ids=["mysql", "mariadb", "postgresql", "sqlite"],
)
def test_tenant_columns_get_a_binary_collation_on_mysql_and_mariadb_only(
    dialect: Any, tenant_type: str
) -> None:
    doc_ddl = str(CreateTable(Doc.__table__).compile(dialect=dialect))  # type: ignore[attr-defined]
    memo_ddl = str(CreateTable(Memo.__table__).compile(dialect=dialect))  # type: ignore[attr-defined]
    assert f"tenant_id {tenant_type}" in doc_ddl
    assert f"org_id {tenant_type}" in memo_ddl


def test_tenant_key_takes_another_length() -> None:
    ddl = str(
        CreateTable(Table("collation_short", MetaData(), Column("key", TenantKey(20)))).compile(
            dialect=mysql.dialect()
        )
    )
    assert "VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" in ddl


@pytest.mark.backends("mariadb")
def test_the_collation_check_finds_a_case_insensitive_tenant_column(engine, create_tables) -> None:
    create_tables(engine, legacy_metadata, Doc, Memo)
    findings = find_case_insensitive_tenant_columns(
        engine, [*legacy_metadata.tables.values(), *collation_registry.metadata.tables.values()]
    )
    assert [(f.code, f.subject.split(".", 1)[1]) for f in findings] == [
        ("tenant_collation_not_binary", "collation_legacy.tenant_id")
    ]
    [finding] = findings
    assert "utf8mb4_general_ci" in finding.detail
    assert "MODIFY `tenant_id` varchar(63) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL" in (
        finding.fix
    )


def test_the_collation_check_finds_nothing_on_tenant_scoped_tables(engine, create_tables) -> None:
    create_tables(engine, Doc, Memo)
    assert find_case_insensitive_tenant_columns(engine, collation_registry.metadata) == []


@pytest.mark.backends("sqlite", "postgres")
def test_the_collation_check_finds_nothing_where_strings_compare_exactly(
    engine, create_tables
) -> None:
    create_tables(engine, legacy_metadata)
    assert find_case_insensitive_tenant_columns(engine, legacy_metadata) == []


@pytest.mark.backends("mariadb")
@pytest.mark.anyio
async def test_tenancy_check_database_reports_the_column_with_a_sync_or_an_async_engine(
    any_engine, create_tables
) -> None:
    create_tables(any_engine, legacy_metadata, Doc)
    tenancy = Tenancy(any_engine, resolvers=[HeaderResolver()])
    findings = await tenancy.check_database(legacy_metadata)
    assert [f.code for f in findings] == ["tenant_collation_not_binary"]
    assert await tenancy.check_database(collation_registry.metadata) == []
