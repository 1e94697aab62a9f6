"""The tenant key type a test run uses, and its tenants spelled in it.

CI runs the scoping attacks and the row-level security suite once per key type:
``TENANCY_KEY_TYPE`` is ``str`` (the default), ``int`` or ``uuid``. ``tests/`` is on the import
path of every test module (its conftest.py puts it there), so both folders import this.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from fastapi_tenancy import TenantScoped

KEY_TYPE: Any = {"str": str, "int": int, "uuid": uuid.UUID}[
    os.environ.get("TENANCY_KEY_TYPE", "str")
]
"""The tenant key type of this run's models and Tenancy."""


def tenant_key(name: str) -> Any:
    """The key of the tenant called ``name`` in this run's key type."""
    if KEY_TYPE is int:
        return {"acme": 1, "globex": 2, "initech": 3, "umbrella": 4}[name]
    if KEY_TYPE is uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.example.test")
    return name


ACME = tenant_key("acme")
GLOBEX = tenant_key("globex")
INITECH = tenant_key("initech")
UMBRELLA = tenant_key("umbrella")

Keyed: Any = TenantScoped[KEY_TYPE]
"""The tenant base of this run's models."""
