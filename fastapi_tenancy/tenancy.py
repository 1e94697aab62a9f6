"""The one configuration object: resolvers, lookup, membership, admin rule and sessions."""

from __future__ import annotations

import inspect
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from sqlalchemy import Engine, MetaData, Table
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import HTTPConnection

from .async_tenants import AsyncTenants
from .chain import ResolverChain
from .changes import EVERY_TENANT, TenantChanges, keep_listening
from .checks import (
    MYSQL_DIALECTS,
    Finding,
    find_case_insensitive_tenant_columns,
    refuse_forgotten_tenant_models,
)
from .context import TenantContext, audit_logger, checked_key, get_tenant_context
from .exceptions import NotAMember, TenancyError, TenancyMisuse, TenancyUnavailable, TenantRequired
from .hierarchy import NO_FAMILY, TenantHierarchy
from .isolation.placement import Isolation, Placement, Strategy
from .keys import DEFAULT_KEY_PATTERN, TenantKeyType, key_type_for
from .limits import SessionLimiter, SessionLimits
from .lookup import LookupCache, TenantLookup, TenantTableLookup
from .models import family_reads, placed_tables
from .registry import TenantRegistry
from .resolvers.base import Resolver
from .row_policies import declared_row_policies
from .row_scopes import OWNER_SCOPE, declared_row_scopes
from .scope import Access, SessionScope
from .session import SCOPE_KEY, TenantScopedSession
from .tenants import Tenants
from .wall import install_guard
from .wall.audit import AUDIT_KEY, StatementAudit, install_tagger

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from fastapi import FastAPI

    from .postgres.setting import RowLevelSecurity, TenantSetting

__all__ = ["Tenancy"]

startup_logger = logging.getLogger("fastapi_tenancy.startup")
changes_logger = logging.getLogger("fastapi_tenancy.changes")

TENANCY_SCOPE_KEY = "fastapi_tenancy"
"""Key in the ASGI scope under which the middleware leaves its :class:`Tenancy`."""

DEFAULT_EXCLUDED_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")

Predicate = Callable[[TenantContext], "bool | Awaitable[bool]"]


class Tenancy:
    """How an application finds its tenant, checks it, and scopes its sessions.

    ``engine`` is a sync ``Engine`` or an ``AsyncEngine``. ``resolvers`` are asked in order
    (see :class:`~fastapi_tenancy.chain.ResolverChain`); plain callables are accepted.
    ``lookup`` turns a key into a tenant record (a :class:`TenantTableLookup`, a callable, or a
    ready :class:`TenantLookup`, used as given).
    ``membership`` says whether the principal may act in the bound tenant; ``is_admin`` guards
    the admin-bypass switch. A chain with a ``JWTClaimResolver`` beside a header or subdomain
    resolver needs ``membership`` (else a request without a token could name any tenant), or
    ``trust_unverified_sources=True`` to say every caller may act in any tenant it names.
    ``key_type`` (``str``, ``int``, ``uuid.UUID`` or a
    :class:`~fastapi_tenancy.TenantKeyType`) is the type of the tenant keys; ``key_pattern``
    validates string keys. ``require_tenant`` may be a bool or a per-request callable;
    ``exclude_paths`` are served with no tenant resolution at all (exact paths, or prefixes
    ending with ``/``; ``"/"`` alone is the root path only).

    ``rls=True`` (PostgreSQL) adds the database's own wall under the ORM scoping: every
    transaction of a tenant session names its tenant to the row-level security policies (see
    :mod:`fastapi_tenancy.postgres`), and a connection whose role would bypass them is refused.
    ``admin_engine`` serves the unscoped sessions (the admin-bypass switch and
    ``without_tenant()``): with row-level security on, give it a role with ``BYPASSRLS``, so
    ordinary sessions have no way to cross tenants of their own.

    Sessions keep their loaded values at ``commit()`` (``expire_on_commit=False``), so a route
    returns what it wrote; ``session_options`` passes other ``Session`` options.

    ``session_limits`` bounds the sessions that requests hold at once, per engine, to the
    pool's connections, so that no load deadlocks sync routes; a request that waits too long
    for one answers ``503 database_busy`` (see :mod:`fastapi_tenancy.limits`). ``None`` turns
    the bound off.

    ``audit_statements=True`` logs one record per statement of a tenant session on the
    ``fastapi_tenancy.audit`` logger (``statement_scoped``: tenant, principal, the tenant tables
    and the scopes its SQL carried); ``tag_statements=True`` ends each such statement with a
    comment naming its tenant and principal, ``/*principal='...',tenant='acme'*/``, for the
    database's own logs. Both are off by default (see :mod:`fastapi_tenancy.wall.audit`).

    Usage::

        tenancy = Tenancy(engine, resolvers=[HeaderResolver()])
        app = FastAPI()
        tenancy.install(app)
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        *,
        resolvers: Sequence[Resolver | Callable[..., Any]],
        lookup: TenantLookup | TenantTableLookup[Any] | Callable[[Any], Any] | None = None,
        lookup_cache: LookupCache | None = None,
        membership: Predicate | None = None,
        is_admin: Predicate | None = None,
        require_tenant: bool | Callable[[HTTPConnection], bool] = True,
        exclude_paths: Collection[str] = DEFAULT_EXCLUDED_PATHS,
        key_pattern: str | re.Pattern[str] = DEFAULT_KEY_PATTERN,
        key_type: type[Any] | TenantKeyType[Any] = str,
        principal_claim: str = "sub",
        session_options: Mapping[str, Any] | None = None,
        rls: bool | RowLevelSecurity = False,
        admin_engine: Engine | AsyncEngine | None = None,
        trust_unverified_sources: bool = False,
        session_limits: SessionLimits | None = SessionLimits(),  # noqa: B008 (frozen)
        tenant_changes: TenantChanges | None = None,
        registry: TenantRegistry[Any] | None = None,
        row_scopes: Mapping[str, Callable[[TenantContext], Any]] | None = None,
        audit_statements: bool = False,
        tag_statements: bool = False,
        hierarchy: TenantHierarchy | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        if not isinstance(engine, (Engine, AsyncEngine)):
            raise TypeError("Tenancy needs a SQLAlchemy Engine or AsyncEngine")
        if session_limits is not None and not isinstance(session_limits, SessionLimits):
            raise TypeError("session_limits must be a SessionLimits or None")
        self.engine = engine
        self.is_async = isinstance(engine, AsyncEngine)
        install_guard(engine)
        if admin_engine is not None and isinstance(admin_engine, AsyncEngine) != self.is_async:
            raise TypeError("admin_engine must be of the same kind (sync or async) as engine")
        self.admin_engine = admin_engine
        self.session_limiter = SessionLimiter.for_engine(engine, session_limits)
        self._admin_limiter = (
            self.session_limiter
            if admin_engine is None
            else SessionLimiter.for_engine(admin_engine, session_limits)
        )
        self.rls: TenantSetting | None = None
        self._session_class: type[TenantScopedSession] = TenantScopedSession
        self._session_info: dict[str, Any] = {}
        if rls is not False:
            from .postgres.setting import (
                SETTING_KEY,
                RLSSession,
                RowLevelSecurity,
                enable_tenant_setting,
            )

            options = rls if isinstance(rls, RowLevelSecurity) else RowLevelSecurity()
            self.rls = enable_tenant_setting(engine, options)
            self._session_class = RLSSession
            self._session_info = {SETTING_KEY: self.rls}
        if audit_statements or tag_statements:
            self._session_info[AUDIT_KEY] = StatementAudit(
                log=audit_statements, tag=tag_statements, principal_claim=principal_claim
            )
            if tag_statements:
                install_tagger(engine)
        self.keys: TenantKeyType[Any] = key_type_for(key_type, pattern=key_pattern)
        self.chain = ResolverChain(resolvers, validate_key=self.keys.parse)
        if membership is None and not trust_unverified_sources:
            _refuse_unverified_beside_verified(self.chain.resolvers)
        if registry is not None and lookup is None:
            lookup = registry.lookup()
        self.registry = registry
        self.lookup = self._build_lookup(lookup, lookup_cache)
        if hierarchy is not None and self.lookup is None:
            raise TenancyMisuse(
                "a TenantHierarchy reads parents from the tenant records: give a lookup"
            )
        self.hierarchy = hierarchy
        self.isolation = isolation
        self._record_table: TenantTableLookup[Any] | None = None
        self._engine_limiters: weakref.WeakKeyDictionary[Any, SessionLimiter] = (
            weakref.WeakKeyDictionary()
        )
        self._session_limits = session_limits
        if isolation is not None:
            self._configure_engine = partial(_configure_tenant_engine, isolation, tag_statements)
            self._place_apart(isolation, lookup)
        if tenant_changes is not None and not isinstance(tenant_changes, TenantChanges):
            raise TypeError("tenant_changes must be a TenantChanges (RedisChanges, ...)")
        self.tenant_changes = tenant_changes
        self._tenants: Tenants[Any] | AsyncTenants[Any] | None = None
        self.membership = membership
        self.is_admin = is_admin
        self.require_tenant = require_tenant
        self._exact_excluded = frozenset(p for p in exclude_paths if p == "/" or p[-1:] != "/")
        self._prefix_excluded = tuple(p for p in exclude_paths if p.endswith("/") and p != "/")
        self.principal_claim = principal_claim
        self.row_scopes: dict[str, Callable[[TenantContext], Any]] = {
            OWNER_SCOPE: self.principal,
            **(row_scopes or {}),
        }
        # A committed row is answered as written: no reload after the commit, which a
        # concurrent delete would turn into an error for a write that did happen.
        self.session_options = {"expire_on_commit": False, **(session_options or {})}
        self._models_checked = False

    def _place_apart(self, isolation: Isolation, lookup: Any) -> None:
        """Make every connection of the app's engines translate the tenant schema placeholder
        to the default schema (where the shared tenants' tables are), unless its session places
        its tenant elsewhere; keep the table that records a tenant's strategy."""
        for engine in (self.engine, self.admin_engine):
            if engine is not None:
                sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
                sync_engine.update_execution_options(
                    schema_translate_map=isolation.shared.translate_map
                )
        if isinstance(lookup, TenantTableLookup):
            self._record_table = lookup
        elif self.registry is not None:
            self._record_table = self.registry.lookup()
        if isolation.reads_records and self.lookup is None:
            raise TenancyMisuse(
                "Isolation(field=...) reads the tenant records: give the Tenancy a lookup or a "
                "registry"
            )

    def placement_of(self, tenant: Any, record: Any = None) -> Placement | None:
        """Where tenant ``tenant`` (a key, its spelling or a record) keeps its rows, or
        ``None`` when the app does not place tenants apart (no ``isolation``).

        The strategy reads ``record`` when given, else the record of the bound tenant when it
        is this one, else (on a sync engine) the registry's row. An async app's script names
        the record: ``tenancy.async_session(tenant=record)``.
        """
        isolation = self.isolation
        if isolation is None:
            return None
        if record is None:
            record = _record(tenant)
        key = self.keys.coerce(checked_key(tenant, "a tenant's placement"))
        if record is None and (isolation.reads_records or isolation.choose is not None):
            record = self._record_of(key, needed=isolation.reads_records)
        strategy = isolation.strategy_of(key, record)
        if strategy is Strategy.SCHEMA and self.engine.dialect.name == "sqlite":
            raise TenancyMisuse(
                "SQLite has no schemas, and an attached database would stay attached to the "
                "pooled connection: place SQLite tenants in databases of their own "
                "(Strategy.DATABASE, a file each) or in the shared tables"
            )
        return isolation.placement(self.keys.format(key), strategy, record)

    def _record_of(self, key: Any, *, needed: bool) -> Any:
        context = get_tenant_context()
        if context is not None and context.record is not None and context.id == key:
            return context.record
        table = self._record_table
        if table is not None and isinstance(self.engine, Engine):
            return table.fetch_sync(self.engine, key)
        if not needed:
            return None
        raise TenancyMisuse(
            f"the strategy of tenant {key!r} depends on its record, and none is at hand: "
            "pass the record (tenancy.async_session(tenant=record)) or bind it in a request"
        )

    def install(self, app: FastAPI) -> None:
        """Add :class:`TenancyMiddleware`, the JSON handlers for :class:`TenancyError` and
        database errors (see :mod:`fastapi_tenancy.responses`), and the resolvers' security
        schemes to the OpenAPI document (so ``/docs`` offers "Authorize").

        The middleware gives the handlers to the apps mounted in ``app`` too, on its first call,
        so an error raised in a mounted app answers its JSON and status, not a 500.

        Refuses to start (``TenancyMisuse``) while a mapped model has a tenant column but is not
        a tenant model: see :func:`~fastapi_tenancy.checks.find_forgotten_tenant_models`."""
        refuse_forgotten_tenant_models()
        self._models_checked = True
        from .exceptions import TenancyError
        from .middleware import TenancyMiddleware
        from .openapi import install_openapi
        from .responses import database_error_handler, tenancy_error_handler

        app.add_middleware(TenancyMiddleware, tenancy=self)
        app.add_exception_handler(TenancyError, tenancy_error_handler)  # type: ignore[arg-type]
        app.add_exception_handler(SQLAlchemyError, database_error_handler)  # type: ignore[arg-type]
        install_openapi(app, self)

    def is_excluded(self, path: str) -> bool:
        """Whether ``path`` is served without tenant resolution."""
        return path in self._exact_excluded or path.startswith(self._prefix_excluded)

    def principal(self, context: TenantContext) -> str | None:
        """The principal named by the verified claims (``sub`` by default), for audit lines."""
        value = context.claims.get(self.principal_claim)
        return None if value is None else str(value)

    async def resolve(self, conn: HTTPConnection) -> TenantContext:
        """Run the chain, the required-tenant rule, the lookup and the membership check."""
        result = await self.chain.resolve(conn)
        claims = result.claims if result.claims is not None else {}
        if result.key is None:
            required = self.require_tenant
            if required if isinstance(required, bool) else required(conn):
                raise TenantRequired()
            return TenantContext(id=None, source=None, claims=claims)
        record = None if self.lookup is None else await self.lookup(result.key)
        family = NO_FAMILY
        if self.hierarchy is not None and self.lookup is not None and (reads := family_reads()):
            family = await self.hierarchy.family_of(
                result.key,
                record,
                self.lookup,
                self.keys.coerce,
                descendants="descendants" in reads,
            )
        context = TenantContext(
            id=result.key, source=result.source, claims=claims, record=record, family=family
        )
        if self.membership is not None and not await call_predicate(self.membership, context):
            raise NotAMember()
        return context

    async def check_admin(self, context: TenantContext) -> bool:
        """Whether the admin predicate admits this context (no predicate: nobody)."""
        return self.is_admin is not None and bool(await call_predicate(self.is_admin, context))

    async def check_database(
        self, metadata: MetaData | Iterable[Table] | None = None
    ) -> list[Finding]:
        """What the live database lacks for exact tenant scoping, or ``[]``; await it at startup.

        On MySQL and MariaDB: tenant columns whose collation is not binary, so that keys
        differing in case match each other's rows (see :mod:`fastapi_tenancy.checks`). SQLite
        and PostgreSQL compare keys exactly and answer ``[]`` without connecting. Tenant tables
        are ``metadata``'s, or those of every ``TenantScoped`` model.

        Usage::

            @asynccontextmanager
            async def lifespan(app: FastAPI) -> AsyncIterator[None]:
                if findings := await tenancy.check_database(SQLModel.metadata):
                    raise RuntimeError("\n".join(map(str, findings)))
                yield
        """
        engine = self.engine
        if engine.dialect.name not in MYSQL_DIALECTS:
            return []
        if isinstance(engine, AsyncEngine):
            async with engine.connect() as conn:
                return await conn.run_sync(find_case_insensitive_tenant_columns, metadata)
        return await anyio.to_thread.run_sync(
            find_case_insensitive_tenant_columns, engine, metadata
        )

    async def check_startup(self) -> None:
        """Fail fast, before the app reports it has started: the middleware awaits this when the
        app's lifespan startup completes, and a failure makes the startup fail.

        Refuses forgotten tenant models (``TenancyMisuse``), and with row-level security on,
        connects once so that a role that would bypass the policies is refused now
        (``UnsafeDatabaseRole``), not at the first request. A database that cannot be reached
        yet is logged and left to the first connection, which checks the role then.
        """
        refuse_forgotten_tenant_models()
        if self.rls is None:
            return
        engine = self.engine
        try:
            if isinstance(engine, AsyncEngine):
                async with engine.connect():
                    pass
            else:
                await anyio.to_thread.run_sync(_connect_once, engine)
        except (SQLAlchemyError, OSError) as error:
            startup_logger.warning(
                "the database could not be reached at startup (%s): its role is checked at "
                "the first connection instead",
                error,
            )

    @property
    def works_in_background(self) -> bool:
        """Whether the app's lifespan has work of ours to run: see :meth:`run_in_background`."""
        lookup = self.lookup
        return lookup is not None and (lookup.preloads or self.tenant_changes is not None)

    async def run_in_background(self, group: TaskGroup) -> None:
        """Start the work the app keeps doing while it serves, in ``group``: listening to
        ``tenant_changes`` (subscribed, or its failure logged, before this returns), then with
        ``LookupCache(preload=True)`` the first load of every tenant (awaited here, before the
        app reports it has started) and its reloads. The middleware calls this in the lifespan.
        """
        lookup = self.lookup
        if lookup is None:
            return
        if self.tenant_changes is not None:
            await group.start(keep_listening, self.tenant_changes, self._heard, lookup.invalidate)
        if lookup.preloads:
            await lookup.reload_logged()
            group.start_soon(lookup.keep_fresh)

    async def tenant_changed(self, key: Any = None) -> None:
        """Forget tenant ``key`` (a key, its spelling or a record; every tenant if ``None``) in
        this worker's lookup cache and, through ``tenant_changes``, in every worker's.

        Call it after the change is committed. If the channel cannot be reached it raises
        :class:`TenancyUnavailable`: this worker has forgotten the tenant, the others keep it
        until their cache's ``ttl``.
        """
        spelled = EVERY_TENANT if key is None else self.keys.format(self.keys.coerce(key))
        self._heard(spelled)
        if self.tenant_changes is None:
            return
        try:
            await self.tenant_changes.publish(spelled)
        except Exception as error:
            raise TenancyUnavailable() from error

    def tenant_changed_sync(self, key: Any = None) -> None:
        """:meth:`tenant_changed` for sync code: a script, a task, a sync route."""
        spelled = EVERY_TENANT if key is None else self.keys.format(self.keys.coerce(key))
        self._heard(spelled)
        if self.tenant_changes is None:
            return
        try:
            self.tenant_changes.publish_sync(spelled)
        except Exception as error:
            raise TenancyUnavailable() from error

    @property
    def tenants(self) -> Tenants[Any]:
        """Create, suspend, resume and purge tenants of the ``registry``, on a sync engine
        (:class:`~fastapi_tenancy.tenants.Tenants`)."""
        if self.is_async:
            raise TenancyMisuse("this Tenancy has an AsyncEngine: use tenancy.async_tenants")
        tenants = self._tenants
        if not isinstance(tenants, Tenants):
            tenants = self._tenants = Tenants(self, self._needs_registry())
        return tenants

    @property
    def async_tenants(self) -> AsyncTenants[Any]:
        """Async twin of :attr:`tenants`, for a Tenancy on an ``AsyncEngine``."""
        if not self.is_async:
            raise TenancyMisuse("this Tenancy has a sync Engine: use tenancy.tenants")
        tenants = self._tenants
        if not isinstance(tenants, AsyncTenants):
            tenants = self._tenants = AsyncTenants(self, self._needs_registry())
        return tenants

    def _needs_registry(self) -> TenantRegistry[Any]:
        if self.registry is None:
            raise TenancyMisuse("tenancy.tenants needs Tenancy(..., registry=TenantRegistry(...))")
        return self.registry

    def _heard(self, spelled: str) -> None:
        """A change heard on the channel (or made here): forget that tenant's cached lookup."""
        if self.hierarchy is not None:
            self.hierarchy.invalidate()  # any tenant's change may change another's descendants
        if self.lookup is None:
            return
        if spelled == EVERY_TENANT:
            self.lookup.invalidate()
            return
        try:
            key = self.keys.parse(spelled)
        except TenancyError:
            changes_logger.warning("ignored a tenant change for an invalid key: %r", spelled)
            return
        self.lookup.invalidate(key)

    def session(self, *, tenant: Any = None, lift: Collection[str] = ()) -> TenantScopedSession:
        """A session scoped like ``tenant_session``, for code outside a request.

        Scoped to ``tenant`` (a key, its string spelling or a tenant record) when given, else
        to the tenant bound by ``with_tenant()``; unscoped inside ``without_tenant()``; with no
        tenant at all, queries on tenant models fail closed. ``lift`` names row scopes the
        session does not apply (``lift=["owner"]``: every owner's rows of the tenant), audited.
        """
        if self.is_async:
            raise TenancyMisuse("this Tenancy has an AsyncEngine: use tenancy.async_session()")
        return self.make_session(self._session_scope(tenant, lift))

    def async_session(self, *, tenant: Any = None, lift: Collection[str] = ()) -> AsyncSession:
        """Async twin of :meth:`session`, for a Tenancy built on an ``AsyncEngine``."""
        if not self.is_async:
            raise TenancyMisuse("this Tenancy has a sync Engine: use tenancy.session()")
        return self.make_async_session(self._session_scope(tenant, lift))

    def whole_tenant_scope(self, tenant: Any, placement: Placement | None = None) -> SessionScope:
        """The scope of the kit's own work on a whole tenant (creating, purging, exporting,
        importing, renaming): scoped to ``tenant``, with every row scope and row policy
        lifted, since those operations move every owner's rows alike (never the caller's
        only: an admin purging a tenant is a principal too), and without its family's rows
        (an export holds the tenant's own). The values still come from the bound context, so
        a hook creating a row-scoped row stamps the caller as its owner. Not for application
        code: their own audit lines stand for it. ``placement`` places the session where the
        tenant's record does not (yet) say."""
        key = self.keys.coerce(checked_key(tenant, "a tenant operation"))
        lifted = declared_row_scopes() | declared_row_policies()
        return SessionScope(key, lifted=lifted, family=NO_FAMILY, placement=placement)

    def _session_scope(self, tenant: Any, lift: Collection[str]) -> SessionScope:
        if tenant is None:
            scope = self.ambient_scope()
        else:
            key = self.keys.coerce(checked_key(tenant, "tenancy.session(tenant=...)"))
            scope = SessionScope(tenant_id=key, placement=self.placement_of(key, _record(tenant)))
        if lift:
            scope = self.lift(scope, lift, reason="tenancy.session(lift=...)")
        return scope

    def ambient_scope(self, access: Access = Access.TENANT) -> SessionScope:
        """The scope matching the tenant bound right now, its key checked against ``keys``."""
        context = get_tenant_context()
        if context is None:
            return SessionScope(tenant_id=None, access=access)
        if context.unscoped:
            return SessionScope(tenant_id=None, access=Access.UNSCOPED)
        bound = context.id
        if bound is None or type(bound) is self.keys.python_type:
            return SessionScope(tenant_id=bound, access=access)
        return SessionScope(tenant_id=self.keys.coerce(bound), access=access, bound_as=bound)

    def make_session(self, scope: SessionScope) -> TenantScopedSession:
        """A sync session with an explicit scope."""
        if self.is_async:
            raise TenancyMisuse("this Tenancy has an AsyncEngine: use the async dependencies")
        bind, session_class, info, binds = self._session_parts(scope)
        return session_class(bind, binds=binds, info=info, **self.session_options)  # type: ignore[arg-type]

    def make_async_session(self, scope: SessionScope) -> AsyncSession:
        """An async session with an explicit scope."""
        if not self.is_async:
            raise TenancyMisuse("this Tenancy has a sync Engine: use the sync dependencies")
        bind, session_class, info, binds = self._session_parts(scope)
        return AsyncSession(
            bind,  # type: ignore[arg-type]
            binds=binds,  # type: ignore[arg-type]
            sync_session_class=session_class,
            info=info,
            **self.session_options,
        )

    def limiter_for(self, scope: SessionScope) -> SessionLimiter:
        """The slots of the engine that sessions of ``scope`` use."""
        admin = scope.access is Access.UNSCOPED and scope.tenant_id is None
        if admin:
            return self._admin_limiter
        placement, isolation = scope.placement, self.isolation
        if placement is None or placement.url is None or isolation is None:
            return self.session_limiter
        engine = self._tenant_engine(isolation, placement.url)
        limiter = self._engine_limiters.get(engine)
        if limiter is None:
            limiter = SessionLimiter.for_engine(engine, self._session_limits)
            self._engine_limiters[engine] = limiter
        return limiter

    def _tenant_engine(self, isolation: Isolation, url: URL) -> Engine | AsyncEngine:
        """The engine of a tenant database, from the isolation's cache."""
        return isolation.engines.get(url, is_async=self.is_async, configure=self._configure_engine)

    def _session_parts(
        self, scope: SessionScope
    ) -> tuple[
        Engine | AsyncEngine,
        type[TenantScopedSession],
        dict[str, Any],
        dict[Any, Engine | AsyncEngine] | None,
    ]:
        if not self._models_checked:
            refuse_forgotten_tenant_models()  # once: scripts make sessions without install()
            self._models_checked = True
        admin = scope.access is Access.UNSCOPED and scope.tenant_id is None
        if admin and self.admin_engine is not None:
            return self.admin_engine, TenantScopedSession, {SCOPE_KEY: scope}, None
        if scope.scoped and (
            (scope.row_values is None and declared_row_scopes())
            or (scope.family is None and family_reads())
        ):
            scope = self._completed(scope)
        binds = None
        isolation = self.isolation
        if isolation is not None and scope.scoped and scope.tenant_id is not None:
            placement = scope.placement
            if placement is None:
                placement = self.placement_of(scope.tenant_id)
                scope = replace(scope, placement=placement)
            if placement is not None and placement.url is not None:
                engine = self._tenant_engine(isolation, placement.url)
                binds = dict.fromkeys(placed_tables().values(), engine)
        info = {SCOPE_KEY: scope, **self._session_info}
        return self.engine, self._session_class, info, binds

    def _completed(self, scope: SessionScope) -> SessionScope:
        """``scope`` with what it left ``None`` taken from the bound context: the values of
        the row scopes the models declare (``None`` where the context has none: those models
        then fail closed) and its tenant's family (none when the context is another tenant's,
        or was bound without a lookup)."""
        context = get_tenant_context()
        values = scope.row_values
        if values is None:
            names = sorted(declared_row_scopes())
            values = tuple((name, self._row_value(name, context)) for name in names)
        family = scope.family
        if family is None:
            family = NO_FAMILY
            if context is not None and context.id in (scope.tenant_id, scope.bound_as):
                family = context.family
        return SessionScope(
            scope.tenant_id,
            scope.access,
            scope.bound_as,
            values,
            scope.lifted,
            family,
            scope.placement,
        )

    def _row_value(self, name: str, context: TenantContext | None) -> Any:
        function = self.row_scopes.get(name)
        return None if function is None or context is None else function(context)

    def lift(
        self, scope: SessionScope, names: Collection[str], *, reason: str | None
    ) -> SessionScope:
        """``scope`` with the row scopes and row policies ``names`` lifted (a tenant admin
        seeing every owner's rows, a records manager the archived ones); logged on the audit
        logger. The tenant stays."""
        unknown = set(names) - self.row_scopes.keys() - declared_row_policies()
        if unknown:
            raise TenancyMisuse(f"no row scope or row policy named {sorted(unknown)} to lift")
        context = get_tenant_context()
        audit_logger.info(
            "row scope lifted",
            extra={
                "tenancy_event": "row_scope_lifted",
                "tenancy_scopes": sorted(names),
                "tenancy_principal": None if context is None else self.principal(context),
                "tenancy_tenant": scope.tenant_id,
                "tenancy_reason": reason,
            },
        )
        return replace(scope, lifted=scope.lifted | frozenset(names))

    def _build_lookup(
        self,
        lookup: TenantLookup | TenantTableLookup[Any] | Callable[[Any], Any] | None,
        cache: LookupCache | None,
    ) -> TenantLookup | None:
        if lookup is None or isinstance(lookup, TenantLookup):
            return lookup
        if isinstance(lookup, TenantTableLookup):
            table = lookup
            engine = self.engine
            if isinstance(engine, AsyncEngine):

                async def fetch_async(key: str) -> Any:
                    return await table.fetch_async(engine, key)

                async def fetch_all_async(limit: int) -> Any:
                    return await table.fetch_all_async(engine, limit)

                return TenantLookup(
                    fetch_async,
                    fetch_all=fetch_all_async,
                    is_active=table.is_active,
                    cache=cache,
                )

            def fetch(key: str) -> Any:
                return table.fetch_sync(engine, key)

            def fetch_all(limit: int) -> Any:
                return table.fetch_all_sync(engine, limit)

            return TenantLookup(fetch, fetch_all=fetch_all, is_active=table.is_active, cache=cache)
        return TenantLookup(lookup, cache=cache)


def _configure_tenant_engine(
    isolation: Isolation, tag_statements: bool, engine: Engine | AsyncEngine
) -> None:
    """What the kit needs of a tenant database's engine: the wall's gate, the statement tagger
    when the app tags statements, and the placeholder translated to the database's default
    schema."""
    install_guard(engine)
    if tag_statements:
        install_tagger(engine)
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    sync_engine.update_execution_options(schema_translate_map=isolation.shared.translate_map)


def _record(tenant: Any) -> Any:
    """``tenant`` if it is a tenant record (it has a key of its own), else ``None``."""
    return tenant if hasattr(tenant, "__tenant_key__") else None


def _connect_once(engine: Engine) -> None:
    with engine.connect():
        pass


def _refuse_unverified_beside_verified(resolvers: Sequence[Resolver]) -> None:
    """A verified token beside a header or a subdomain, with no membership rule, lets a
    request with no token at all name any tenant: the app means to authenticate its callers,
    and anyone can act in any tenant. Refused unless the app says so."""
    from .resolvers import HeaderResolver, JWTClaimResolver, SubdomainResolver

    verified = [r for r in resolvers if isinstance(r, JWTClaimResolver)]
    unverified = [r for r in resolvers if isinstance(r, HeaderResolver | SubdomainResolver)]
    if verified and unverified:
        names = ", ".join(repr(r.source) for r in unverified)
        raise TenancyMisuse(
            f"the tenant may come from {names}, which nobody verifies, beside a verified "
            "token, and no membership= rule checks that the caller may act in it: a request "
            "without a token could name any tenant. Give membership= (a predicate on the "
            "TenantContext), or pass trust_unverified_sources=True if every caller may act in "
            "every tenant it names."
        )


async def call_predicate(predicate: Predicate, context: TenantContext) -> bool:
    """Ask a sync (in a worker thread) or async predicate about ``context``."""
    if inspect.iscoroutinefunction(predicate):
        return bool(await predicate(context))
    result = await anyio.to_thread.run_sync(predicate, context)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)
