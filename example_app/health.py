"""The readiness probe: does the database answer, within a bound of its own?

``GET /healthz`` (liveness) never touches the database. ``GET /readyz`` asks it for
``SELECT 1`` and answers ``503`` once :data:`READY_TIMEOUT` seconds have passed, whatever
the probe waits for meanwhile (a free pooled connection, a thread, the server), so a load
balancer learns in seconds that this instance should get no traffic.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["READY_TIMEOUT", "database_answers"]

READY_TIMEOUT = 2.0
"""Seconds ``GET /readyz`` waits for the database before it answers 503."""


def _ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


async def database_answers(engine: Engine) -> bool:
    """Whether ``engine``'s database answers ``SELECT 1`` within :data:`READY_TIMEOUT` seconds.

    On time out the probe's thread is left to finish on its own (the engine's own timeouts
    bound it); the answer does not wait for it.
    """
    with anyio.move_on_after(READY_TIMEOUT):
        return await anyio.to_thread.run_sync(_ping, engine, abandon_on_cancel=True)
    return False
