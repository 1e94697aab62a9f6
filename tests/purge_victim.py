"""A purge that dies half-way: run as a process, it purges suspended ``acme`` of the seeded
tables and, as its DELETE number ``N`` reaches the database, says ``deleting`` and waits to be
killed.

    python tests/purge_victim.py DATABASE_URL all-or-nothing|resumable N
"""

from __future__ import annotations

import sys
import time
from typing import Any

from purge_models import PurgeOrg
from sqlalchemy import create_engine, event

from fastapi_tenancy import Tenancy, TenantRegistry


def main(url: str, mode: str, stop_at: int) -> None:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"))
    deletes = 0

    def stop(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        nonlocal deletes
        if statement.lstrip().upper().startswith("DELETE"):
            deletes += 1
            if deletes == stop_at:
                print("deleting", flush=True)
                time.sleep(600)

    event.listen(engine, "after_cursor_execute", stop)
    tenancy = Tenancy(engine, resolvers=[], registry=TenantRegistry(PurgeOrg))
    tenancy.tenants.purge("acme", batch_size=5, resumable=mode == "resumable")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
