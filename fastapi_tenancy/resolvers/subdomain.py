"""Tenant key from the Host's subdomain under a base domain."""

from __future__ import annotations

import ipaddress
import string
from typing import TYPE_CHECKING, Literal

from fastapi_tenancy.exceptions import AmbiguousTenant
from fastapi_tenancy.resolvers.base import Resolution

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = ["SubdomainResolver"]

_WWW = "www"
_ASCII_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _bare_host(host: str) -> str | None:
    """Fold case and drop the port and one trailing dot; ``None`` for an IP literal."""
    if host.startswith("["):
        # Only an IPv6 literal may be bracketed; whatever is inside, it names no tenant.
        return None
    name, colon, _port = host.partition(":")
    if colon and ":" in _port:
        return None  # an unbracketed IPv6 literal
    if name.endswith("."):
        name = name[:-1]
    # Only ASCII is folded: Unicode folding maps look-alikes into ASCII (``ß`` to ``ss``), and
    # such a host must reach key validation unchanged to be refused there.
    name = name.lower() if name.isascii() else name.translate(_ASCII_FOLD)
    if name[-1:].isdigit():
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            return None
    return name


class SubdomainResolver:
    """Reads the tenant key from the subdomain of the Host under ``base_domain``.

    The host is case-folded and its port and trailing dot are dropped. There is no opinion for
    the base domain itself, hosts outside it, IP literals and ``www``. With several labels left
    of the base domain, ``position="last"`` (the default) takes the one next to it
    (``x.acme.example.test`` is ``acme``); ``"first"`` takes the leftmost that is not ``www``.
    An empty label (``.acme.example.test``) answers ``""`` so key validation refuses it.

        SubdomainResolver("example.test")
    """

    __slots__ = ("_suffix", "base_domain", "position")

    source = "subdomain"

    def __init__(self, base_domain: str, *, position: Literal["first", "last"] = "last") -> None:
        if position not in ("first", "last"):
            raise ValueError('position must be "first" or "last".')
        if not base_domain.isascii():
            raise ValueError("Give base_domain in its ASCII (punycode) form.")
        base = _bare_host(base_domain)
        if not base or base.startswith(".") or ".." in base:
            raise ValueError(f"{base_domain!r} is not a domain name.")
        self.base_domain = base
        self.position = position
        self._suffix = "." + base

    async def resolve(self, conn: HTTPConnection) -> Resolution | None:
        """Return the subdomain label chosen by ``position``; ``None`` if there is none."""
        hosts = conn.headers.getlist("host")
        if not hosts:
            return None
        raw = hosts[0]
        for other in hosts[1:]:
            if other != raw:
                raise AmbiguousTenant(
                    "The Host header was sent more than once with different values."
                )
        host = _bare_host(raw)
        if host is None or not host.endswith(self._suffix):
            return None
        labels = host[: -len(self._suffix)]
        if not labels or labels.startswith(".") or labels.endswith(".") or ".." in labels:
            return Resolution("", self.source)
        if self.position == "last":
            label = labels.rpartition(".")[2]
        else:
            label = next((part for part in labels.split(".") if part != _WWW), _WWW)
        if label == _WWW:
            return None
        return Resolution(label, self.source)

    def __repr__(self) -> str:
        return f"SubdomainResolver({self.base_domain!r}, position={self.position!r})"
