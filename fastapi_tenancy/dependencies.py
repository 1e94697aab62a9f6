"""FastAPI dependencies: sessions scoped to the bound tenant, and the two named switches.

The middleware binds the tenant; these only read it. Sessions roll back on any exception and
are always closed. They never commit for you: commit in the route, so a failed commit is an
error response and never a 2xx for a write that was lost::

    @app.post("/projects", status_code=201)
    def create(body: ProjectIn, session: TenantSession) -> Project:
        project = Project(name=body.name)
        session.add(project)
        session.commit()
        return project
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from anyio import CancelScope
from fastapi import Depends
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import HTTPConnection

from .context import TenantContext, audit_logger, get_tenant_context
from .exceptions import AdminRequired, TenancyMisuse, TenantRequired
from .scope import Access, SessionScope
from .session import scope_of
from .tenancy import TENANCY_SCOPE_KEY, Predicate, Tenancy, call_predicate

__all__ = [
    "AdminSession",
    "AsyncAdminSession",
    "AsyncGlobalSession",
    "AsyncTenantSession",
    "CurrentTenant",
    "GlobalSession",
    "TenantSession",
    "admin_session",
    "async_admin_session",
    "async_global_session",
    "async_tenant_session",
    "current_tenant",
    "global_session",
    "lifted_session",
    "tenant_session",
]


def _tenancy(conn: HTTPConnection) -> Tenancy:
    tenancy = conn.scope.get(TENANCY_SCOPE_KEY)
    if not isinstance(tenancy, Tenancy):
        raise TenancyMisuse("no Tenancy is installed on this app: call tenancy.install(app)")
    return tenancy


def current_tenant() -> TenantContext:
    """The bound tenant context (id, source, claims, record); 400 when no tenant is bound."""
    context = get_tenant_context()
    if context is None or context.id is None:
        raise TenantRequired()
    return context


def _tenant_scope() -> SessionScope:
    return SessionScope(tenant_id=current_tenant().id)


def _global_scope(conn: HTTPConnection, tenancy: Tenancy) -> SessionScope:
    context = get_tenant_context()
    if context is not None and context.id is not None:
        return SessionScope(tenant_id=context.id, access=Access.GLOBAL)
    audit_logger.info(
        "global access without a tenant",
        extra={
            "tenancy_event": "global_access",
            "tenancy_principal": None if context is None else tenancy.principal(context),
            "tenancy_tenant": None,
            "tenancy_path": conn.url.path,
            "tenancy_reason": "global_session without a tenant",
        },
    )
    return SessionScope(tenant_id=None, access=Access.GLOBAL)


async def _admin_scope(conn: HTTPConnection, tenancy: Tenancy) -> SessionScope:
    context = get_tenant_context() or TenantContext(id=None)
    principal = tenancy.principal(context)
    allowed = await tenancy.check_admin(context)
    audit_logger.info(
        "admin bypass %s",
        "granted" if allowed else "refused",
        extra={
            "tenancy_event": "admin_bypass",
            "tenancy_allowed": allowed,
            "tenancy_principal": principal,
            "tenancy_tenant": context.id,
            "tenancy_path": conn.url.path,
            "tenancy_reason": "admin_session" if allowed else "not an admin",
        },
    )
    if not allowed:
        raise AdminRequired()
    return SessionScope(tenant_id=None, access=Access.UNSCOPED)


@asynccontextmanager
async def _sync_session(tenancy: Tenancy, scope: SessionScope) -> AsyncIterator[Session]:
    """One session, made in the event loop once its engine has a slot free (no thread waits
    for one: see :mod:`fastapi_tenancy.limits`); closed, which rolls back what was not
    committed, on every exit. Closing a session that holds a connection talks to the database,
    so it runs in a thread of the slots' own, shielded from cancellation."""
    session = tenancy.make_session(scope)
    limiter = tenancy.limiter_for(scope_of(session))
    await limiter.acquire(session)
    try:
        yield session
    finally:
        try:
            if session.in_transaction():
                with CancelScope(shield=True):
                    await anyio.to_thread.run_sync(session.close, limiter=limiter.closers)
            else:
                session.close()
        finally:
            limiter.release(session)


@asynccontextmanager
async def _async_session(tenancy: Tenancy, scope: SessionScope) -> AsyncIterator[AsyncSession]:
    session = tenancy.make_async_session(scope)
    limiter = tenancy.limiter_for(scope_of(session.sync_session))
    await limiter.acquire(session)
    try:
        yield session
    finally:
        try:
            with CancelScope(shield=True):
                await session.close()
        finally:
            limiter.release(session)


async def tenant_session(conn: HTTPConnection) -> AsyncIterator[Session]:
    """A session scoped to the bound tenant; 400 ``tenant_required`` when none is bound."""
    async with _sync_session(_tenancy(conn), _tenant_scope()) as session:
        yield session


async def global_session(conn: HTTPConnection) -> AsyncIterator[Session]:
    """The global-access switch: scoped when a tenant is bound; otherwise reads of models
    declared ``__global_access__`` cross tenants and other tenant models fail closed."""
    tenancy = _tenancy(conn)
    async with _sync_session(tenancy, _global_scope(conn, tenancy)) as session:
        yield session


async def admin_session(conn: HTTPConnection) -> AsyncIterator[Session]:
    """The admin-bypass switch: an unscoped session, only for admins (403 otherwise), audited."""
    tenancy = _tenancy(conn)
    scope = await _admin_scope(conn, tenancy)
    async with _sync_session(tenancy, scope) as session:
        yield session


async def async_tenant_session(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """Async twin of :func:`tenant_session`, for a Tenancy on an ``AsyncEngine``."""
    async with _async_session(_tenancy(conn), _tenant_scope()) as session:
        yield session


async def async_global_session(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """Async twin of :func:`global_session`."""
    tenancy = _tenancy(conn)
    async with _async_session(tenancy, _global_scope(conn, tenancy)) as session:
        yield session


async def async_admin_session(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """Async twin of :func:`admin_session`."""
    tenancy = _tenancy(conn)
    scope = await _admin_scope(conn, tenancy)
    async with _async_session(tenancy, scope) as session:
        yield session


async def _lifted_scope(
    conn: HTTPConnection, tenancy: Tenancy, scopes: tuple[str, ...], allow: Predicate
) -> SessionScope:
    context = current_tenant()
    allowed = await call_predicate(allow, context)
    if not allowed:
        audit_logger.info(
            "row scope lift refused",
            extra={
                "tenancy_event": "row_scope_lifted",
                "tenancy_allowed": False,
                "tenancy_scopes": list(scopes),
                "tenancy_principal": tenancy.principal(context),
                "tenancy_tenant": context.id,
                "tenancy_path": conn.url.path,
            },
        )
        raise AdminRequired("Only the tenant's admins may see these rows.")
    return tenancy.lift(SessionScope(tenant_id=context.id), scopes, reason=conn.url.path)


def lifted_session(
    *scopes: str, allow: Predicate, use_async: bool = False
) -> Callable[[HTTPConnection], AsyncIterator[Any]]:
    """The row-scope switch for a tenant's admins: a dependency giving a session of the bound
    tenant that does not apply the row scopes or row policies ``scopes`` (every owner's notes,
    the archived documents), only when ``allow(context)`` says so (403 ``admin_required``
    otherwise); every use is audited.

    The tenant stays: a lifted session is as tenant-scoped as any other::

        is_tenant_admin = lambda context: "owner" in context.claims.get("roles", [])
        TeamNotes = Annotated[Session, Depends(lifted_session("owner", allow=is_tenant_admin))]

    ``use_async=True`` gives an ``AsyncSession``, for a Tenancy on an ``AsyncEngine``.
    """
    if not scopes:
        raise ValueError("lifted_session() needs the names of the row scopes or policies it lifts")

    async def sync_dependency(conn: HTTPConnection) -> AsyncIterator[Session]:
        tenancy = _tenancy(conn)
        scope = await _lifted_scope(conn, tenancy, scopes, allow)
        async with _sync_session(tenancy, scope) as session:
            yield session

    async def async_dependency(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
        tenancy = _tenancy(conn)
        scope = await _lifted_scope(conn, tenancy, scopes, allow)
        async with _async_session(tenancy, scope) as session:
            yield session

    return async_dependency if use_async else sync_dependency


TenantSession = Annotated[Session, Depends(tenant_session)]
"""Route parameter type for a tenant-scoped session: ``session: TenantSession``."""
GlobalSession = Annotated[Session, Depends(global_session)]
"""Route parameter type for the global-access switch."""
AdminSession = Annotated[Session, Depends(admin_session)]
"""Route parameter type for the admin-bypass switch."""
AsyncTenantSession = Annotated[AsyncSession, Depends(async_tenant_session)]
"""Route parameter type for an async tenant-scoped session."""
AsyncGlobalSession = Annotated[AsyncSession, Depends(async_global_session)]
"""Route parameter type for the async global-access switch."""
AsyncAdminSession = Annotated[AsyncSession, Depends(async_admin_session)]
"""Route parameter type for the async admin-bypass switch."""
CurrentTenant = Annotated[TenantContext, Depends(current_tenant)]
"""Route parameter type for the bound tenant context."""
