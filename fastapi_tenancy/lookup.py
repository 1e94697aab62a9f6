"""The optional "key to tenant" step: turn a resolved key into a tenant record, cached.

A steady stream of requests for the same tenants costs no lookup query per request: answers
(and misses) are kept in a bounded in-process cache for a time to live. Any failure of the
underlying lookup fails closed with :class:`TenancyUnavailable`.
"""

from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Session, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .exceptions import TenancyError, TenancyUnavailable, TenantInactive, TenantNotFound

__all__ = ["LookupCache", "TenantLookup", "TenantTableLookup"]

RecordT = TypeVar("RecordT")
Fetch = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class LookupCache:
    """Bounds of the lookup cache: at most ``maxsize`` tenants and ``max_misses`` unknown keys,
    each kept ``ttl`` seconds, the least recently used evicted first.

    Misses are cached too, so a repeated unknown key cannot hammer the database, but apart and
    in a bound of their own: a flood of random keys never evicts a tenant that exists, and
    only tenants that exist take the large bound, so the memory it can take is that of the
    app's active tenants (see docs/resolvers.md for the cost per entry). ``ttl=0`` turns
    caching off; call :meth:`TenantLookup.invalidate` after creating or changing a tenant.
    """

    maxsize: int = 100_000
    ttl: float = 60.0
    max_misses: int = 1024

    def __post_init__(self) -> None:
        if self.maxsize < 0:
            raise ValueError(f"maxsize must be 0 or more, not {self.maxsize}")
        if self.max_misses < 0:
            raise ValueError(f"max_misses must be 0 or more, not {self.max_misses}")


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


class TenantLookup:
    """A cached lookup from tenant key to record, failing closed.

    ``fetch`` takes the key and returns the record or ``None`` (sync functions run in the
    thread pool; async ones are awaited). ``is_active`` tells whether a record may be used.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        is_active: Callable[[Any], bool] | None = None,
        cache: LookupCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._is_async = inspect.iscoroutinefunction(fetch) or inspect.iscoroutinefunction(
            getattr(fetch, "__call__", None)  # noqa: B004
        )
        self._is_active = is_active or _active_attribute
        self._cache = cache or LookupCache()
        self._clock = clock
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._misses: OrderedDict[Any, float] = OrderedDict()
        self._pending: dict[str, _Pending] = {}

    async def __call__(self, key: Any) -> Any:
        """The record for ``key``; raises not found (404), inactive (403) or unavailable (503)."""
        record = await self._cached(key)
        if record is None:
            raise TenantNotFound()
        if not self._is_active(record):
            raise TenantInactive()
        return record

    def invalidate(self, key: Any = None) -> None:
        """Forget one key (or every key) so the next request looks it up again."""
        if key is None:
            self._entries.clear()
            self._misses.clear()
        else:
            self._entries.pop(key, None)
            self._misses.pop(key, None)

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
        try:
            if self._is_async:
                return await self._fetch(key)
            result = await anyio.to_thread.run_sync(self._fetch, key)
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

    __slots__ = ("done", "error", "loaded", "record")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: TenancyError | None = None
        self.loaded = False
        self.record: Any = None


def _active_attribute(record: Any) -> bool:
    if isinstance(record, dict):
        return bool(record.get("active", True))
    return bool(getattr(record, "active", True))
