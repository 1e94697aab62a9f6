"""What a session may see, fixed when the session is made."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .context import get_tenant_context
from .exceptions import SessionTenantMismatch
from .hierarchy import TenantFamily
from .isolation.placement import Placement

__all__ = ["Access", "SessionScope", "row_value_of_statement", "tenant_of_statement"]


class Access(enum.Enum):
    """How a session treats tenant-scoped models."""

    TENANT = "tenant"
    """Scoped to ``tenant_id``; with no tenant, tenant models fail closed."""
    GLOBAL = "global"
    """Global-access switch: scoped when a tenant is bound; otherwise only models declared
    ``__global_access__`` may be read, and tenant models may not be written."""
    UNSCOPED = "unscoped"
    """Admin bypass or ``without_tenant()``: no scoping at all (moves still need a mutable
    block)."""


@dataclass(frozen=True, slots=True)
class SessionScope:
    """The tenant and access mode a session was made with; stored in ``session.info``.

    ``tenant_id`` is the key of the app's key type; ``bound_as`` is the value the tenant was
    bound with when that was its string spelling (``with_tenant("4f1c...")`` in a UUID app).
    ``row_values`` are the values of the row scopes inside the tenant (``(("owner",
    "alice@acme.test"),)``), taken from the bound context when the session is made if left
    ``None``; ``lifted`` names the row scopes this session does not apply (a tenant admin's
    switch, see :func:`~fastapi_tenancy.lifted_session`). ``family`` is the tenant's
    ancestors and descendants, whose rows it reads of models declaring ``__tenant_reads__``;
    taken from the bound context when left ``None``. ``placement`` is where the tenant's rows
    live when the app places tenants apart (:mod:`fastapi_tenancy.isolation`), set by the
    ``Tenancy`` when the session is made.
    """

    tenant_id: Any
    access: Access = Access.TENANT
    bound_as: Any = None
    row_values: tuple[tuple[str, Any], ...] | None = None
    lifted: frozenset[str] = frozenset()
    family: TenantFamily | None = None
    placement: Placement | None = None

    def row_value(self, name: str) -> Any:
        """The value of the row scope ``name`` in this session, or ``None``."""
        for scope, value in self.row_values or ():
            if scope == name:
                return value
        return None

    def enforces(self, name: str) -> bool:
        """Whether this session filters, stamps and checks the row scope ``name``."""
        return self.scoped and name not in self.lifted

    @property
    def scoped(self) -> bool:
        """Whether the session filters tenant models at all."""
        return self.access is not Access.UNSCOPED

    def check_ambient(self) -> None:
        """Refuse use under another tenant than the one the session was made for.

        The session's identity map holds its own tenant's objects; handing the session to
        another tenant's code would give that code those objects without any SQL.
        """
        if self.tenant_id is None or not self.scoped:
            return
        context = get_tenant_context()
        if context is None or context.id is None or context.id == self.tenant_id:
            return
        if context.id != self.bound_as:
            raise SessionTenantMismatch(
                f"This session was made for tenant {self.tenant_id!r} but tenant "
                f"{context.id!r} is bound; make a new session for each tenant."
            )


def tenant_of_statement(context: Any) -> Any:
    """The tenant of the scoped session running a statement, for column defaults.

    ``TenantScoped`` declares it as its tenant column's default, so rows the unit of work
    inserts without an object of their own (the link rows of a many-to-many relationship)
    get the session's tenant; the wall checks the value like any other.
    """
    from .wall import guard_of  # the wall imports the models, which use this default

    guard = guard_of(context.root_connection)
    return None if guard is None else guard.scope.tenant_id


def row_value_of_statement(name: str) -> Any:
    """A column default giving the value of the row scope ``name`` of the scoped session
    running the statement (see :func:`tenant_of_statement`)."""

    def default(context: Any) -> Any:
        from .wall import guard_of

        guard = guard_of(context.root_connection)
        return None if guard is None else guard.scope.row_value(name)

    return default
