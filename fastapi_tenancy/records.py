"""A tenants table to adopt: the columns :class:`~fastapi_tenancy.TenantRegistry` reads.

An app without a tenants table of its own subclasses :class:`TenantRecord` with
``table=True`` and adds what it needs (a name, a plan); ``TenantRegistry(Organization)``
then reads it with no column named, and fills in ``created_at`` and ``suspended_at``.
"""

# No "from __future__ import annotations": SQLModel reads the real annotations.

from datetime import datetime

from sqlalchemy import DateTime
from sqlmodel import Field, SQLModel

from .keys import TenantKey

__all__ = ["TenantRecord"]


class TenantRecord(SQLModel):
    """Columns of a tenants table: an id, a unique ``slug`` (the tenant key, compared exactly
    on every database), an ``active`` flag, and when it was created and suspended.

    Usage::

        class Organization(TenantRecord, table=True):
            name: str


        tenancy = Tenancy(engine, resolvers=[...], registry=TenantRegistry(Organization))
    """

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(sa_type=TenantKey, unique=True, max_length=63)
    active: bool = True
    created_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    suspended_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
