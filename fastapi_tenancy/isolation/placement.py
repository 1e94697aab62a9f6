"""Where a tenant's rows live: shared tables, a schema of its own, or a database of its own.

A tenant model joins the physical strategies by declaring its table in the placeholder schema
:data:`TENANT_SCHEMA` (SQLAlchemy's own recipe for schema translation)::

    class Invoice(TenantScoped, table=True):
        __tablename__ = "invoices"
        __table_args__ = {"schema": TENANT_SCHEMA}

Every statement is compiled once, with the placeholder, and each session translates it at
execution (``schema_translate_map``, an execution option of the session's connection, never a
``search_path`` that would stay on a pooled connection): to the default schema for a tenant in
shared tables, to ``tenant_<key>`` for a tenant in a schema of its own, and to the default
schema of the tenant's own database for a tenant there. Tables outside the placeholder are
shared by every tenant. The ORM wall stays on in every strategy: a tenant's rows carry its
key wherever they live.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url

from ..exceptions import TenancyMisuse

if TYPE_CHECKING:
    from .engines import EngineCache

__all__ = ["TENANT_SCHEMA", "Isolation", "Placement", "Strategy", "stored_schema"]

TENANT_SCHEMA = "tenant"
"""The placeholder schema of tenant tables; every session translates it to its tenant's place."""


def stored_schema(schema: str | None) -> str | None:
    """The schema of the shared tables' copy of a table declared in ``schema``: the default
    schema (``None``) for the placeholder. What the database's own tooling (row-level
    security, Citus, the checkers) names, since it works on the shared tables."""
    return None if schema == TENANT_SCHEMA else schema


# PostgreSQL truncates longer names, MySQL refuses past 64: refuse here
_MAX_SCHEMA_NAME = 63
_SCHEMA_PLACEMENTS_KEPT = 4096


class Strategy(str, enum.Enum):
    """How one tenant's rows are kept apart from the others'."""

    SHARED = "shared"
    """In the shared tables, beside every other shared tenant's rows (the wall keeps them apart)."""
    SCHEMA = "schema"
    """In a schema of its own (PostgreSQL), or a database of its own on the same server
    (MariaDB, MySQL, where a schema is a database)."""
    DATABASE = "database"
    """In a database of its own, reached through an engine of its own."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one tenant's tenant tables are: its strategy, and its schema or database URL.

    ``schema_prefix`` starts the name of every tenant's schema (see :class:`Isolation`).
    """

    strategy: Strategy
    schema: str | None = None
    url: URL | None = None
    schema_prefix: str = "tenant_"
    translate_map: dict[str | None, str | None] = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "translate_map", {TENANT_SCHEMA: self.schema})

    def __hash__(self) -> int:
        return hash((self.strategy, self.schema, self.url))

    def is_tenant_schema(self, schema: str | None) -> bool:
        """Whether ``schema`` names some tenant's schema other than this one's (compared
        folded, as MySQL may fold names)."""
        return (
            schema is not None
            and schema != self.schema
            and schema.casefold().startswith(self.schema_prefix.casefold())
        )


StrategyChooser = Callable[[Any, Any], "Strategy | str | None"]
DatabaseURL = Callable[[str, Any], "URL | str"]


class Isolation:
    """How an application places its tenants: give it to ``Tenancy(..., isolation=...)``.

    The strategy of a tenant comes from ``choose(key, record)`` when given, else from the
    record's attribute ``field`` (a column of the tenant registry, say ``isolation``), else
    ``default``; a ``None`` answer falls through to the next. ``record`` is the tenant record
    of the request (the lookup's), of ``tenancy.session(tenant=record)``, or read from the
    registry's table for a script's session on a sync engine.

    A schema tenant's schema is ``schema_prefix`` followed by the key as spelled (never folded:
    two keys never share a schema); one of at most 63 characters. A database tenant's URL is
    ``database_url(spelled key, record)``; its engine is kept in ``engines``
    (:class:`~fastapi_tenancy.isolation.EngineCache`), whose bound closes the pools of the
    tenants least recently used. ``migrations`` is the ``alembic.ini`` of the tenant tables'
    migration environment (see :mod:`fastapi_tenancy.isolation.migrations`): a new tenant's
    place is migrated with it, else made with ``create_all``.

    Usage::

        tenancy = Tenancy(
            engine,
            resolvers=[HeaderResolver()],
            registry=TenantRegistry(Tenant),
            isolation=Isolation(field="isolation"),
        )
    """

    def __init__(
        self,
        *,
        default: Strategy | str = Strategy.SHARED,
        field: str | None = None,
        choose: StrategyChooser | None = None,
        schema_prefix: str = "tenant_",
        database_url: DatabaseURL | None = None,
        engines: EngineCache | None = None,
        migrations: str | Path | None = None,
    ) -> None:
        from .engines import EngineCache

        self.default = Strategy(default)
        self.field = field
        self.choose = choose
        if not schema_prefix or schema_prefix == TENANT_SCHEMA:
            raise TenancyMisuse("schema_prefix must be a non-empty prefix other than 'tenant'")
        self.schema_prefix = schema_prefix
        self.shared = Placement(Strategy.SHARED, schema_prefix=schema_prefix)
        # A schema tenant's placement depends on its key only: made once per key, not per
        # session (the most recent tenants kept).
        self._schema_placement = functools.lru_cache(maxsize=_SCHEMA_PLACEMENTS_KEPT)(
            self._new_schema_placement
        )
        self.database_url = database_url
        self.engines = engines if engines is not None else EngineCache()
        self.migrations = migrations
        if self.default is Strategy.DATABASE and database_url is None:
            raise TenancyMisuse("the database strategy needs database_url=(key, record) -> URL")

    @property
    def reads_records(self) -> bool:
        """Whether a tenant's strategy is read from its record (``field``)."""
        return self.field is not None

    def strategy_of(self, key: Any, record: Any) -> Strategy:
        """The strategy of tenant ``key`` with ``record`` (``None`` when none is at hand)."""
        if self.choose is not None and (chosen := self.choose(key, record)) is not None:
            return Strategy(chosen)
        if self.field is not None and record is not None:
            value = getattr(record, self.field, None)
            if value is not None:
                return Strategy(value)
        return self.default

    def placement(self, spelled: str, strategy: Strategy, record: Any = None) -> Placement:
        """Where tenant ``spelled`` (its key as spelled) lives under ``strategy``."""
        if strategy is Strategy.SHARED:
            return self.shared
        if strategy is Strategy.SCHEMA:
            return self._schema_placement(spelled)
        if self.database_url is None:
            raise TenancyMisuse(
                f"tenant {spelled!r} is placed in a database of its own, and Isolation has no "
                "database_url=(key, record) -> URL"
            )
        url = make_url(self.database_url(spelled, record))
        return Placement(Strategy.DATABASE, url=url, schema_prefix=self.schema_prefix)

    def _new_schema_placement(self, spelled: str) -> Placement:
        return Placement(
            Strategy.SCHEMA, schema=self.schema_name(spelled), schema_prefix=self.schema_prefix
        )

    def schema_name(self, spelled: str) -> str:
        """The schema of tenant ``spelled``: the prefix and the key, exactly."""
        name = self.schema_prefix + spelled
        if len(name.encode()) > _MAX_SCHEMA_NAME:
            raise TenancyMisuse(
                f"the schema name {name!r} is longer than {_MAX_SCHEMA_NAME} bytes; use a "
                "shorter schema_prefix or shorter keys for tenants in schemas of their own"
            )
        return name
