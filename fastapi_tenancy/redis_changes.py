"""Tenant changes over Redis pub/sub: every worker subscribed to one channel.

Needs the ``redis`` extra (``pip install "fastapi-tenancy-kit[redis]"``). Redis pub/sub keeps no
message for a subscriber that is away; the listener drops every cached tenant when it
subscribes again (see :func:`fastapi_tenancy.changes.keep_listening`).
"""

from __future__ import annotations

from collections.abc import Callable

import redis
import redis.asyncio

from .changes import OnChange

__all__ = ["RedisChanges"]

DEFAULT_CHANNEL = "fastapi_tenancy.tenants"


class RedisChanges:
    """``Tenancy(..., tenant_changes=RedisChanges("redis://localhost:6379/0"))``.

    ``connect_timeout`` bounds connecting and publishing, so that a Redis that is down makes
    :meth:`publish` fail fast instead of hanging the caller.
    """

    def __init__(
        self, url: str, *, channel: str = DEFAULT_CHANNEL, connect_timeout: float = 5.0
    ) -> None:
        self.url = url
        self.channel = channel
        self.connect_timeout = connect_timeout

    async def publish(self, key: str) -> None:
        """Tell every subscribed worker that tenant ``key`` changed."""
        client = redis.asyncio.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.connect_timeout,
        )
        try:
            await client.publish(self.channel, key)
        finally:
            await client.aclose()

    def publish_sync(self, key: str) -> None:
        """:meth:`publish` for sync code: scripts, Celery tasks, a CLI."""
        client = redis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.connect_timeout,
        )
        try:
            client.publish(self.channel, key)
        finally:
            client.close()

    async def listen(self, on_change: OnChange, on_subscribed: Callable[[], None]) -> None:
        """Subscribe and hand every message to ``on_change``; raises when Redis goes away."""
        client = redis.asyncio.Redis.from_url(
            self.url, socket_connect_timeout=self.connect_timeout, socket_keepalive=True
        )
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        on_subscribed()
                    elif message["type"] == "message":
                        data = message["data"]
                        on_change(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            await client.aclose()

    def __repr__(self) -> str:
        return f"RedisChanges(channel={self.channel!r})"
