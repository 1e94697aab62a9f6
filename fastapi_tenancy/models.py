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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal

from sqlalchemy import Boolean, Column, Table, UniqueConstraint, column, event
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Field, SQLModel
from typing_extensions import TypeVar

from .exceptions import TenancyMisuse
from .hierarchy import TenantReads
from .isolation.placement import TENANT_SCHEMA
from .keys import TenantKeyType, key_type_for
from .row_policies import RowPolicy, mark_row_policies
from .row_scopes import (
    ROW_SCOPE_PUBLIC_INFO_KEY,
    ROW_SCOPES_PUBLIC_INFO_KEY,
    mark_row_scopes,
)
from .scope import tenant_of_statement
from .tenant_first import declared_key, lead_with_tenant

__all__ = [
    "TENANT_GLOBAL_INFO_KEY",
    "TENANT_READS_INFO_KEY",
    "TENANT_SHARED_ROWS_INFO_KEY",
    "TENANT_TABLE_INFO_KEY",
    "TenantScoped",
    "is_tenant_model",
    "tenant_field",
    "tenant_unique",
]

TENANT_TABLE_INFO_KEY = "fastapi_tenancy"
"""Key in ``Table.info`` marking tenant tables; its value is the tenant column's name."""

TENANT_GLOBAL_INFO_KEY = "fastapi_tenancy.global_access"
"""Key in ``Table.info`` marking the tables of ``__global_access__`` models."""

TENANT_SHARED_ROWS_INFO_KEY = "fastapi_tenancy.shared_rows"
"""Key in ``Table.info`` marking the tables of ``__shared_rows__`` models."""

TENANT_READS_INFO_KEY = "fastapi_tenancy.tenant_reads"
"""Key in ``Table.info``: ``"ancestors"`` or ``"descendants"`` for the tables of models whose
tenants read their family's rows too (``__tenant_reads__``)."""

_TENANT_READS = ("own", "ancestors", "descendants")

KeyT = TypeVar("KeyT", default=str)


def tenant_field(
    key_type: type[Any] | TenantKeyType[Any] = str,
    *,
    foreign_key: str | None = None,
    ondelete: Literal["CASCADE", "SET NULL", "RESTRICT"] | None = None,
    column_name: str | None = None,
    sa_type: Any = None,
) -> Any:
    """The field of a tenant column: indexed, non-null in the table, optional in Python.

    Redeclare ``tenant_id`` with it on an abstract base to point the tenant column at your
    tenants table, store it under another column name, or give it a type of your own::

        class OrgScoped(TenantScoped[UUID]):
            tenant_id: UUID = tenant_field(UUID, foreign_key="organization.id")

    The field defaults to ``None`` so that ``Model(**data)`` and ``Model.model_validate(data)``
    need no tenant (and type-check without one): a tenant session stamps its own tenant at
    flush and refuses any other. ``key_type`` is ``str``, ``int``, ``uuid.UUID`` or a
    :class:`~fastapi_tenancy.TenantKeyType`; ``sa_type`` overrides its column type (say
    ``BigInteger`` for an ``int`` key).
    """
    column_type = sa_type if sa_type is not None else key_type_for(key_type).column_type()
    column_kwargs: dict[str, Any] = {
        # rows the unit of work inserts with no object (many-to-many link rows) get the
        # session's tenant; every other row is stamped at flush
        "default": tenant_of_statement
    }
    if column_name is not None:
        column_kwargs["name"] = column_name
    field_kwargs: dict[str, Any] = {}
    if foreign_key is not None:
        field_kwargs["foreign_key"] = foreign_key
        if ondelete is not None:
            field_kwargs["ondelete"] = ondelete
    return Field(
        default=None,
        sa_type=column_type,
        index=True,
        nullable=False,
        sa_column_kwargs=column_kwargs,
        **field_kwargs,
    )


class _TenantModel(SQLModel):
    """What every tenant base shares, whatever its key type."""

    __global_access__: ClassVar[bool] = False
    __shared_rows__: ClassVar[bool] = False
    """``True``: rows with a NULL tenant are shared, read by every tenant beside its own, and
    written only in the admin switch or ``without_tenant()``."""
    __tenant_reads__: ClassVar[TenantReads] = "own"
    """Whose rows a tenant reads beside its own: ``"ancestors"`` (its parents' catalogue),
    ``"descendants"`` (a reseller's customers), or ``"own"``; writes stay its own. Needs a
    :class:`~fastapi_tenancy.TenantHierarchy`."""
    __row_scopes__: ClassVar[Mapping[str, str]] = {}
    """``{row scope: attribute}`` of the model's row scope columns (see
    :func:`~fastapi_tenancy.row_scope_field`); filled when the model is mapped."""
    __row_scopes_public__: ClassVar[Mapping[str, str]] = {}
    """``{row scope: attribute}`` of the boolean flags that make a row readable outside its
    row scope (``owner_field(public=...)``); filled when the model is mapped."""
    __row_policies__: ClassVar[Sequence[RowPolicy]] = ()
    """Named predicates every row of the model read or written in a tenant session meets,
    beside its tenant (see :class:`~fastapi_tenancy.RowPolicy`)."""
    __tenant_first_key__: ClassVar[bool] = False
    """``True``: the table's primary key is ``(tenant_id, *declared key)``, while the ORM's
    identity stays the declared key, so every UPDATE and DELETE of the unit of work names its
    tenant (what Citus needs; see :mod:`fastapi_tenancy.tenant_first`)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__tenant_first_key__ and cls.__shared_rows__:
            # refused before SQLAlchemy maps the class, which would leave the registry broken
            raise TenancyMisuse(
                f"{cls.__name__} declares __shared_rows__ and __tenant_first_key__; a shared "
                "row's tenant is NULL, which no primary key column holds"
            )
        if not cls.__tenant_first_key__ or "primary_key" in cls.__dict__.get("__mapper_args__", {}):
            return
        key = declared_key(cls)
        if key:  # the declared key stays the identity; the table's gains the tenant at mapping
            cls.__mapper_args__ = {**getattr(cls, "__mapper_args__", {}), "primary_key": key}

    @classmethod
    def tenant_column(cls) -> ColumnElement[Any]:
        """The mapped tenant column of this model (a plain column on the unmapped base)."""
        attribute = cls.__dict__.get("tenant_id")
        if attribute is None:
            attribute = getattr(cls, "tenant_id", None)
        if attribute is None or not hasattr(attribute, "property"):
            return column("tenant_id")
        return attribute  # type: ignore[no-any-return]


if TYPE_CHECKING:

    class TenantScoped(_TenantModel, Generic[KeyT]):
        """SQLModel base for tenant-owned tables (see the runtime class below)."""

        tenant_id: KeyT = tenant_field()

else:
    _KEYED_BASES: dict[type[Any], type[Any]] = {}

    class TenantScoped(_TenantModel):
        """SQLModel base for tenant-owned tables: an indexed, non-null tenant column.

        ``TenantScoped`` keys tenants by string slugs; ``TenantScoped[int]`` and
        ``TenantScoped[UUID]`` by integers and UUIDs (give the same type to ``Tenancy(...,
        key_type=...)``). Redeclare ``tenant_id`` with :func:`tenant_field` on an abstract base
        to make it a foreign key to your tenants table or give it another column name.

        Set ``__global_access__ = True`` on a model whose rows may be read across tenants
        through the global-access switch when no tenant is bound, and ``__shared_rows__ =
        True`` on one whose rows with a NULL tenant (vendor defaults) every tenant reads beside
        its own and none may change.
        :class:`~fastapi_tenancy.TenantKey`, the column type of string keys, compares exactly
        on every database: on MySQL and MariaDB, whose default collations ignore case, it has
        a binary collation, so tenant ``ACME`` never reads ``acme``'s rows.
        """

        # Optional to pydantic only: a body may carry "tenant_id": null, which the session
        # stamps like a missing one; the column stays NOT NULL.
        tenant_id: str | None = tenant_field()

        def __class_getitem__(cls, key_type: type[Any]) -> type[Any]:
            if cls is not TenantScoped:
                raise TypeError(f"{cls.__name__} is already keyed; subclass it instead")
            if key_type is str:
                return cls
            base = _KEYED_BASES.get(key_type)
            if base is None:
                name = getattr(key_type, "__name__", repr(key_type))
                namespace = {
                    "__module__": cls.__module__,
                    "__qualname__": f"TenantScoped[{name}]",
                    "__annotations__": {"tenant_id": key_type | None},
                    "tenant_id": tenant_field(key_type),
                }
                base = type(cls)(f"TenantScoped[{name}]", (cls,), namespace)
                _KEYED_BASES[key_type] = base
            return base


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


_FAMILY_READS: frozenset[TenantReads] = frozenset()


_PLACED_TABLES: dict[str, Table] = {}


def placed_tables() -> Mapping[str, Table]:
    """The tables of tenant models declared in the placeholder schema ``TENANT_SCHEMA``, by
    name: those each tenant keeps in its own place (see :mod:`fastapi_tenancy.isolation`)."""
    return _PLACED_TABLES


def family_reads() -> frozenset[TenantReads]:
    """``"ancestors"`` and ``"descendants"`` as some mapped model reads them, in this
    process: what a session needs of its tenant's family."""
    return _FAMILY_READS


@event.listens_for(TenantScoped, "instrument_class", propagate=True)
def _lead_key_with_tenant(mapper: Mapper[Any], cls: type[Any]) -> None:
    """Give a ``__tenant_first_key__`` model's table its key before the mapper reads it."""
    if not cls.__tenant_first_key__:
        return
    table = mapper.local_table
    if not isinstance(table, Table):
        raise TenancyMisuse(f"{cls.__name__} sets __tenant_first_key__ and maps no table")
    tenant_column = cls.__dict__.get("tenant_id")
    if not isinstance(tenant_column, Column) or tenant_column.table is not table:
        tenant_column = table.c.get("tenant_id")
    if tenant_column is None:
        raise TenancyMisuse(f"{cls.__name__} has no tenant column in its table {table.name!r}")
    lead_with_tenant(table, tenant_column, cls.__name__)


@event.listens_for(TenantScoped, "after_mapper_constructed", propagate=True)
def _mark_tenant_table(mapper: Mapper[Any], cls: type[Any]) -> None:
    tenant_column = mapper.columns["tenant_id"]
    reads = cls.__tenant_reads__
    if reads not in _TENANT_READS:
        raise TenancyMisuse(
            f"{cls.__name__}.__tenant_reads__ is {reads!r}; use one of {', '.join(_TENANT_READS)}"
        )
    for table in mapper.tables:
        if tenant_column.table is table:
            scopes = mark_row_scopes(table, mapper.columns)
            if reads != "own":
                if scopes or cls.__shared_rows__:
                    raise TenancyMisuse(
                        f"{cls.__name__} reads its tenants' {reads}' rows and declares "
                        f"{'row scopes' if scopes else '__shared_rows__'}; keep them in "
                        "models of their own"
                    )
                table.info[TENANT_READS_INFO_KEY] = reads
                _add_family_reads(reads)
            if scopes:
                if cls.__shared_rows__:
                    raise TenancyMisuse(
                        f"{cls.__name__} declares __shared_rows__ and row scopes; a shared row "
                        "has no owner, so keep shared rows in a model of their own"
                    )
                by_column = {column.name: key for key, column in mapper.columns.items()}
                cls.__row_scopes__ = {name: by_column[column] for name, column in scopes.items()}
                _mark_public_flags(cls, mapper, table)
            policies = mark_row_policies(cls, table, cls.__row_policies__)
            if policies.keys() & scopes.keys():
                raise TenancyMisuse(
                    f"{cls.__name__} names a row policy and a row scope alike "
                    f"({', '.join(sorted(policies.keys() & scopes.keys()))}); a lift names one"
                )
            table.info[TENANT_TABLE_INFO_KEY] = tenant_column.name
            _TENANT_TABLE_NAMES[(table.schema, table.name)] = tenant_column.name
            if table.schema == TENANT_SCHEMA:
                # Unqualified, the same name reaches the shared tables' copy of the table.
                _TENANT_TABLE_NAMES[(None, table.name)] = tenant_column.name
                _PLACED_TABLES[table.name] = table
            if cls.__global_access__:
                table.info[TENANT_GLOBAL_INFO_KEY] = True
            if cls.__shared_rows__:
                table.info[TENANT_SHARED_ROWS_INFO_KEY] = True
                tenant_column.nullable = True  # NULL: a row every tenant shares


def _add_family_reads(reads: TenantReads) -> None:
    global _FAMILY_READS  # one frozenset, read per statement, made at mapping
    _FAMILY_READS = _FAMILY_READS | {reads}


def _mark_public_flags(cls: type[Any], mapper: Mapper[Any], table: Any) -> None:
    """Resolve each row scope's ``public=`` attribute to its boolean column."""
    public: dict[str, str] = {}
    columns: dict[str, str] = {}
    for name, attribute in cls.__row_scopes__.items():
        flag = mapper.columns[attribute].info.get(ROW_SCOPE_PUBLIC_INFO_KEY)
        if flag is None:
            continue
        column = mapper.columns.get(flag)
        if column is None or column.table is not table:
            raise TenancyMisuse(f"{cls.__name__} has no column {flag!r} to flag public rows")
        if not isinstance(column.type, Boolean):
            raise TenancyMisuse(f"{cls.__name__}.{flag} flags public rows and must be a bool")
        public[name] = flag
        columns[name] = column.name
    if public:
        cls.__row_scopes_public__ = public
        table.info[ROW_SCOPES_PUBLIC_INFO_KEY] = columns


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
