"""Mistakes ``mypy --strict`` must report in users' code (tests/test_typing.py)."""

from __future__ import annotations

import uuid

from sqlmodel import Field

from fastapi_tenancy import TenantScoped


class Invoice(TenantScoped[uuid.UUID], table=True):
    id: int | None = Field(default=None, primary_key=True)
    total: int


def mistakes() -> None:
    Invoice(total=3, tenant_id="acme")  # line 18: a string where the key is a UUID
    label: str = Invoice(total=3).tenant_id  # line 19: the key is a UUID, not a str
    Invoice(tenant_id=uuid.uuid4())  # line 20: total is required
    del label
