"""The engines of tenants in databases of their own: a bounded cache, least recently used out.

Each engine holds a pool; ten thousand tenants must not hold ten thousand pools. The cache keeps
``max_engines`` of them, each with a small pool, and disposes of the one least recently used
when a new one is needed: its idle connections close at once, and a connection still in use
closes when its session gives it back.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["TENANT_DATABASE_ENGINES", "EngineCache"]

AnyEngine = Engine | AsyncEngine

TENANT_DATABASE_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
"""The (sync) engines of tenant databases made by every cache: the wall refuses to send a
tenant's placed tables through one that is not its own."""


class EngineCache:
    """At most ``max_engines`` engines, one per tenant database URL, each with a pool of
    ``pool_size`` connections (and ``max_overflow`` more for bursts).

    ``engine_options`` go to ``create_engine`` / ``create_async_engine`` as given (a
    ``poolclass`` there, ``NullPool`` behind PgBouncer say, replaces the sized pool);
    ``on_engine(engine)`` runs on each new engine (events, a SQLite pragma). Thread-safe: sync
    routes run in worker threads.
    """

    def __init__(
        self,
        *,
        max_engines: int = 32,
        pool_size: int = 2,
        max_overflow: int = 2,
        engine_options: Mapping[str, Any] | None = None,
        on_engine: Callable[[AnyEngine], None] | None = None,
    ) -> None:
        if max_engines < 1:
            raise ValueError("max_engines must be at least 1")
        self.max_engines = max_engines
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.engine_options = dict(engine_options or {})
        self.on_engine = on_engine
        self._engines: OrderedDict[tuple[URL, bool], AnyEngine] = OrderedDict()
        self._lock = threading.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._engines)

    def get(self, url: URL, *, is_async: bool, configure: Callable[[AnyEngine], None]) -> AnyEngine:
        """The engine of ``url`` (made, configured by the kit then ``on_engine``, on first
        use), now the most recently used; the least recently used one goes past the bound."""
        key = (url, is_async)
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
            engine = self._create(url, is_async)
            configure(engine)
            if self.on_engine is not None:
                self.on_engine(engine)
            self._engines[key] = engine
            evicted = (
                self._engines.popitem(last=False)[1]
                if len(self._engines) > self.max_engines
                else None
            )
        if evicted is not None:
            self._dispose(evicted)
        return engine

    def forget(self, url: URL) -> None:
        """Dispose of the engines of ``url`` (its database is gone, or moved)."""
        for engine in self._pop(url):
            self._dispose(engine)

    async def aforget(self, url: URL) -> None:
        """:meth:`forget`, waiting for async engines to close their connections."""
        for engine in self._pop(url):
            if isinstance(engine, AsyncEngine):
                await engine.dispose()
            else:
                engine.dispose()

    def _pop(self, url: URL) -> list[AnyEngine]:
        with self._lock:
            return [self._engines.pop(key) for key in list(self._engines) if key[0] == url]

    def dispose_all(self) -> None:
        """Dispose of every engine (sync ones now, async ones as tasks of the running loop)."""
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            self._dispose(engine)

    async def aclose(self) -> None:
        """Dispose of every engine and wait for the async ones to close."""
        self.dispose_all()
        if self._closing:
            await asyncio.gather(*self._closing)

    def _create(self, url: URL, is_async: bool) -> AnyEngine:
        options: dict[str, Any] = {"pool_pre_ping": True}
        if url.get_backend_name() != "sqlite" and "poolclass" not in self.engine_options:
            options.update(pool_size=self.pool_size, max_overflow=self.max_overflow)
        options.update(self.engine_options)
        if is_async:
            made = create_async_engine(url, **options)
            TENANT_DATABASE_ENGINES.add(made.sync_engine)
            return made
        engine = create_engine(url, **options)
        TENANT_DATABASE_ENGINES.add(engine)
        return engine

    def _dispose(self, engine: AnyEngine) -> None:
        if isinstance(engine, Engine):
            engine.dispose()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: let go of the pool, unclosed
            engine.sync_engine.dispose(close=False)
            return
        task = loop.create_task(engine.dispose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
