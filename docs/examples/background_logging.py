"""The tenant on every log line, and the audit fields on every audit line.

``logging.config.dictConfig(LOGGING)`` at start-up; the filter goes on the handlers, so it sees
the records of every logger that reaches them.
"""

from __future__ import annotations

from typing import Any

# --8<-- [start:logging]
AUDIT_FORMAT = (
    "AUDIT %(tenancy_event)s principal=%(tenancy_principal)s tenant=%(tenancy_tenant)s "
    "path=%(tenancy_path)s reason=%(tenancy_reason)s"
)

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"tenant": {"()": "fastapi_tenancy.logging.TenantLogFilter"}},
    "formatters": {
        "plain": {"format": "%(levelname)s [%(tenant)s] %(name)s: %(message)s"},
        "audit": {"format": AUDIT_FORMAT},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["tenant"], "formatter": "plain"},
        "audit": {"class": "logging.StreamHandler", "filters": ["tenant"], "formatter": "audit"},
    },
    "loggers": {
        "fastapi_tenancy.audit": {"handlers": ["audit"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["console"], "level": "INFO"},
}
# --8<-- [end:logging]
