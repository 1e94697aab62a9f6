"""Row scopes: walls inside the tenant, one column each, held like the tenant column.

A tenant model may carry more scoping columns beside its tenant column: the owner of a private
row (``owner_id``, from the principal), a team or an organisation taken from the token. Each
is a *row scope*, named, whose value the session takes from the bound context when it is made
(``Tenancy(row_scopes=...)``). A tenant session then filters every read of the model by it,
stamps it on new rows and refuses writes naming another value, exactly as it does the tenant,
and the wall proves it per compiled statement::

    class Note(TenantScoped, table=True):
        id: int | None = Field(default=None, primary_key=True)
        owner_id: str | None = owner_field()
        body: str

A tenant's admins see every owner's rows through a named, audited switch
(:func:`~fastapi_tenancy.lifted_session`), which lifts the row scope and keeps the tenant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.sql.schema import Table
from sqlmodel import Field

from .keys import TenantKey, key_type_for
from .scope import row_value_of_statement

__all__ = [
    "OWNER_SCOPE",
    "ROW_SCOPES_INFO_KEY",
    "ROW_SCOPES_PUBLIC_INFO_KEY",
    "ROW_SCOPE_COLUMN_INFO_KEY",
    "ROW_SCOPE_PUBLIC_INFO_KEY",
    "owner_field",
    "public_columns_of",
    "row_scope_field",
    "row_scope_missing",
    "row_scope_param",
    "row_scopes_of",
]

OWNER_SCOPE = "owner"
"""The row scope of :func:`owner_field`, valued by the principal unless configured."""

ROW_SCOPE_COLUMN_INFO_KEY = "fastapi_tenancy.row_scope"
"""Key in ``Column.info`` naming the row scope a column holds."""

ROW_SCOPES_INFO_KEY = "fastapi_tenancy.row_scopes"
"""Key in ``Table.info``: ``{row scope: column name}`` of a tenant table's row scopes."""

ROW_SCOPE_PUBLIC_INFO_KEY = "fastapi_tenancy.row_scope_public"
"""Key in ``Column.info``: the attribute of the boolean column that makes a row readable
outside its row scope (``owner_field(public="is_public")``)."""

ROW_SCOPES_PUBLIC_INFO_KEY = "fastapi_tenancy.row_scopes_public"
"""Key in ``Table.info``: ``{row scope: column name}`` of the public flags of its row scopes."""

_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")


def is_row_scope_name(name: str) -> bool:
    """Whether ``name`` may name a row scope: 1 to 31 characters of a-z, 0-9 and ``_``,
    starting with a letter (it becomes part of setting and policy names)."""
    return _NAME.fullmatch(name) is not None


def row_scope_param(name: str) -> str:
    """Name of the bound parameter carrying the value of the row scope ``name``."""
    return f"fastapi_tenancy_scope_{name}"


def row_scope_missing(name: str) -> str:
    """The detail of :class:`~fastapi_tenancy.RowScopeRequired` for the row scope ``name``."""
    return f"These rows are scoped by {name}, and this request has no {name} value."


def row_scope_field(
    scope: str,
    key_type: type[Any] = str,
    *,
    column_name: str | None = None,
    sa_type: Any = None,
    length: int = 255,
    public: str | None = None,
) -> Any:
    """The field of a row scope column: indexed, non-null in the table, stamped by the session.

    ``scope`` names the row scope (``"team"``); its value comes from ``Tenancy(row_scopes=
    {"team": ...})``. Like :func:`~fastapi_tenancy.tenant_field` it is optional in Python, so
    bodies and ``Model(...)`` need no value: a tenant session stamps its own and refuses any
    other. A string column compares exactly on every database (:class:`TenantKey`, binary
    collation on MySQL and MariaDB), so ``Alice`` never reads ``alice``'s rows.

    ``public`` names a boolean attribute of the model: a row whose flag is true is read by
    every session of its tenant, whatever its value of this scope (``public OR owned``), and
    still written only within the scope.
    """
    if not is_row_scope_name(scope):
        raise ValueError(
            f"a row scope name is 1 to 31 characters of a-z, 0-9 and _, starting with a "
            f"letter; not {scope!r}"
        )
    if sa_type is None:
        sa_type = TenantKey(length) if key_type is str else key_type_for(key_type).column_type()
    info: dict[str, Any] = {ROW_SCOPE_COLUMN_INFO_KEY: scope}
    if public is not None:
        info[ROW_SCOPE_PUBLIC_INFO_KEY] = public
    column_kwargs: dict[str, Any] = {"default": row_value_of_statement(scope), "info": info}
    if column_name is not None:
        column_kwargs["name"] = column_name
    return Field(
        default=None,
        sa_type=sa_type,
        index=True,
        nullable=False,
        sa_column_kwargs=column_kwargs,
    )


def owner_field(
    *, column_name: str | None = None, length: int = 255, public: str | None = None
) -> Any:
    """The owner column of owner-only rows: ``row_scope_field("owner")``.

    A tenant session reads and writes only the rows whose owner is the principal (the ``sub``
    claim, or ``Tenancy(principal_claim=...)``); a tenant's admins lift it by name. With
    ``public="is_public"``, the rows flagged public are read by every user of the tenant too:
    ``public OR owned``.
    """
    return row_scope_field(OWNER_SCOPE, column_name=column_name, length=length, public=public)


_ROW_SCOPES_BY_NAME: dict[tuple[str | None, str], dict[str, str]] = {}
_DECLARED: frozenset[str] = frozenset()


def mark_row_scopes(table: Table, columns: Any) -> dict[str, str]:
    """Record the row scope columns among ``columns`` in ``table.info`` (and by the table's
    name, for other ``Table`` objects of it); answers ``{row scope: column name}``."""
    found: dict[str, str] = {}
    for column in columns:
        name = column.info.get(ROW_SCOPE_COLUMN_INFO_KEY)
        if name is not None and column.table is table:
            if name in found:
                raise ValueError(f"{table.name} has two columns of the row scope {name!r}")
            found[name] = column.name
    if found:
        global _DECLARED
        table.info[ROW_SCOPES_INFO_KEY] = found
        _ROW_SCOPES_BY_NAME[(table.schema, table.name)] = found
        _DECLARED = _DECLARED | frozenset(found)
    return found


_NONE: Mapping[str, str] = {}


def row_scopes_of(table: Any) -> Mapping[str, str]:
    """``{row scope: column name}`` of a tenant table (empty for other tables)."""
    if not isinstance(table, Table):
        return _NONE
    found = table.info.get(ROW_SCOPES_INFO_KEY)
    if found is None:
        found = _ROW_SCOPES_BY_NAME.get((table.schema, table.name), _NONE)
    return found if isinstance(found, Mapping) else _NONE


def public_columns_of(table: Any) -> Mapping[str, str]:
    """``{row scope: column name}`` of the public flags of a tenant table's row scopes."""
    found = table.info.get(ROW_SCOPES_PUBLIC_INFO_KEY) if isinstance(table, Table) else None
    return found if isinstance(found, Mapping) else _NONE


def declared_row_scopes() -> frozenset[str]:
    """Every row scope some mapped tenant model declares, in this process."""
    return _DECLARED
