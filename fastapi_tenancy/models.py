"""Tenant-scoped SQLModel tables.

Inherit :class:`TenantScoped` with ``table=True`` and every ORM statement that a tenant session
runs on the model is filtered to the bound tenant, new rows are stamped with it, and rows cannot
be written across tenants::

    class Project(TenantScoped, table=True):
        __table_args__ = (tenant_unique("name"),)

        id: int | None = Field(default=None, primary_key=True)
        name: str
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from sqlalchemy import UniqueConstraint, column, event
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Field, SQLModel

from .exceptions import TenancyMisuse
from .keys import TenantKey
from .scope import tenant_of_statement

__all__ = [
    "TENANT_GLOBAL_INFO_KEY",
    "TENANT_TABLE_INFO_KEY",
    "TenantScoped",
    "is_tenant_model",
    "tenant_unique",
]

TENANT_TABLE_INFO_KEY = "fastapi_tenancy"
"""Key in ``Table.info`` marking tenant tables; its value is the tenant column's name."""

TENANT_GLOBAL_INFO_KEY = "fastapi_tenancy.global_access"
"""Key in ``Table.info`` marking the tables of ``__global_access__`` models."""

TENANT_KEY_MAX_LENGTH = 63


class TenantScoped(SQLModel):
    """SQLModel base for tenant-owned tables: an indexed, non-null ``tenant_id`` column.

    Set ``__global_access__ = True`` on a model whose rows may be read across tenants through
    the global-access switch when no tenant is bound. To store the tenant in a column of another
    name, redeclare the field with the same type: ``tenant_id: str = Field(sa_type=TenantKey,
    index=True, max_length=63, sa_column_kwargs={"name": "org_id"})``; the Python attribute
    stays ``tenant_id``. :class:`~fastapi_tenancy.TenantKey` is a string that compares exactly
    on every database: on MySQL and MariaDB, whose default collations ignore case, it has a
    binary collation, so tenant ``ACME`` never reads ``acme``'s rows.
    """

    __global_access__: ClassVar[bool] = False

    tenant_id: str = Field(
        sa_type=TenantKey,
        index=True,
        nullable=False,
        max_length=TENANT_KEY_MAX_LENGTH,
        # rows the unit of work inserts with no object (many-to-many link rows) get the
        # session's tenant; every other row is stamped at flush
        sa_column_kwargs={"default": tenant_of_statement},
    )

    @classmethod
    def tenant_column(cls) -> ColumnElement[Any]:
        """The mapped tenant column of this model (a plain column on the unmapped base)."""
        attribute = cls.__dict__.get("tenant_id")
        if attribute is None:
            attribute = getattr(cls, "tenant_id", None)
        if attribute is None:
            return column("tenant_id")
        return attribute  # type: ignore[no-any-return]


def is_tenant_model(cls: Any) -> bool:
    """Whether ``cls`` is a mapped tenant-scoped model."""
    return isinstance(cls, type) and issubclass(cls, TenantScoped)


def tenant_unique(
    *columns: str, name: str | None = None, tenant_column: str = "tenant_id"
) -> UniqueConstraint:
    """A unique constraint that holds per tenant: ``UNIQUE (tenant_id, *columns)``.

    Use it in ``__table_args__`` instead of ``unique=True``: a global unique column would let
    one tenant learn, from a refused insert, that another tenant has a row with that value.
    Pass ``tenant_column`` when the model stores the tenant under another column name.
    """
    if not columns:
        raise ValueError("tenant_unique() needs at least one column")
    return UniqueConstraint(tenant_column, *columns, name=name)


_TENANT_TABLE_NAMES: dict[tuple[str | None, str], str] = {}


def tenant_table_names() -> Mapping[tuple[str | None, str], str]:
    """``(schema, table name)`` of every tenant model's table mapped in this process, with its
    tenant column's name: the wall knows a tenant table by name, however it is reached."""
    return _TENANT_TABLE_NAMES


@event.listens_for(TenantScoped, "after_mapper_constructed", propagate=True)
def _mark_tenant_table(mapper: Mapper[Any], cls: type[Any]) -> None:
    tenant_column = mapper.columns["tenant_id"]
    for table in mapper.tables:
        if tenant_column.table is table:
            table.info[TENANT_TABLE_INFO_KEY] = tenant_column.name
            _TENANT_TABLE_NAMES[(table.schema, table.name)] = tenant_column.name
            if cls.__global_access__:
                table.info[TENANT_GLOBAL_INFO_KEY] = True


@event.listens_for(TenantScoped, "mapper_configured", propagate=True)
def _refuse_plain_link_tables(mapper: Mapper[Any], cls: type[Any]) -> None:
    """A many-to-many relationship between tenant models needs a tenant link model: a plain
    link table would hold rows no tenant owns, which a query on it alone reads across
    tenants, and which the unit of work writes with nothing to stamp."""
    for relationship in mapper.relationships:
        secondary = relationship.secondary
        if secondary is None or TENANT_TABLE_INFO_KEY in getattr(secondary, "info", {}):
            continue
        if not is_tenant_model(relationship.mapper.class_):
            continue
        raise TenancyMisuse(
            f"{cls.__name__}.{relationship.key} links tenant models through the plain table "
            f"{getattr(secondary, 'name', secondary)!r}; make the link a tenant model "
            "(class Link(TenantScoped, table=True) with the two foreign keys as its primary key) "
            "and pass it as Relationship(link_model=Link)"
        )
