"""Every error the kit raises, under one root.

Each error carries a stable machine ``code`` and the HTTP ``status_code`` it answers with, so
applications can branch on the code and the middleware can answer ``{"detail", "code"}``::

    TenancyError
    ├── InvalidToken             401 invalid_token
    ├── TenantMismatch           403 tenant_mismatch
    ├── AmbiguousTenant          400 ambiguous_tenant
    ├── InvalidTenantKey         400 invalid_tenant_key
    ├── TenantRequired           400 tenant_required
    ├── TenantNotFound           404 tenant_not_found
    ├── TenantInactive           403 tenant_inactive
    ├── TenancyUnavailable       503 tenancy_unavailable
    ├── NotAMember               403 not_a_member
    ├── AdminRequired            403 admin_required
    ├── CrossTenantWrite         403 cross_tenant_write
    │   └── CrossScopeWrite      403 cross_scope_write
    │       └── RowPolicyViolation 403 row_policy_violation
    ├── RowScopeRequired         403 row_scope_required
    ├── AlreadyExists            409 already_exists
    │   └── TenantExists         409 tenant_exists
    ├── TenantLimitReached       403 tenant_limit_reached
    ├── TenantActive             409 tenant_active
    ├── WriteConflict            409 write_conflict
    ├── DatabaseUnavailable      503 database_unavailable
    │   └── DatabaseBusy         503 database_busy
    ├── InternalError            500 internal_error
    ├── TenantMigrationFailed    500 tenant_migration_failed
    └── TenancyMisuse            500 tenancy_misuse
        ├── UnscopedStatement    500 unscoped_statement
        └── SessionTenantMismatch 500 session_tenant_mismatch
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AdminRequired",
    "AlreadyExists",
    "AmbiguousTenant",
    "CrossScopeWrite",
    "CrossTenantWrite",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "InternalError",
    "InvalidTenantKey",
    "InvalidToken",
    "NotAMember",
    "RowPolicyViolation",
    "RowScopeRequired",
    "SessionTenantMismatch",
    "TenancyError",
    "TenancyMisuse",
    "TenancyUnavailable",
    "TenantActive",
    "TenantExists",
    "TenantHierarchyInvalid",
    "TenantInactive",
    "TenantLimitReached",
    "TenantMigrationFailed",
    "TenantMismatch",
    "TenantNotFound",
    "TenantRequired",
    "UnscopedStatement",
    "WriteConflict",
]


class TenancyError(Exception):
    """Root of every error the kit raises; answered as JSON ``{"detail", "code"}``."""

    code: ClassVar[str] = "tenancy_error"
    status_code: ClassVar[int] = 500
    default_detail: ClassVar[str] = "Tenancy error."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class InvalidToken(TenancyError):
    """A bearer token was sent but failed verification; never falls through to other sources."""

    code = "invalid_token"
    status_code = 401
    default_detail = "The bearer token is invalid."


class TenantMismatch(TenancyError):
    """Two tenant sources of one request named different tenants."""

    code = "tenant_mismatch"
    status_code = 403
    default_detail = "The request names more than one tenant."


class AmbiguousTenant(TenancyError):
    """One tenant source was sent more than once with different values."""

    code = "ambiguous_tenant"
    status_code = 400
    default_detail = "The tenant was sent more than once with different values."


class InvalidTenantKey(TenancyError):
    """A tenant key failed validation (empty, too long or outside the pattern)."""

    code = "invalid_tenant_key"
    status_code = 400
    default_detail = "The tenant key is not valid."


class TenantRequired(TenancyError):
    """Tenant-scoped work was attempted with no tenant bound."""

    code = "tenant_required"
    status_code = 400
    default_detail = "This request needs a tenant."


class TenantNotFound(TenancyError):
    """The tenant lookup knows no tenant with this key."""

    code = "tenant_not_found"
    status_code = 404
    default_detail = "No such tenant."


class TenantInactive(TenancyError):
    """The tenant lookup found the tenant, but it is not active."""

    code = "tenant_inactive"
    status_code = 403
    default_detail = "This tenant is not active."


class TenancyUnavailable(TenancyError):
    """A tenant lookup or a token key source failed; the request fails closed."""

    code = "tenancy_unavailable"
    status_code = 503
    default_detail = "The tenant could not be verified right now."


class NotAMember(TenancyError):
    """The authenticated principal does not belong to the bound tenant."""

    code = "not_a_member"
    status_code = 403
    default_detail = "You are not a member of this tenant."


class AdminRequired(TenancyError):
    """The admin-bypass switch was asked for by someone who is not an admin."""

    code = "admin_required"
    status_code = 403
    default_detail = "This needs an administrator."


class CrossTenantWrite(TenancyError):
    """A write named another tenant, moved a row between tenants or reached another tenant's row."""

    code = "cross_tenant_write"
    status_code = 403
    default_detail = "This write reaches outside the current tenant."


class CrossScopeWrite(CrossTenantWrite):
    """A write named another value of a row scope (another owner, another team), moved a row
    out of its row scope, or pointed at a row outside it. A :class:`CrossTenantWrite`, so one
    handler answers both."""

    code = "cross_scope_write"
    status_code = 403
    default_detail = "This write reaches outside your rows."


class RowPolicyViolation(CrossScopeWrite):
    """A write would leave a row that fails a row policy of its model (archiving a row under
    a "live rows only" policy): the session could not read the row it wrote. A
    :class:`CrossScopeWrite`, so one handler answers both."""

    code = "row_policy_violation"
    status_code = 403
    default_detail = "This write would leave a row outside your policies."


class RowScopeRequired(TenancyError):
    """A model scoped by a row scope (say its owner) was used by a session with no value for
    it: no principal, or no claim to take it from. Fails closed."""

    code = "row_scope_required"
    status_code = 403
    default_detail = "These rows need a principal."


class TenantHierarchyInvalid(TenancyError):
    """The tenant's hierarchy is broken (a cycle, or deeper than ``max_depth``); the request
    fails closed, and the log names the tenant and why."""

    code = "tenant_hierarchy_invalid"
    status_code = 500
    default_detail = "This tenant's hierarchy is not valid."


class AlreadyExists(TenancyError):
    """A unique constraint was violated; the transaction is rolled back."""

    code = "already_exists"
    status_code = 409
    default_detail = "A record with these values already exists."


class TenantExists(AlreadyExists):
    """A tenant with this key exists already (two creates of one key: one wins)."""

    code = "tenant_exists"
    status_code = 409
    default_detail = "A tenant with this key already exists."


class TenantLimitReached(TenancyError):
    """``TenantRegistry(max_tenants=...)`` is reached: no tenant is created."""

    code = "tenant_limit_reached"
    status_code = 403
    default_detail = "No more tenants can be created."


class TenantActive(TenancyError):
    """A purge or a rename of a tenant that is not suspended: suspend it first, so that no
    request writes while its rows go or move."""

    code = "tenant_active"
    status_code = 409
    default_detail = "The tenant is active: suspend it first."


class WriteConflict(TenancyError):
    """A concurrent write got in the way (a deadlock, a row deleted under a reference to it);
    nothing was written, and the request may be retried."""

    code = "write_conflict"
    status_code = 409
    default_detail = "The data changed while this request ran; nothing was written. Retry it."


class DatabaseUnavailable(TenancyError):
    """The database could not be reached or did not answer in time; answered with
    ``Retry-After``."""

    code = "database_unavailable"
    status_code = 503
    default_detail = "The database is unavailable. Retry later."


class DatabaseBusy(DatabaseUnavailable):
    """Every session this engine may hold is in use and none freed up in time (see
    :class:`~fastapi_tenancy.SessionLimits`): the app is overloaded, not broken."""

    code = "database_busy"
    default_detail = "Every database session is in use. Retry later."


class InternalError(TenancyError):
    """A failure the kit has no better name for: the client gets a generic sentence, the log
    gets the traceback."""

    code = "internal_error"
    status_code = 500
    default_detail = "The server could not complete this request."


class TenantMigrationFailed(TenancyError):
    """A new tenant's schema or database could not be migrated (see
    :mod:`fastapi_tenancy.isolation.migrations`): nothing of the tenant was kept."""

    code = "tenant_migration_failed"
    status_code = 500
    default_detail = "The tenant's schema could not be migrated."


class TenancyMisuse(TenancyError):
    """The kit was used in a way that cannot be made safe: a programming error, not bad input."""

    code = "tenancy_misuse"
    status_code = 500
    default_detail = "The tenancy kit was used in an unsafe way."


class UnscopedStatement(TenancyMisuse):
    """A statement the ORM cannot scope (``text()``, core tables) was run in a scoped session."""

    code = "unscoped_statement"
    default_detail = "This statement cannot be scoped to the tenant and was refused."


class SessionTenantMismatch(TenancyMisuse):
    """A session made for one tenant was used while another tenant is bound."""

    code = "session_tenant_mismatch"
    default_detail = "This session belongs to another tenant."
