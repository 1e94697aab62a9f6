"""A bound on the sessions a request path holds at once, per engine: no overload deadlock.

A sync route runs in a worker thread and keeps its connection until its session closes, after
the response is sent; FastAPI serializes that response in a worker thread too. With more
requests in flight than threads and connections together, every thread can wait for a
connection held by a request that waits for a thread: the app stops until the pool's timeout
fails them all. The kit's session dependencies therefore take a slot before they make a
session, and the slots are no more than the pool's connections. A request waits for its slot
in the event loop, holding no thread; one that gets none within ``wait`` seconds (the pool's
``pool_timeout`` unless given) answers ``503 database_busy`` with ``Retry-After``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import anyio
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from .exceptions import DatabaseBusy

__all__ = ["DEFAULT_WAIT", "SessionLimiter", "SessionLimits", "pool_capacity"]


DEFAULT_WAIT = 30.0
"""Seconds a request waits for a slot when neither the limits nor the pool say: SQLAlchemy's
own default ``pool_timeout``."""


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """How many request sessions may hold an engine at once, and how long one waits for a slot.

    ``max_sessions=None`` takes the pool's capacity (``pool_size + max_overflow``); a pool with
    no fixed capacity (``NullPool``, ``StaticPool``, an unbounded overflow) is then unbounded.
    ``wait`` is the seconds a request waits for a slot before it answers ``503 database_busy``;
    ``None`` takes the pool's ``pool_timeout``, as a request without the bound would have
    waited for a connection. Shorter sheds load sooner.

    Usage::

        Tenancy(engine, resolvers=[...], session_limits=SessionLimits(wait=2.0))
    """

    max_sessions: int | None = None
    wait: float | None = None

    def __post_init__(self) -> None:
        if self.max_sessions is not None and self.max_sessions < 1:
            raise ValueError(f"max_sessions must be 1 or more, not {self.max_sessions}")
        if self.wait is not None and not (self.wait >= 0 and math.isfinite(self.wait)):
            raise ValueError(f"wait must be a finite number of seconds >= 0, not {self.wait}")


def _queue_pool(engine: Engine | AsyncEngine) -> QueuePool | None:
    pool = engine.sync_engine.pool if isinstance(engine, AsyncEngine) else engine.pool
    return pool if isinstance(pool, QueuePool) else None


def pool_capacity(engine: Engine | AsyncEngine) -> int | None:
    """The connections ``engine``'s pool can hand out at once, or ``None`` when unbounded."""
    pool = _queue_pool(engine)
    if pool is None:
        return None
    overflow: int = getattr(pool, "_max_overflow", 0)  # no public accessor; -1 is unbounded
    return None if overflow < 0 else pool.size() + overflow


class SessionLimiter:
    """The slots of one engine, made by the :class:`~fastapi_tenancy.Tenancy` (``total=None``:
    unbounded). Its anyio limiters are made in the event loop, on first use."""

    __slots__ = ("_closers", "_slots", "total", "wait")

    def __init__(self, total: int | None, wait: float) -> None:
        self.total = total
        self.wait = wait
        self._slots: anyio.CapacityLimiter | None = None
        self._closers: anyio.CapacityLimiter | None = None

    @classmethod
    def for_engine(
        cls, engine: Engine | AsyncEngine, limits: SessionLimits | None
    ) -> SessionLimiter:
        """The limiter ``limits`` give ``engine``; unbounded for ``limits=None``."""
        if limits is None:
            return cls(None, 0.0)
        total = limits.max_sessions if limits.max_sessions is not None else pool_capacity(engine)
        wait = limits.wait
        if wait is None:
            pool = _queue_pool(engine)
            wait = DEFAULT_WAIT if pool is None else pool.timeout()
        return cls(total, wait)

    async def acquire(self, borrower: object) -> None:
        """Take a slot for ``borrower``; raise :class:`DatabaseBusy` after ``wait`` seconds."""
        if self.total is None:
            return
        slots = self._slots
        if slots is None:
            slots = self._slots = anyio.CapacityLimiter(self.total)
        try:
            slots.acquire_on_behalf_of_nowait(borrower)
        except anyio.WouldBlock:
            with anyio.move_on_after(self.wait):
                await slots.acquire_on_behalf_of(borrower)
                return
            raise DatabaseBusy() from None

    def release(self, borrower: object) -> None:
        """Give ``borrower``'s slot back."""
        if self._slots is not None:
            self._slots.release_on_behalf_of(borrower)

    @property
    def closers(self) -> anyio.CapacityLimiter | None:
        """Threads for closing sessions, one per slot, apart from the default thread pool, so
        a closing session never waits for a thread held by a request that waits for a slot.
        ``None`` (the default threads) when unbounded: then no request waits for a slot."""
        if self.total is None:
            return None
        closers = self._closers
        if closers is None:
            closers = self._closers = anyio.CapacityLimiter(self.total)
        return closers
