"""The scale mode of ``overhead.py count``: many tenants, with and without a tenant lookup.

Imported by ``overhead.py`` (never run on its own). Five setups serve the same route:

    bare-header   the bare app: tenant from the header, no check that it exists
    bare-lookup   the bare app checking its tenant by hand: one SELECT on the tenants table
                  per request (in the request's session), 404 unknown, 403 inactive
    kit-header    the kit without a lookup
    kit-lookup    the kit with TenantTableLookup and the default LookupCache (filled key by key)
    kit-preload   the same with LookupCache(preload=True): every tenant loaded at startup

The table holds ``tenants x rows`` projects, interleaved by tenant, and a tenants table of
``tenants`` rows; requests pick their tenant uniformly or Zipf-skewed (s = 1) over all of them,
from a fixed seed, so that every setup gets the same sequence.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any

LOOKUP_SETUPS = ("bare-lookup", "kit-lookup", "kit-preload")
SCALE_SETUPS = ("bare-header", "bare-lookup", "kit-header", "kit-lookup", "kit-preload")
SIZES = (10, 1_000, 10_000, 100_000)
DISTRIBUTIONS = ("uniform", "zipf")
TENANT_TABLE = "bench_overhead_tenant"
ZIPF_S = 1.0
SEED = 20261204
PRELOAD_TTL = 3600.0  # no background reload during a measurement; its cost is shown apart


@functools.cache
def tenant_model() -> type[Any]:
    """The tenants table both lookup setups read: slug, name, active."""
    from sqlmodel import Field, SQLModel

    class Tenant(SQLModel, table=True):
        __tablename__ = TENANT_TABLE

        id: int | None = Field(default=None, primary_key=True)
        slug: str = Field(unique=True, max_length=63)
        name: str = Field(max_length=100)
        active: bool = True

    return Tenant


def seed(
    url: str, count: int, rows: int, project: type[Any], make_engine: Callable[[str], Any]
) -> None:
    """``count`` tenants named ``tenant-i`` and ``rows`` projects each, row ``j`` of tenant
    ``k`` with id ``j * count + k + 1``; inserted in batches (100,000 tenants in seconds)."""
    from sqlalchemy import insert
    from sqlmodel import SQLModel

    tenant = tenant_model()
    engine = make_engine(url)
    tables = [tenant.__table__, project.__table__]
    SQLModel.metadata.drop_all(engine, tables=tables)
    SQLModel.metadata.create_all(engine, tables=tables)
    with engine.begin() as conn:
        for batch in batches(count):
            conn.execute(
                insert(tenant.__table__),
                [
                    {"id": k + 1, "slug": f"tenant-{k}", "name": f"Tenant {k}", "active": True}
                    for k in batch
                ],
            )
        for batch in batches(count * rows):
            conn.execute(
                insert(project.__table__),
                [
                    {
                        "id": i + 1,
                        "tenant_id": f"tenant-{i % count}",
                        "name": f"project {i // count} of tenant-{i % count}",
                        "description": f"Row {i} of the benchmark table.",
                    }
                    for i in batch
                ],
            )
    engine.dispose()


def batches(total: int, size: int = 10_000) -> list[range]:
    return [range(start, min(start + size, total)) for start in range(0, total, size)]


def drop(url: str, project: type[Any], make_engine: Callable[[str], Any]) -> None:
    from sqlmodel import SQLModel

    engine = make_engine(url)
    SQLModel.metadata.drop_all(engine, tables=[tenant_model().__table__, project.__table__])
    engine.dispose()


def request_sequence(distribution: str, count: int, warmup: int, requests: int) -> list[int]:
    """The tenant index of each request. The warm-up cycles through the first tenants
    whatever the distribution (so that a run of 0 measured requests serves every distribution);
    the measured requests go on cycling (``cycle``, the default mode), or pick their tenant
    ``uniform`` or ``zipf`` (weight 1 / (k + 1) ** s), from a fixed seed."""
    warm = [i % count for i in range(warmup)]
    if distribution == "cycle":
        return warm + [i % count for i in range(warmup, warmup + requests)]
    rng = random.Random(SEED)  # noqa: S311 (a reproducible workload, not a secret)
    if distribution == "uniform":
        return warm + [rng.randrange(count) for _ in range(requests)]
    cumulative = list(itertools.accumulate(1 / (k + 1) ** ZIPF_S for k in range(count)))
    total = cumulative[-1]
    return warm + [
        min(bisect.bisect_left(cumulative, rng.random() * total), count - 1)
        for _ in range(requests)
    ]


def distinct_share(distribution: str, count: int, warmup: int, requests: int) -> float:
    """The share of measured requests whose tenant no earlier request (warm-up included) had."""
    sequence = request_sequence(distribution, count, warmup, requests)
    seen = set(sequence[:warmup])
    new = 0
    for k in sequence[warmup:]:
        new += k not in seen
        seen.add(k)
    return new / max(requests, 1)


def print_report(
    sizes: Sequence[int],
    distributions: Sequence[str],
    setups: Sequence[str],
    per: dict[tuple[int, str, str], float],
    native: dict[tuple[int, str, str], dict[str, Any]],
    warmup: int,
    requests: int,
) -> None:
    """One row per size and spread: instructions per request of each setup, the ratios that
    matter, resident memory after the run, and the preloaded lookup's reload time."""
    print()
    print("instr/req: valgrind, in-process ASGI; ratios against bare-header of the same row;")
    print("new: share of measured requests whose tenant had not been asked before (cold for a")
    print("key-by-key cache); RSS: resident MiB of a native run after its requests; reload:")
    print("native ms for kit-preload to load every tenant again (once per ttl/2 per worker)")
    head = (
        f"{'tenants':>8} {'spread':<8} {'new':>5} "
        + " ".join(f"{s:>12}" for s in setups)
        + f" {'kit/bare':>9} {'lookup':>8} {'preload':>8} {'pre/b-lk':>8}"
    )
    print(head)
    print("-" * len(head))
    for size in sizes:
        for spread in distributions:
            row = {s: per[(size, spread, s)] for s in setups}
            ratios = [
                _ratio(row, top, bottom)
                for top, bottom in (
                    ("kit-header", "bare-header"),
                    ("kit-lookup", "bare-header"),
                    ("kit-preload", "bare-header"),
                    ("kit-preload", "bare-lookup"),
                )
            ]
            new = distinct_share(spread, size, warmup, requests)
            print(
                f"{size:>8} {spread:<8} {new:>5.0%} "
                + " ".join(f"{row[s] / 1e6:>11.3f}M" for s in setups)
                + f" {ratios[0]:>9} {ratios[1]:>8} {ratios[2]:>8} {ratios[3]:>8}"
            )
    print()
    print("kit/bare = kit-header / bare-header; lookup = kit-lookup / bare-header; preload =")
    print("kit-preload / bare-header; pre/b-lk = kit-preload / bare-lookup")
    print()
    head = (
        f"{'tenants':>8} {'spread':<8} "
        + " ".join(f"{s:>12}" for s in setups)
        + f" {'reload ms':>10}"
    )
    print("resident memory, MiB (native run of 1000 requests)")
    print(head)
    print("-" * len(head))
    for size in sizes:
        for spread in distributions:
            cells = " ".join(
                f"{native[(size, spread, s)]['rss_kib'] / 1024:>12.1f}" for s in setups
            )
            preload = native.get((size, spread, "kit-preload"), {})
            reload = f"{preload['reload_ms']:.0f}" if "reload_ms" in preload else "-"
            print(f"{size:>8} {spread:<8} {cells} {reload:>10}")


def _ratio(row: dict[str, float], top: str, bottom: str) -> str:
    if top not in row or not row.get(bottom):
        return "-"
    return f"{row[top] / row[bottom]:.3f}x"
