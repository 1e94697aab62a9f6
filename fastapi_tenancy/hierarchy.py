"""Tenants with a parent: a tenant's ancestors and descendants, found once per request.

A tenant record may name its parent (a reseller's customer, a franchise's branch). A model
declares which of its rows a tenant reads beside its own with ``__tenant_reads__``:
``"ancestors"`` (a catalogue the parents share down) or ``"descendants"`` (a reseller seeing
its customers' rows). Writes always stay in the bound tenant.

:class:`TenantHierarchy` tells the kit where the parent is (an attribute of the lookup's record)
and how to list a tenant's children; the :class:`TenantFamily` it finds is bound with the
request's :class:`~fastapi_tenancy.TenantContext`. Ancestors come from the lookup's cached
records, so a known tenant costs no query for them; descendants from ``children``, cached for
the lookup cache's time to live. Depth is bounded, and a cycle fails the request closed.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from .exceptions import TenancyMisuse, TenantHierarchyInvalid

if TYPE_CHECKING:
    from .lookup import TenantLookup

__all__ = [
    "FAMILY_PARAMS",
    "TenantFamily",
    "TenantHierarchy",
    "TenantReads",
    "family_params",
    "family_setting_value",
]

TenantReads = Literal["own", "ancestors", "descendants"]
"""What a tenant reads of a model: its own rows, or also its ancestors' or descendants'."""

FAMILY_PARAMS = {
    "ancestors": "fastapi_tenancy_ancestors",
    "descendants": "fastapi_tenancy_descendants",
}
"""The stems of the bound parameters carrying the tenants a session reads of a family model:
``tenant_id IN (:fastapi_tenancy_ancestors_0, :fastapi_tenancy_ancestors_1)``."""

logger = logging.getLogger("fastapi_tenancy.hierarchy")

Children = Callable[[Any], "Iterable[Any] | Awaitable[Iterable[Any]]"]


@dataclass(frozen=True, slots=True)
class TenantFamily:
    """The tenants whose rows a tenant reads beside its own: its ``ancestors`` (nearest first)
    and its ``descendants`` (nearest first), as tenant keys."""

    ancestors: tuple[Any, ...] = ()
    descendants: tuple[Any, ...] = ()

    def readable(self, tenant: Any, reads: TenantReads) -> tuple[Any, ...]:
        """The tenants whose rows ``tenant`` reads of a model declaring ``reads``."""
        if reads == "ancestors":
            return (tenant, *self.ancestors)
        if reads == "descendants":
            return (tenant, *self.descendants)
        return (tenant,)

    def bound_size(self, reads: TenantReads) -> int:
        """How many parameters carry :meth:`readable`: its size rounded up to a power of two,
        so that every family of a size up to that power shares one compiled statement (a
        handful of statements however the families vary)."""
        others = self.ancestors if reads == "ancestors" else self.descendants
        return 1 << len(others).bit_length() if reads != "own" else 1

    def bound(self, tenant: Any, reads: TenantReads) -> tuple[Any, ...]:
        """:meth:`readable` as those parameters carry it, padded with ``tenant``."""
        readable = self.readable(tenant, reads)
        return readable + (tenant,) * (self.bound_size(reads) - len(readable))


@cache
def family_params(reads: TenantReads, count: int) -> tuple[str, ...]:
    """The names of the ``count`` bound parameters carrying the tenants read of a model
    declaring ``reads``."""
    return tuple(f"{FAMILY_PARAMS[reads]}_{index}" for index in range(count))


NO_FAMILY = TenantFamily()


def family_setting_value(keys: Iterable[Any]) -> str:
    """``keys`` as the text of a PostgreSQL array literal, for the row-level security setting
    naming a tenant's family (``''`` when there are none).

    Every element is double-quoted with ``"`` and ``\\`` escaped, so no key (a custom pattern's
    comma, brace or quote included) can end an element or the array early; PostgreSQL casts
    the text to an array of the tenant column's type.
    """
    quoted = ['"' + str(key).replace("\\", "\\\\").replace('"', '\\"') + '"' for key in keys]
    return "{" + ",".join(quoted) + "}" if quoted else ""


@dataclass
class TenantHierarchy:
    """Where a tenant's parent and children are, for ``Tenancy(..., hierarchy=...)``.

    ``parent`` names the attribute of the lookup's record holding the parent's key (or is a
    function of the record answering it); ``None`` there means a root. ``children`` (sync or
    async) answers the keys of a tenant's direct children; it is needed only by models that
    read their descendants' rows, and its answers are kept ``ttl`` seconds (at most
    ``maxsize`` tenants). A tenant's whole family is kept as long, while the lookup answers
    the same record for it; ``Tenancy.tenant_changed()`` forgets every family at once.
    ``max_depth`` bounds both walks: a deeper chain, or a cycle, answers 500
    ``tenant_hierarchy_invalid``. An ancestor that is missing or inactive ends the chain.

    Usage::

        class Organization(TenantRecord, table=True):
            parent_slug: str | None = None


        def children(key: str) -> list[str]:
            with Session(engine) as session:
                query = select(Organization.slug).where(Organization.parent_slug == key)
                return list(session.exec(query))


        tenancy = Tenancy(
            engine,
            resolvers=[...],
            registry=TenantRegistry(Organization),
            hierarchy=TenantHierarchy(parent="parent_slug", children=children),
        )
    """

    parent: str | Callable[[Any], Any] = "parent"
    children: Children | None = None
    max_depth: int = 8
    ttl: float = 60.0
    maxsize: int = 10_000
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _descendants: OrderedDict[Any, tuple[float, tuple[Any, ...]]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    _families: OrderedDict[Any, tuple[float, Any, TenantFamily]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be 1 or more, not {self.max_depth}")

    def parent_of(self, record: Any) -> Any:
        """The parent key named by ``record``, or ``None`` for a root."""
        if callable(self.parent):
            return self.parent(record)
        return getattr(record, self.parent, None)

    async def family_of(
        self,
        key: Any,
        record: Any,
        lookup: TenantLookup,
        coerce: Callable[[Any], Any],
        *,
        descendants: bool,
    ) -> TenantFamily:
        """The family of the tenant ``key`` whose record is ``record``: its ancestors through
        ``lookup`` (cached records), and, when ``descendants``, its descendants; kept ``ttl``
        seconds while ``record`` is the tenant's record."""
        now = self.clock()
        cached = self._families.get(key)
        if cached is not None and cached[1] is record and cached[0] > now:
            return cached[2]
        ancestors = await self._walk_up(key, record, lookup, coerce)
        below = await self.descendants_of(key, coerce) if descendants else ()
        family = TenantFamily(ancestors=ancestors, descendants=below)
        _keep(self._families, key, (now + self.ttl, record, family), self.ttl, self.maxsize)
        return family

    async def _walk_up(
        self, key: Any, record: Any, lookup: TenantLookup, coerce: Callable[[Any], Any]
    ) -> tuple[Any, ...]:
        chain: list[Any] = []
        seen = {key}
        while (parent := self.parent_of(record)) is not None:
            parent = coerce(parent)
            if parent in seen:
                raise _invalid(key, f"tenant {parent!r} is its own ancestor (a cycle)")
            if len(chain) == self.max_depth:
                raise _invalid(key, f"more than {self.max_depth} ancestors (max_depth)")
            record = await lookup.find(parent)
            if record is None or not lookup.is_active(record):
                logger.warning(
                    "a tenant's ancestor is missing or inactive; its rows are not read",
                    extra={"tenancy_tenant": key, "tenancy_ancestor": parent},
                )
                break
            seen.add(parent)
            chain.append(parent)
        return tuple(chain)

    async def descendants_of(self, key: Any, coerce: Callable[[Any], Any]) -> tuple[Any, ...]:
        """Every descendant of ``key``, nearest first, cached ``ttl`` seconds."""
        now = self.clock()
        cached = self._descendants.get(key)
        if cached is not None and cached[0] > now:
            self._descendants.move_to_end(key)
            return cached[1]
        found = await self._walk_down(key, coerce)
        _keep(self._descendants, key, (now + self.ttl, found), self.ttl, self.maxsize)
        return found

    async def _walk_down(self, key: Any, coerce: Callable[[Any], Any]) -> tuple[Any, ...]:
        if self.children is None:
            raise TenancyMisuse(
                "a model reads its descendants' rows (__tenant_reads__ = 'descendants'): "
                "give TenantHierarchy(children=...) to list a tenant's children"
            )
        found: list[Any] = []
        seen = {key}
        level = [key]
        for _depth in range(self.max_depth + 1):
            below: list[Any] = []
            for parent in level:
                answer = self.children(parent)
                if inspect.isawaitable(answer):
                    answer = await answer
                for child in answer:
                    child = coerce(child)
                    if child in seen:
                        raise _invalid(key, f"tenant {child!r} is reached twice (a cycle)")
                    seen.add(child)
                    below.append(child)
            if not below:
                return tuple(found)
            if _depth == self.max_depth:
                raise _invalid(key, f"descendants deeper than {self.max_depth} (max_depth)")
            found.extend(below)
            level = below
        return tuple(found)

    def invalidate(self) -> None:
        """Forget every cached family and list of descendants (a tenant was created, moved
        or removed)."""
        self._descendants.clear()
        self._families.clear()


def _keep(cache: OrderedDict[Any, Any], key: Any, entry: Any, ttl: float, maxsize: int) -> None:
    """Put ``entry`` in ``cache`` as its newest, keeping at most ``maxsize`` (none when
    ``ttl`` or ``maxsize`` is not positive)."""
    if ttl <= 0 or maxsize <= 0:
        return
    cache[key] = entry
    cache.move_to_end(key)
    while len(cache) > maxsize:
        cache.popitem(last=False)


def _invalid(key: Any, reason: str) -> TenantHierarchyInvalid:
    logger.error(
        "tenant hierarchy refused: %s",
        reason,
        extra={"tenancy_tenant": key, "tenancy_event": "tenant_hierarchy_invalid"},
    )
    return TenantHierarchyInvalid()
