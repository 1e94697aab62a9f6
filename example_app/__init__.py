"""A small multi-tenant SaaS API built on fastapi_tenancy: ``python -m example_app`` runs it.

JWT logins, tenants chosen by token claim, subdomain or ``X-Tenant-ID``, projects and tasks
scoped to the tenant by the kit. See ``docs/example-app.md`` for a walkthrough with curl.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
