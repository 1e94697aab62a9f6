"""The tenant-aware foreign key: no row can point at another tenant's row, even through raw SQL.

Runs on every database: the key is the database's, not the kit's Python.
"""

# No "from __future__ import annotations": SQLModel resolves relationships from real annotations.

import pytest
from sqlalchemy import Column, ForeignKeyConstraint, Integer, MetaData, String, Table, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import registry
from sqlmodel import Field, Relationship, Session, SQLModel

from fastapi_tenancy import TenantScoped, tenant_foreign_key, tenant_unique

constraints_registry = registry()


class ConstraintsModel(SQLModel, registry=constraints_registry):
    """This file's tables: a registry of their own."""


class Folder(ConstraintsModel, TenantScoped, table=True):
    __tablename__ = "fk_folder"
    __table_args__ = (tenant_unique("id", name="uq_fk_folder_tenant_id"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)

    files: list["Document"] = Relationship(
        back_populates="folder", sa_relationship_kwargs={"foreign_keys": "[Document.folder_id]"}
    )


class Document(ConstraintsModel, TenantScoped, table=True):
    __tablename__ = "fk_document"
    __table_args__ = (tenant_foreign_key("folder_id", "fk_folder.id", name="fk_document_folder"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    folder_id: int | None = None

    folder: Folder | None = Relationship(
        back_populates="files", sa_relationship_kwargs={"foreign_keys": "[Document.folder_id]"}
    )


def key_of(table: Table) -> ForeignKeyConstraint:
    [constraint] = [c for c in table.constraints if isinstance(c, ForeignKeyConstraint)]
    return constraint


def test_the_key_includes_the_tenant_on_both_sides():
    constraint = key_of(Document.__table__)  # type: ignore[attr-defined]

    assert constraint.column_keys == ["tenant_id", "folder_id"]
    assert [e.target_fullname for e in constraint.elements] == [
        "fk_folder.tenant_id",
        "fk_folder.id",
    ]
    assert constraint.name == "fk_document_folder"


def test_the_key_takes_columns_composite_keys_and_other_tenant_column_names():
    metadata = MetaData()
    parent = Table(
        "parent",
        metadata,
        Column("org", String(63), primary_key=True),
        Column("a", Integer, primary_key=True),
        Column("b", Integer, primary_key=True),
    )
    child = Table(
        "child",
        metadata,
        Column("org_id", String(63)),
        Column("pa", Integer),
        Column("pb", Integer),
        tenant_foreign_key(
            ["pa", "pb"],
            [parent.c.a, parent.c.b],
            tenant_column="org_id",
            ref_tenant_column="org",
            ondelete="CASCADE",
        ),
    )

    constraint = key_of(child)
    assert constraint.column_keys == ["org_id", "pa", "pb"]
    assert [e.column for e in constraint.elements] == [parent.c.org, parent.c.a, parent.c.b]
    assert constraint.ondelete == "CASCADE"


@pytest.mark.parametrize(
    ("columns", "refcolumns"),
    [(["a", "b"], ["p.a"]), ([], []), ("a", "p")],
    ids=["lengths differ", "no columns", "not table.column"],
)
def test_a_malformed_key_is_refused(columns, refcolumns):
    with pytest.raises(ValueError, match="columns"):
        tenant_foreign_key(columns, refcolumns)


def test_a_referenced_column_whose_table_lacks_the_tenant_column_is_refused():
    plain = Table("plain", MetaData(), Column("id", Integer, primary_key=True))

    with pytest.raises(ValueError, match="no tenant column"):
        tenant_foreign_key("plain_id", plain.c.id)


# --------------------------------------------------------------------------------------------
# On every database


@pytest.fixture
def folders(engine, create_tables) -> dict[str, int]:
    create_tables(engine, Folder, Document)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO fk_folder (tenant_id, name) VALUES ('acme', 'a')"))
        conn.execute(text("INSERT INTO fk_folder (tenant_id, name) VALUES ('globex', 'g')"))
        rows = conn.execute(text("SELECT tenant_id, id FROM fk_folder")).all()
    return {tenant: folder_id for tenant, folder_id in rows}


INSERT = text("INSERT INTO fk_document (tenant_id, name, folder_id) VALUES (:t, 'd', :f)")


def test_raw_sql_can_point_a_row_at_its_own_tenants_row(engine, folders):
    with engine.begin() as conn:
        conn.execute(INSERT, {"t": "acme", "f": folders["acme"]})
        conn.execute(INSERT, {"t": "acme", "f": None})  # no folder: nothing to check


def test_raw_sql_cannot_point_a_row_at_another_tenants_row(engine, folders):
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(INSERT, {"t": "acme", "f": folders["globex"]})


def test_raw_sql_cannot_repoint_a_row_at_another_tenants_row(engine, folders):
    with engine.begin() as conn:
        conn.execute(INSERT, {"t": "acme", "f": folders["acme"]})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE fk_document SET folder_id = :f"), {"f": folders["globex"]})


def test_raw_sql_cannot_move_a_linked_row_to_another_tenant(engine, folders):
    with engine.begin() as conn:
        conn.execute(INSERT, {"t": "acme", "f": folders["acme"]})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE fk_document SET tenant_id = 'globex'"))


def test_unlinking_through_the_relationship_keeps_the_tenant(engine, folders):
    with Session(engine) as session:
        folder = session.get(Folder, folders["acme"])
        document = Document(tenant_id="acme", name="d", folder=folder)
        session.add(document)
        session.commit()
        document.folder = None
        session.commit()
        session.refresh(document)

        assert (document.tenant_id, document.folder_id) == ("acme", None)
