"""Put the tenant on every log line: a ``logging.Filter`` and, for structlog, a processor.

Attach the filter to your *handlers*, so it sees the records of every logger that reaches them
(a filter on a logger sees only what is logged on that very logger)::

    handler = logging.StreamHandler()
    handler.addFilter(TenantLogFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s [%(tenant)s] %(name)s: %(message)s"))

or in ``dictConfig``::

    "filters": {"tenant": {"()": "fastapi_tenancy.logging.TenantLogFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["tenant"]}},

Every record gets ``tenant`` (the bound tenant id, or ``default`` when none is bound) and
``tenant_source`` (where the tenant came from: ``jwt``, ``header``, ``subdomain``, ``code``...).
Records of the audit logger, ``fastapi_tenancy.audit``, also get every audit field, ``None``
when the event does not set it, so one format string fits all of them:
``tenancy_event``, ``tenancy_principal``, ``tenancy_tenant``, ``tenancy_path``,
``tenancy_reason``, and the statement audit's ``tenancy_tables`` and ``tenancy_scopes`` (see
:data:`AUDIT_FIELDS`).

With structlog, add :func:`structlog_processor` to the processor chain; structlog is not
imported by this module, so it stays an optional dependency of the application.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from .context import get_tenant_context

__all__ = ["AUDIT_FIELDS", "AUDIT_LOGGER", "TenantLogFilter", "structlog_processor"]

AUDIT_LOGGER = "fastapi_tenancy.audit"
"""Name of the logger every bypass and refusal of the kit is reported on."""

AUDIT_FIELDS = (
    "tenancy_event",
    "tenancy_principal",
    "tenancy_tenant",
    "tenancy_path",
    "tenancy_reason",
    "tenancy_tables",
    "tenancy_scopes",
)
"""Attributes every audit record carries once it passed :class:`TenantLogFilter`."""


class TenantLogFilter(logging.Filter):
    """Adds ``tenant`` and ``tenant_source`` to every record; never drops one.

    ``default`` is written where no tenant is bound (``"-"`` by default). A record that already
    has a ``tenant`` attribute (passed in ``extra``) keeps it. Audit records also get every
    field of :data:`AUDIT_FIELDS`, with ``tenancy_tenant`` defaulting to the bound tenant.
    """

    def __init__(self, name: str = "", *, default: str = "-") -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate ``record`` and let it through."""
        context = get_tenant_context()
        tenant = None if context is None else context.id
        if not hasattr(record, "tenant"):
            record.tenant = self.default if tenant is None else tenant
            source = None if context is None or tenant is None else context.source
            record.tenant_source = self.default if source is None else source
        if record.name == AUDIT_LOGGER or record.name.startswith(AUDIT_LOGGER + "."):
            for field in AUDIT_FIELDS:
                if not hasattr(record, field):
                    setattr(record, field, tenant if field == "tenancy_tenant" else None)
        return True


def structlog_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor adding ``tenant`` (and ``tenant_source``) to each event.

    Keys the event already has are kept. Nothing is added when no tenant is bound, so events
    outside a request stay as they are.

        structlog.configure(processors=[structlog_processor, structlog.processors.JSONRenderer()])
    """
    context = get_tenant_context()
    if context is not None and context.id is not None:
        event_dict.setdefault("tenant", context.id)
        if context.source is not None:
            event_dict.setdefault("tenant_source", context.source)
    return event_dict
