"""The public surface: ``fastapi_tenancy.__all__`` changes only on purpose."""

from __future__ import annotations

import types

import fastapi_tenancy

EXPECTED = [
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

CONTRACT_NAMES = [
    "Tenancy",
    "TenancyMiddleware",
    "HeaderResolver",
    "SubdomainResolver",
    "JWTClaimResolver",
    "TenantScoped",
    "tenant_session",
    "global_session",
    "admin_session",
    "current_tenant",
    "with_tenant",
    "without_tenant",
    "get_current_tenant",
    "TenancyError",
]


def isort_style(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then CamelCase, then everything else."""
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


def test_all_is_sorted() -> None:
    assert fastapi_tenancy.__all__ == sorted(fastapi_tenancy.__all__, key=isort_style)


def test_all_is_exactly_the_expected_public_api() -> None:
    assert fastapi_tenancy.__all__ == EXPECTED


def test_every_exported_name_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from fastapi_tenancy import *", namespace)  # noqa: S102 - the star import is the point
    missing = [name for name in EXPECTED if name not in namespace]
    assert missing == []
    for name in EXPECTED:
        assert getattr(fastapi_tenancy, name) is namespace[name]


def test_every_public_name_of_the_package_is_exported() -> None:
    public = {
        name
        for name, value in vars(fastapi_tenancy).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # the package's own `from __future__ import annotations`
    }
    assert sorted(public - set(fastapi_tenancy.__all__)) == []


def test_the_contracts_names_are_exported() -> None:
    assert sorted(set(CONTRACT_NAMES) - set(fastapi_tenancy.__all__)) == []


def test_every_error_has_a_stable_code_and_status() -> None:
    errors = [
        value
        for value in vars(fastapi_tenancy).values()
        if isinstance(value, type) and issubclass(value, fastapi_tenancy.TenancyError)
    ]
    codes = [error.code for error in errors]
    assert len(codes) == len(set(codes)), codes
    for error in errors:
        assert isinstance(error.code, str)
        assert error.code
        assert 400 <= error.status_code < 600, error
