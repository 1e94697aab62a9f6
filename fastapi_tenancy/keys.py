"""Tenant key validation: the one gate every key passes before any lookup."""

from __future__ import annotations

import re

from fastapi_tenancy.exceptions import InvalidTenantKey

__all__ = ["DEFAULT_KEY_PATTERN", "KeyValidator"]

DEFAULT_KEY_PATTERN: str = r"[a-z0-9][a-z0-9_-]{0,62}"
"""1 to 63 characters of ``a-z``, ``0-9``, ``-`` and ``_``, starting with a letter or digit.

It fits in a DNS label, so the same key can name a subdomain, a header value and a claim.
"""


class KeyValidator:
    """Checks a tenant key against a pattern and returns it unchanged.

    The whole key must match (``fullmatch``: a trailing newline is refused, where ``$`` would
    let it through). Keys are not folded here; only the subdomain resolver folds case.

        validate = KeyValidator(r"[a-z]{2,10}")
        validate("acme")  # "acme"; anything else raises InvalidTenantKey
    """

    __slots__ = ("pattern",)

    def __init__(self, pattern: str | re.Pattern[str] = DEFAULT_KEY_PATTERN) -> None:
        self.pattern: re.Pattern[str] = re.compile(pattern)

    def __call__(self, key: str) -> str:
        """Return ``key`` if it matches the pattern, else raise ``InvalidTenantKey``."""
        if self.pattern.fullmatch(key) is None:
            raise InvalidTenantKey()
        return key

    def __repr__(self) -> str:
        return f"KeyValidator({self.pattern.pattern!r})"
