"""Which statements of a tenant session would reach more than one tenant's shard.

Citus (distributed PostgreSQL, tenant tables distributed by their tenant column) sends a
statement to one shard only when it names one tenant on every distributed table it reads. The
wall's proof already knows, per compiled statement, how each tenant table it reads is kept to
the tenant: by ``<tenant column> = :param`` (whose value the gate checks is the session's
tenant), or otherwise, by keys proven to be the tenant's rows (the unit of work's UPDATE and
DELETE of a model without ``__tenant_first_key__``), by the tenant's family (``IN (...)``), or
through an association table's keys. Those others are the statements that fan out.

:func:`record_fan_out` lists them while a block runs, so a test suite on plain PostgreSQL or
SQLite can fail on a change that would fan out, without a Citus cluster::

    with record_fan_out() as fanned:
        client.patch(f"/projects/{project_id}", json={"name": "x"}, headers=alice)
    assert not fanned, fanned
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.sql.compiler import SQLCompiler

from .proof import Proof

__all__ = ["OPEN_RECORDS", "FannedOut", "fanning_tables", "observe", "record_fan_out"]


@dataclass(frozen=True, slots=True)
class FannedOut:
    """A statement of a tenant session that does not name its tenant on every tenant table
    it reads: the session's tenant, the SQL, and those tables."""

    tenant: Any
    sql: str
    tables: tuple[str, ...]


def fanning_tables(proof: Proof) -> tuple[str, ...]:
    """The tenant tables a proven statement reads without ``<tenant column> = :param``."""
    return tuple(read.table.name for read in proof.reads if not read.tenant_params)


OPEN_RECORDS: list[list[FannedOut]] = []
"""The lists of the open :func:`record_fan_out` blocks; the gate observes a statement only
while it is not empty."""


def observe(tenant: Any, compiled: SQLCompiler, proof: Proof) -> None:
    """Note ``compiled`` in every open :func:`record_fan_out` list if it fans out."""
    if tenant is None:
        return  # the global-access switch reads across tenants by design
    tables = fanning_tables(proof)
    if tables:
        for record in OPEN_RECORDS:
            record.append(FannedOut(tenant, compiled.string, tables))


@contextmanager
def record_fan_out() -> Iterator[list[FannedOut]]:
    """Collect, while the block runs, every statement a tenant session sends in this process
    that would reach more than one tenant's shard (see the module's docstring)."""
    record: list[FannedOut] = []
    OPEN_RECORDS.append(record)
    try:
        yield record
    finally:
        OPEN_RECORDS.remove(record)
