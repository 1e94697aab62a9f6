"""Multitenancy for FastAPI: resolve the tenant, bind it, and scope every ORM statement to it.

The request path reads from the module names::

    middleware -> resolvers/ -> chain -> lookup -> context (the contextvar)
               -> dependencies -> session (scoping hooks: scoping, writes) -> SQL
"""

from __future__ import annotations

from .chain import ChainResult, ResolverChain
from .changes import TenantChanges
from .constraints import tenant_foreign_key
from .context import (
    TenantContext,
    get_current_tenant,
    get_tenant_context,
    mutable_tenant,
    with_tenant,
    without_tenant,
)
from .dependencies import (
    AdminSession,
    AsyncAdminSession,
    AsyncGlobalSession,
    AsyncTenantSession,
    CurrentTenant,
    GlobalSession,
    TenantSession,
    admin_session,
    async_admin_session,
    async_global_session,
    async_tenant_session,
    current_tenant,
    global_session,
    lifted_session,
    tenant_session,
)
from .exceptions import (
    AdminRequired,
    AlreadyExists,
    AmbiguousTenant,
    CrossScopeWrite,
    CrossTenantWrite,
    DatabaseBusy,
    DatabaseUnavailable,
    InternalError,
    InvalidTenantKey,
    InvalidToken,
    NotAMember,
    RowPolicyViolation,
    RowScopeRequired,
    SessionTenantMismatch,
    TenancyError,
    TenancyMisuse,
    TenancyUnavailable,
    TenantActive,
    TenantExists,
    TenantHierarchyInvalid,
    TenantInactive,
    TenantLimitReached,
    TenantMigrationFailed,
    TenantMismatch,
    TenantNotFound,
    TenantRequired,
    UnscopedStatement,
    WriteConflict,
)
from .hierarchy import TenantFamily, TenantHierarchy
from .isolation import TENANT_SCHEMA, EngineCache, Isolation, Placement, Strategy
from .keys import (
    DEFAULT_KEY_PATTERN,
    IntegerKeys,
    KeyValidator,
    StringKeys,
    TenantKey,
    TenantKeyType,
    UUIDKeys,
    tenant_key_of,
)
from .limits import SessionLimits
from .logging import TenantLogFilter
from .lookup import LookupCache, TenantLookup, TenantTableLookup
from .middleware import TenancyMiddleware
from .models import TenantScoped, tenant_field, tenant_unique
from .propagation import as_tenant, capture, carry_tenant, restore
from .records import TenantRecord
from .registry import TenantRegistry
from .resolvers import (
    CallableResolver,
    HeaderResolver,
    JWTClaimResolver,
    Resolution,
    Resolver,
    SubdomainResolver,
)
from .row_policies import RowPolicy
from .row_scopes import owner_field, row_scope_field
from .scope import Access, SessionScope
from .session import TenantScopedSession
from .tenancy import Tenancy
from .tenant_first import identity_key

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_KEY_PATTERN",
    "TENANT_SCHEMA",
    "Access",
    "AdminRequired",
    "AdminSession",
    "AlreadyExists",
    "AmbiguousTenant",
    "AsyncAdminSession",
    "AsyncGlobalSession",
    "AsyncTenantSession",
    "CallableResolver",
    "ChainResult",
    "CrossScopeWrite",
    "CrossTenantWrite",
    "CurrentTenant",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "EngineCache",
    "GlobalSession",
    "HeaderResolver",
    "IntegerKeys",
    "InternalError",
    "InvalidTenantKey",
    "InvalidToken",
    "Isolation",
    "JWTClaimResolver",
    "KeyValidator",
    "LookupCache",
    "NotAMember",
    "Placement",
    "Resolution",
    "Resolver",
    "ResolverChain",
    "RowPolicy",
    "RowPolicyViolation",
    "RowScopeRequired",
    "SessionLimits",
    "SessionScope",
    "SessionTenantMismatch",
    "Strategy",
    "StringKeys",
    "SubdomainResolver",
    "Tenancy",
    "TenancyError",
    "TenancyMiddleware",
    "TenancyMisuse",
    "TenancyUnavailable",
    "TenantActive",
    "TenantChanges",
    "TenantContext",
    "TenantExists",
    "TenantFamily",
    "TenantHierarchy",
    "TenantHierarchyInvalid",
    "TenantInactive",
    "TenantKey",
    "TenantKeyType",
    "TenantLimitReached",
    "TenantLogFilter",
    "TenantLookup",
    "TenantMigrationFailed",
    "TenantMismatch",
    "TenantNotFound",
    "TenantRecord",
    "TenantRegistry",
    "TenantRequired",
    "TenantScoped",
    "TenantScopedSession",
    "TenantSession",
    "TenantTableLookup",
    "UUIDKeys",
    "UnscopedStatement",
    "WriteConflict",
    "__version__",
    "admin_session",
    "as_tenant",
    "async_admin_session",
    "async_global_session",
    "async_tenant_session",
    "capture",
    "carry_tenant",
    "current_tenant",
    "get_current_tenant",
    "get_tenant_context",
    "global_session",
    "identity_key",
    "lifted_session",
    "mutable_tenant",
    "owner_field",
    "restore",
    "row_scope_field",
    "tenant_field",
    "tenant_foreign_key",
    "tenant_key_of",
    "tenant_session",
    "tenant_unique",
    "with_tenant",
    "without_tenant",
]
