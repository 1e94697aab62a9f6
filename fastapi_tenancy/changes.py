"""Tell every worker that a tenant changed, so that its cached lookup is dropped at once.

Each worker process caches its tenant lookups (see :mod:`fastapi_tenancy.lookup`): a tenant
suspended through one worker keeps being served by the others until their entries expire. A
:class:`TenantChanges` channel carries "tenant ``key`` changed" to every worker, which forgets
that key. Two channels ship: :class:`~fastapi_tenancy.redis_changes.RedisChanges` (Redis
pub/sub, the ``redis`` extra) and :class:`~fastapi_tenancy.postgres.notify.PostgresChanges`
(PostgreSQL ``LISTEN``/``NOTIFY``, which can also be sent by a trigger or inside the
transaction that makes the change). Without a channel, the lookup's ``ttl`` bounds how long a
change takes to reach the other workers.

A listener that loses its connection reconnects with a growing delay, and once subscribed
again drops every cached tenant: a message sent while it was away cannot be missed for longer
than the outage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import anyio
from anyio.abc import TaskStatus

__all__ = ["EVERY_TENANT", "TenantChanges", "keep_listening"]

logger = logging.getLogger("fastapi_tenancy.changes")

EVERY_TENANT = "*"
"""The message that means "every tenant changed" (never a valid tenant key)."""

OnChange = Callable[[str], None]


@runtime_checkable
class TenantChanges(Protocol):
    """A channel between the workers of an app: one publishes a changed key, all hear it."""

    async def publish(self, key: str) -> None:
        """Tell every listener that tenant ``key`` (or :data:`EVERY_TENANT`) changed."""
        ...

    def publish_sync(self, key: str) -> None:
        """:meth:`publish` for sync code."""
        ...

    async def listen(self, on_change: OnChange, on_subscribed: Callable[[], None]) -> None:
        """Connect, subscribe, call ``on_subscribed()``, then ``on_change(key)`` for every
        message until cancelled; raise when the connection fails or is lost."""
        ...


async def keep_listening(
    changes: TenantChanges,
    on_change: OnChange,
    on_subscribed: Callable[[], None],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    first_delay: float = 0.5,
    max_delay: float = 30.0,
) -> None:
    """Listen on ``changes`` until cancelled, reconnecting after a failure with a delay that
    doubles up to ``max_delay``.

    ``on_subscribed`` runs at every subscription: the caller drops what it may have missed.
    ``task_status.started()`` is called at the first subscription, or at the first failure
    (logged on ``fastapi_tenancy.changes``): the app starts either way, and relies on the
    lookup's ``ttl`` until a reconnection succeeds.
    """
    delay = first_delay
    started = False

    def subscribed() -> None:
        nonlocal delay, started
        delay = first_delay
        on_subscribed()
        if not started:
            started = True
            task_status.started()

    while True:
        reason: object
        try:
            await changes.listen(on_change, subscribed)
            reason = "the channel closed"
        except Exception as error:
            reason = error
        logger.warning(
            "the tenant change channel is unreachable (%s): trying again in %.1f s; meanwhile "
            "cached tenants of other workers' changes expire at the lookup's ttl",
            reason,
            delay,
        )
        if not started:
            started = True
            task_status.started()
        await anyio.sleep(delay)
        delay = min(delay * 2, max_delay)
