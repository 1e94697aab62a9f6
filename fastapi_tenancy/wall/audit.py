"""What a tenant session's statements leave behind: an audit record each, and a SQL tag.

Both are opt-in (``Tenancy(..., audit_statements=True, tag_statements=True)``) and carried to
the gate by the connection's :class:`~fastapi_tenancy.wall.guard.Guard`, whose ``audit`` is
``None`` when both are off: the gate then pays one attribute test per statement.

- The record (``tenancy_event="statement_scoped"`` on ``fastapi_tenancy.audit``) is logged by
  the gate once a statement is proven, so every statement sent counts: the ORM's, relationship
  loads, the unit of work's INSERT, UPDATE and DELETE. Its tables and scopes are read off the
  statement's :class:`~fastapi_tenancy.wall.proof.Proof`, once per compiled statement.
- The tag is a trailing sqlcommenter comment, ``/*principal='...',tenant='acme'*/``, appended
  to the SQL string at the cursor (``before_cursor_execute``), never to the compiled
  statement, which all tenants share. The gate accepts exactly that suffix
  (:data:`TAG_ATTRIBUTE`) and still refuses any other change to the SQL.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler

from ..context import audit_logger, get_tenant_context
from ..isolation.placement import TENANT_SCHEMA
from ..models import TENANT_SHARED_ROWS_INFO_KEY
from ..row_policies import row_policies_of
from ..row_scopes import public_columns_of, row_scopes_of
from ..scope import SessionScope
from .compiler import is_tenant_table, tenant_column_of
from .proof import Proof
from .reads import ReadCheck
from .values import PolicyWrite, WriteCheck

__all__ = [
    "AUDIT_KEY",
    "TAG_ATTRIBUTE",
    "Described",
    "StatementAudit",
    "describe",
    "install_tagger",
    "sql_comment",
]

AUDIT_KEY = "fastapi_tenancy.statement_audit"
"""Key of a session's :class:`StatementAudit` in ``session.info``."""

TAG_ATTRIBUTE = "_fastapi_tenancy_tag"
"""Attribute of the execution context holding the exact suffix the tagger appended."""


@dataclass(frozen=True, slots=True)
class Described:
    """The tenant tables a compiled statement reads or writes, and the scopes its SQL carries."""

    tables: tuple[str, ...]
    scopes: tuple[str, ...]


_DESCRIBED: weakref.WeakKeyDictionary[SQLCompiler, Described] = weakref.WeakKeyDictionary()


def describe(compiled: SQLCompiler, proof: Proof) -> Described:
    """The description of ``compiled`` (proven by ``proof``), made once and kept with it."""
    described = _DESCRIBED.get(compiled)
    if described is None:
        tables = [_named(read.table) for read in proof.reads]
        tables += [_named(write.table) for write in proof.writes if is_tenant_table(write.table)]
        scopes = [scope for read in proof.reads for scope in _read_scopes(read)]
        scopes += [_write_scope(write) for write in proof.writes]
        described = _DESCRIBED[compiled] = Described(
            tables=tuple(dict.fromkeys(tables)), scopes=tuple(dict.fromkeys(scopes))
        )
    return described


def _named(table: Any) -> str:
    """A table as the audit names it: schema-qualified, except in the tenant schema
    placeholder, which names no schema of its own (the record's tenant says whose it is)."""
    return table.name if table.schema == TENANT_SCHEMA else table.fullname  # type: ignore[no-any-return]


def _read_scopes(read: ReadCheck) -> Iterator[str]:
    """How the SQL scopes one FROM of a tenant table, in the order the gate accepts them."""
    table = read.table
    name = _named(table)
    if read.family_params:
        column = f"{name}.{tenant_column_of(table).name}"
        for binds in read.family_params:
            names = ", ".join(f":{name}" for name, _ in binds)
            yield f"{column} IN ({names}) (the tenant and its {read.family})"
    if read.tenant_params:
        column = f"{name}.{tenant_column_of(table).name}"
        # The proof accepts the filter of a model with shared rows alone or with its shared
        # rows, and does not say which it found: "[...]" is what may come with it.
        shared = read.read_only and table.info.get(TENANT_SHARED_ROWS_INFO_KEY)
        also = f" [OR {column} IS NULL]" if shared else ""
        for param in read.tenant_params:
            yield f"{column} = :{param}{also}"
        yield from _row_scopes(read)
    elif read.family_params:
        return
    elif read.key_params is not None:
        pairs = zip(table.primary_key.columns, read.key_params, strict=True)
        named = " AND ".join(f"{name}.{column.name} = :{param}" for column, param in pairs)
        yield f"{named} (a key of the tenant's rows)"
    elif read.linked:
        links = table.foreign_keys
        keys = sorted(fk.parent.name for fk in links if is_tenant_table(fk.column.table))
        yield f"{name} joined by {', '.join(keys)} to the tenant's rows"
    else:  # the gate lets it through only in the global-access switch, with no tenant
        yield f"{name} read across tenants (global access)"


def _row_scopes(read: ReadCheck) -> Iterator[str]:
    """The filters on the table's row scope columns (its owner, say) the proof found."""
    name = _named(read.table)
    columns = row_scopes_of(read.table)
    # As for shared rows, the proof accepts the filter alone or with the public arm, where it
    # is only read: "[...]" is what may come with it.
    public = public_columns_of(read.table) if read.read_only else {}
    for scope, params in read.scope_params:
        flag = public.get(scope)
        also = f" [OR {name}.{flag} = true]" if flag else ""
        for param in params:
            yield f"{name}.{columns[scope]} = :{param}{also} (the {scope})"
    policies = row_policies_of(read.table)
    for policy, proofs in read.policy_params:
        if proofs:
            yield f"{name}: {_policy_sql(policies[policy].expression)} (the row policy {policy})"


def _policy_sql(expression: Any) -> str:
    """A row policy's SQL with its values written out (the gate checks them as sent)."""
    return str(expression.compile(compile_kwargs={"literal_binds": True}))


def _write_scope(write: WriteCheck | PolicyWrite) -> str:
    if isinstance(write, PolicyWrite):
        sql = _policy_sql(write.term.expression)
        return f"writes {_named(write.table)} meeting {sql} (the row policy {write.policy})"
    column = f"{_named(write.table)}.{write.column}"
    if write.row_scope is not None:
        return f"writes {column} = :{write.param} (the {write.row_scope})"
    if write.parent is None:
        return f"writes {column} = :{write.param} (the tenant)"
    parent = _named(write.parent.table)
    return f"writes {column} = :{write.param} (a {parent} row of the tenant)"


@dataclass(frozen=True, slots=True)
class StatementAudit:
    """What a tenant session leaves of each statement it sends: an audit record (``log``), a
    SQL comment naming its tenant and principal (``tag``); ``principal_claim`` is the claim
    that names the principal, as for :meth:`~fastapi_tenancy.Tenancy.principal`."""

    log: bool
    tag: bool
    principal_claim: str = "sub"

    def principal(self) -> str | None:
        """The principal of the bound context, or ``None``."""
        context = get_tenant_context()
        value = None if context is None else context.claims.get(self.principal_claim)
        return None if value is None else str(value)

    def sent(self, scope: SessionScope, compiled: SQLCompiler, proof: Proof) -> None:
        """Log the record of a statement the gate proved and lets through (with ``log``)."""
        if not self.log or not audit_logger.isEnabledFor(logging.INFO):
            return
        described = describe(compiled, proof)
        audit_logger.info(
            "statement scoped",
            extra={
                "tenancy_event": "statement_scoped",
                "tenancy_tenant": scope.tenant_id,
                "tenancy_principal": self.principal(),
                "tenancy_tables": described.tables,
                "tenancy_scopes": described.scopes,
            },
        )


@functools.lru_cache(maxsize=4096)
def sql_comment(tenant: str | None, principal: str | None) -> str:
    """The sqlcommenter comment naming ``tenant`` and ``principal`` (keys sorted, values
    URL-encoded with nothing kept, so a value cannot close the comment or quote), with the
    space before it; ``""`` when both are ``None``."""
    pairs = [
        f"{key}='{quote(value, safe='')}'"
        for key, value in (("principal", principal), ("tenant", tenant))
        if value is not None
    ]
    return f" /*{','.join(pairs)}*/" if pairs else ""


_PERCENT_STYLES = frozenset({"format", "pyformat"})
_TAGGED: weakref.WeakSet[Engine] = weakref.WeakSet()


def install_tagger(engine: Engine | AsyncEngine) -> None:
    """Tag every statement of a tenant session with a :class:`StatementAudit` whose ``tag`` is
    on, on ``engine`` (once); other statements pass untouched."""
    from .guard import guard_of  # the gate's module imports this one

    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if target in _TAGGED:
        return
    percent = target.dialect.paramstyle in _PERCENT_STYLES

    def tag(
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> tuple[str, Any]:
        guard = None if context is None else guard_of(conn)
        audit = None if guard is None else guard.audit
        if guard is None or audit is None or not audit.tag:
            return statement, parameters
        tenant = guard.scope.tenant_id
        suffix = sql_comment(None if tenant is None else str(tenant), audit.principal())
        # The driver reads % as a placeholder whenever it is given parameters.
        if percent and (parameters or not context.no_parameters):  # type: ignore[union-attr]
            suffix = suffix.replace("%", "%%")
        setattr(context, TAG_ATTRIBUTE, suffix)
        return statement + suffix, parameters

    event.listen(target, "before_cursor_execute", tag, retval=True)
    _TAGGED.add(target)
