"""The Redis server of the suites that need one: found, or skipped with one line."""

from __future__ import annotations

import os

import pytest
import redis

REDIS_ENV = "TENANCY_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def usable_redis_url(suite: str) -> str:
    """Redis's URL, or skip the calling module with one line (fail it under CI=true)."""
    raw = os.environ.get(REDIS_ENV, "").strip() or DEFAULT_REDIS_URL
    if raw.lower() == "off":
        pytest.skip(f"{suite} skipped: disabled by {REDIS_ENV}=off", allow_module_level=True)
    client = redis.Redis.from_url(raw, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(
                f"Redis required (CI=true) but {raw} is not usable: {exc} (set {REDIS_ENV})",
                pytrace=False,
            )
        pytest.skip(
            f"{suite} skipped: no Redis at {raw} ({exc}); set {REDIS_ENV} or start one "
            "(CI=true makes this a failure)",
            allow_module_level=True,
        )
    finally:
        client.close()
    return raw
