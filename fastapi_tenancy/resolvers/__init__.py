"""Tenant resolvers: each reads one source and answers a key or "no opinion"."""

from __future__ import annotations

from fastapi_tenancy.resolvers.base import Resolution, Resolver
from fastapi_tenancy.resolvers.callable import CallableResolver, as_resolver
from fastapi_tenancy.resolvers.header import HeaderResolver
from fastapi_tenancy.resolvers.jwt import JWTClaimResolver
from fastapi_tenancy.resolvers.subdomain import SubdomainResolver

__all__ = [
    "CallableResolver",
    "HeaderResolver",
    "JWTClaimResolver",
    "Resolution",
    "Resolver",
    "SubdomainResolver",
    "as_resolver",
]
