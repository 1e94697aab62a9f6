"""The tenant wall, proven per statement.

The scoping (:mod:`fastapi_tenancy.scoping`, :mod:`fastapi_tenancy.writes`) adds the tenant to
what a tenant session runs; the wall proves that it is there. Before any SQL of a tenant session
reaches the driver, the statement as compiled is checked (:mod:`.compiler`, :mod:`.proof`) and
its parameters are checked against the proof (:mod:`.guard`): the FROMs it reads
(:mod:`.reads`) and the keys it writes (:mod:`.values`). Whatever cannot be proven is
refused with :class:`~fastapi_tenancy.UnscopedStatement`. The proof is made once per compiled
statement and cached with it, so a request pays a dictionary look-up and a few comparisons.
"""

from .guard import (
    TENANT_PARAM,
    Guard,
    audit_refused_write,
    guard_connection,
    guard_of,
    install_guard,
)
from .routing import FannedOut, record_fan_out

__all__ = [
    "TENANT_PARAM",
    "FannedOut",
    "Guard",
    "audit_refused_write",
    "guard_connection",
    "guard_of",
    "install_guard",
    "record_fan_out",
]
