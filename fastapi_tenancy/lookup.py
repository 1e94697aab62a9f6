"""The optional "key to tenant" step: turn a resolved key into a tenant record, cached.

A steady stream of requests for the same tenants costs no lookup query per request: answers
(and misses) are kept in a bounded in-process cache for a time to live. With
``LookupCache(preload=True)`` every tenant is loaded in one query as the app starts and reloaded
in the background, so that no known tenant costs a query on a request, however many tenants
there are. Any failure of the underlying lookup fails closed with :class:`TenancyUnavailable`.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Session, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .exceptions import (
    TenancyError,
    TenancyMisuse,
    TenancyUnavailable,
    TenantInactive,
    TenantNotFound,
)

__all__ = ["LookupCache", "TenantLookup", "TenantTableLookup"]

logger = logging.getLogger("fastapi_tenancy.lookup")

RecordT = TypeVar("RecordT")
Fetch = Callable[[Any], Any]
FetchAll = Callable[[int], "Iterable[tuple[Any, Any]] | Awaitable[Iterable[tuple[Any, Any]]]"]


@dataclass(frozen=True, slots=True)
class LookupCache:
    """Bounds of the lookup cache: at most ``maxsize`` tenants and ``max_misses`` unknown keys,
    each kept ``ttl`` seconds, the least recently used evicted first.

    Misses are cached too, so a repeated unknown key cannot hammer the database, but apart and
    in a bound of their own: a flood of random keys never evicts a tenant that exists, and
    only tenants that exist take the large bound, so the memory it can take is that of the
    app's active tenants (see docs/resolvers.md for the cost per entry). ``ttl=0`` turns
    caching off; call :meth:`TenantLookup.invalidate` after creating or changing a tenant.

    ``preload=True`` loads every tenant (the first ``maxsize`` by key) in one query as the app
    starts, and again every ``ttl / 2`` seconds in the background, so that a known tenant never
    costs a query on a request and no record is older than ``ttl``. It needs a lookup that can
    list its tenants (a :class:`TenantTableLookup`, or ``TenantLookup(fetch_all=...)``) and an
    app whose lifespan runs (every ASGI server runs it).
    """

    maxsize: int = 100_000
    ttl: float = 60.0
    max_misses: int = 1024
    preload: bool = False

    def __post_init__(self) -> None:
        if self.maxsize < 0:
            raise ValueError(f"maxsize must be 0 or more, not {self.maxsize}")
        if self.max_misses < 0:
            raise ValueError(f"max_misses must be 0 or more, not {self.max_misses}")
        if self.preload and (self.ttl <= 0 or self.maxsize == 0):
            raise ValueError("preload needs a cache: a ttl above 0 and a maxsize above 0")


class TenantTableLookup(Generic[RecordT]):
    """Look tenants up in a SQLModel table by a key column, with an optional active flag.

    ``TenantTableLookup(Tenant, key="slug", active="active")``; the engine is the Tenancy's.
    Records are detached copies shared between requests: treat them as read-only.
    """

    def __init__(self, model: type[RecordT], *, key: str = "slug", active: str | None = None):
        self.model = model
        self.key = key
        self.active = active

    def is_active(self, record: RecordT) -> bool:
        """Whether the record's active flag (if any) is set."""
        return self.active is None or bool(getattr(record, self.active))

    def fetch_sync(self, engine: Engine, key: Any) -> RecordT | None:
        """Read the record for ``key`` with a plain (unscoped) session."""
        with Session(engine, expire_on_commit=False) as session:
            statement = select(self.model).where(getattr(self.model, self.key) == key)
            return session.exec(statement).first()

    async def fetch_async(self, engine: AsyncEngine, key: Any) -> RecordT | None:
        """Async twin of :meth:`fetch_sync`."""
        async with AsyncSession(engine, expire_on_commit=False) as session:
            statement = select(self.model).where(getattr(self.model, self.key) == key)
            result = await session.exec(statement)
            return result.first()

    def fetch_all_sync(self, engine: Engine, limit: int) -> list[tuple[Any, RecordT]]:
        """Every record, active or not, with its key: the first ``limit`` by key, one query."""
        with Session(engine, expire_on_commit=False) as session:
            records = session.exec(self._all(limit)).all()
        return [(getattr(record, self.key), record) for record in records]

    async def fetch_all_async(self, engine: AsyncEngine, limit: int) -> list[tuple[Any, RecordT]]:
        """Async twin of :meth:`fetch_all_sync`."""
        async with AsyncSession(engine, expire_on_commit=False) as session:
            records = (await session.exec(self._all(limit))).all()
        return [(getattr(record, self.key), record) for record in records]

    def _all(self, limit: int) -> Any:
        return select(self.model).order_by(getattr(self.model, self.key)).limit(limit)


class TenantLookup:
    """A cached lookup from tenant key to record, failing closed.

    ``fetch`` takes the key and returns the record or ``None`` (sync functions run in the
    thread pool; async ones are awaited). ``is_active`` tells whether a record may be used.
    ``fetch_all`` (optional, sync or async) takes a limit and returns up to that many
    ``(key, record)`` pairs, inactive tenants included: the bulk load of
    ``LookupCache(preload=True)``.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        fetch_all: FetchAll | None = None,
        is_active: Callable[[Any], bool] | None = None,
        cache: LookupCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._fetch_all = fetch_all
        self._fetch_is_async = _is_async(fetch)
        self._fetch_all_is_async = fetch_all is not None and _is_async(fetch_all)
        self._is_active = is_active or _active_attribute
        self._cache = cache or LookupCache()
        if self._cache.preload and fetch_all is None:
            raise TenancyMisuse(
                "LookupCache(preload=True) needs a lookup that lists its tenants: a "
                "TenantTableLookup, or TenantLookup(fetch, fetch_all=...)"
            )
        self._clock = clock
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._misses: OrderedDict[Any, float] = OrderedDict()
        self._pending: dict[str, _Pending] = {}
        self._reloads: list[_Reload] = []

    @property
    def preloads(self) -> bool:
        """Whether the app's lifespan loads every tenant at startup and keeps them fresh."""
        return self._cache.preload

    async def __call__(self, key: Any) -> Any:
        """The record for ``key``; raises not found (404), inactive (403) or unavailable (503)."""
        record = await self._cached(key)
        if record is None:
            raise TenantNotFound()
        if not self._is_active(record):
            raise TenantInactive()
        return record

    async def find(self, key: Any) -> Any:
        """The record for ``key`` (active or not), or ``None``: cached like :meth:`__call__`."""
        return await self._cached(key)

    def is_active(self, record: Any) -> bool:
        """Whether ``record`` may be used (the lookup's ``is_active``)."""
        return bool(self._is_active(record))

    def invalidate(self, key: Any = None) -> None:
        """Forget one key (or every key) so the next request looks it up again.

        A lookup of that key already in flight, by key or in bulk, is not cached when it ends:
        it may have read the tenant before the change.
        """
        # Copies: tenant_changed_sync() may call this from a worker thread while the event
        # loop adds or removes in-flight lookups.
        if key is None:
            self._entries.clear()
            self._misses.clear()
            for pending in list(self._pending.values()):
                pending.invalidated = True
            for reload in list(self._reloads):
                reload.changed = None
        else:
            self._entries.pop(key, None)
            self._misses.pop(key, None)
            in_flight = self._pending.get(key)
            if in_flight is not None:
                in_flight.invalidated = True
            for reload in list(self._reloads):
                if reload.changed is not None:
                    reload.changed.add(key)

    async def reload(self) -> int:
        """Load every tenant (the first ``maxsize``) into the cache in one query, each kept
        ``ttl`` seconds; returns how many. Fails closed with :class:`TenancyUnavailable`.

        Keys invalidated while it runs are left out (their next request looks them up), and a
        full :meth:`invalidate` meanwhile discards the whole load.
        """
        if self._fetch_all is None:
            raise TenancyMisuse("this lookup cannot list its tenants: give it fetch_all")
        reload = _Reload()
        self._reloads.append(reload)
        try:
            pairs = list(
                await _call(self._fetch_all, self._cache.maxsize, self._fetch_all_is_async)
            )
        finally:
            self._reloads.remove(reload)
        changed = reload.changed
        if changed is None:
            return 0
        until = self._clock() + self._cache.ttl
        kept = 0
        for key, record in pairs:
            if key in changed:
                continue
            self._misses.pop(key, None)
            _put(self._entries, key, (until, record), self._cache.maxsize)
            kept += 1
        return kept

    async def keep_fresh(self) -> None:
        """Reload every tenant every ``ttl / 2`` seconds until cancelled (the lifespan runs it).

        A failed reload is logged on ``fastapi_tenancy.lookup`` and tried again at the next
        interval; meanwhile the entries expire at their ``ttl`` and requests look their tenant
        up one by one, failing closed as without preloading.
        """
        while True:
            await anyio.sleep(self._cache.ttl / 2)
            await self.reload_logged()

    async def reload_logged(self) -> None:
        """:meth:`reload`, logging a failure instead of raising it: the background task that
        runs it must outlive any failure, and the requests fall back to lookups by key."""
        try:
            count = await self.reload()
        except Exception as error:
            logger.warning(
                "the tenant lookup could not load its tenants (%s): requests look their "
                "tenant up one by one until it can",
                error.__cause__ or error,
                exc_info=not isinstance(error, TenancyError),
            )
        else:
            if count >= self._cache.maxsize:
                logger.warning(
                    "the tenant lookup loaded its first %d tenants (LookupCache.maxsize): the "
                    "others are looked up one by one",
                    count,
                )

    async def _cached(self, key: Any) -> Any:
        while True:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > self._clock():
                self._entries.move_to_end(key)
                return entry[1]
            missed_until = self._misses.get(key)
            if missed_until is not None and missed_until > self._clock():
                self._misses.move_to_end(key)
                return None
            pending = self._pending.get(key)
            if pending is None:
                break
            # Another request is looking this key up: share its answer, not another query.
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            if pending.loaded:
                return pending.record
        pending = self._pending[key] = _Pending()
        try:
            pending.record = await self._load(key)
            pending.loaded = True
        except TenancyError as error:
            pending.error = error
            raise
        finally:
            del self._pending[key]
            pending.done.set()
        if not pending.invalidated:
            self._keep(key, pending.record)
        return pending.record

    def _keep(self, key: Any, record: Any) -> None:
        cache = self._cache
        if cache.ttl <= 0:
            return
        until = self._clock() + cache.ttl
        if record is None:
            self._entries.pop(key, None)
            _put(self._misses, key, until, cache.max_misses)
        else:
            self._misses.pop(key, None)
            _put(self._entries, key, (until, record), cache.maxsize)

    async def _load(self, key: Any) -> Any:
        return await _call(self._fetch, key, self._fetch_is_async)


async def _call(function: Callable[[Any], Any], argument: Any, is_async: bool) -> Any:
    """``function(argument)``: awaited if async, else in the thread pool; fails closed."""
    try:
        if is_async:
            return await function(argument)
        result = await anyio.to_thread.run_sync(function, argument)
        if isinstance(result, Awaitable):
            return await result
        return result
    except TenancyError:
        raise
    except Exception as error:
        raise TenancyUnavailable() from error


def _put(entries: OrderedDict[Any, Any], key: Any, value: Any, bound: int) -> None:
    """Keep ``value`` as the most recently used entry, evicting the least recently used."""
    if bound <= 0:
        return
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > bound:
        entries.popitem(last=False)


class _Pending:
    """One lookup in flight, awaited by every request for the same key."""

    __slots__ = ("done", "error", "invalidated", "loaded", "record")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: TenancyError | None = None
        self.loaded = False
        self.invalidated = False
        self.record: Any = None


class _Reload:
    """One bulk load in flight, and the keys invalidated meanwhile (``None``: every key)."""

    __slots__ = ("changed",)

    def __init__(self) -> None:
        self.changed: set[Any] | None = set()


def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004
    )


def _active_attribute(record: Any) -> bool:
    if isinstance(record, dict):
        return bool(record.get("active", True))
    return bool(getattr(record, "active", True))
