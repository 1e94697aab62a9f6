"""Memory the tenant lookup cache takes per tenant: run by hand, never by the test suite.

    python bench/lookup_memory.py                       # 1,000 and 10,000 tenants, ~2 min
    python bench/lookup_memory.py --tenants 100000      # ~8 min

For each size it fills a SQLite file with the example app's ``tenants`` table, looks every
tenant up once through ``TenantTableLookup`` (so the cache holds one detached SQLModel record
per tenant, as a server that has seen every tenant within the TTL does), and prints the memory
the cache holds (``tracemalloc``: every block allocated during the lookups and still alive) and
the growth of the process's resident set (``VmRSS``, Linux, on a pass without tracemalloc)
per 10,000 tenants. A flood of
unknown keys as large as the tenant count is then looked up, to show what misses add (at most
``LookupCache.max_misses`` entries).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import tempfile
import tracemalloc
from pathlib import Path

from sqlalchemy import Engine, create_engine, insert

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from example_app.models import Plan, Tenant, metadata  # noqa: E402
from fastapi_tenancy import LookupCache, TenantLookup, TenantNotFound  # noqa: E402
from fastapi_tenancy.lookup import TenantTableLookup  # noqa: E402


def rss_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def seed(engine: Engine, count: int) -> None:
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(Plan), [{"code": "free", "name": "Free"}])
        conn.execute(
            insert(Tenant),
            [
                {"slug": f"tenant-{i:06d}", "name": f"Tenant number {i}", "plan": "free"}
                for i in range(count)
            ],
        )


async def fill(engine: Engine, count: int, prefix: str = "tenant") -> TenantLookup:
    """A lookup that has looked up ``count`` keys ``{prefix}-000000``...: a fresh cache."""
    table = TenantTableLookup(Tenant, key="slug", active="active")
    lookup = TenantLookup(
        lambda key: table.fetch_sync(engine, key),
        is_active=table.is_active,
        cache=LookupCache(maxsize=count),
    )
    await lookup_all(lookup, 1, "tenant")  # the statement cache, outside the measurement
    lookup.invalidate()
    return lookup


async def lookup_all(lookup: TenantLookup, count: int, prefix: str) -> None:
    for i in range(count):
        with contextlib.suppress(TenantNotFound):
            await lookup(f"{prefix}-{i:06d}")


async def measure(engine: Engine, count: int) -> tuple[float, float | None, float]:
    """KiB per tenant held by the cache, RSS growth per 10,000 tenants (MiB), KiB per miss.

    The resident set is measured on a pass of its own: tracemalloc's bookkeeping would count.
    """
    lookup = await fill(engine, count)
    gc.collect()
    rss_before = rss_kib()
    await lookup_all(lookup, count, "tenant")
    gc.collect()
    rss_after = rss_kib()
    del lookup

    lookup = await fill(engine, count)
    gc.collect()
    tracemalloc.start()
    await lookup_all(lookup, count, "tenant")
    gc.collect()
    held, _peak = tracemalloc.get_traced_memory()
    await lookup_all(lookup, count, "unknown")
    gc.collect()
    with_misses, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    misses = min(count, LookupCache().max_misses)
    rss_growth = (
        None
        if rss_before is None or rss_after is None
        else (rss_after - rss_before) / 1024 * 10_000 / count
    )
    return held / 1024 / count, rss_growth, (with_misses - held) / 1024 / misses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", default="1000,10000", help="comma-separated sizes")
    args = parser.parse_args()
    sizes = [int(size) for size in args.tenants.split(",")]
    print(f"{'tenants':>8} {'KiB/tenant':>11} {'RSS MiB/10k tenants':>20} {'KiB/miss':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            engine = create_engine(f"sqlite:///{tmp}/tenants-{size}.db")
            seed(engine, size)
            per_tenant, rss, per_miss = asyncio.run(measure(engine, size))
            engine.dispose()
            shown_rss = "n/a" if rss is None else f"{rss:.1f}"
            print(f"{size:>8} {per_tenant:>11.2f} {shown_rss:>20} {per_miss:>9.2f}")


if __name__ == "__main__":
    main()
