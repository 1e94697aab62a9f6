"""Tenant keys: the one gate every key passes before any lookup, and the column type that
stores them so that the database compares them exactly."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import String
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from fastapi_tenancy.exceptions import InvalidTenantKey

__all__ = ["DEFAULT_KEY_PATTERN", "KeyValidator", "TenantKey"]

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


class TenantKey(TypeDecorator[str]):
    """The column type of tenant keys: a string the database compares exactly, on every database.

    SQLite and PostgreSQL compare strings exactly, and get a plain ``VARCHAR(63)``. MySQL and
    MariaDB compare them case-insensitively under their default collations, so tenant ``ACME``
    would read, change and delete ``acme``'s rows; there the column is ``VARCHAR(63) CHARACTER
    SET utf8mb4 COLLATE utf8mb4_bin``. ``TenantScoped`` declares its tenant column with it; use it
    wherever else a column holds tenant keys, so that they compare alike (and MySQL accepts
    foreign keys between them, which must agree on the collation)::

        tenant_id: str = Field(sa_type=TenantKey, index=True, max_length=63)

    ``utf8mb4_bin`` ignores trailing spaces, as every ``PAD SPACE`` collation does; no key the
    default pattern admits has any. ``TenantKey(mysql_collation="utf8mb4_nopad_bin")`` on MariaDB
    (``utf8mb4_0900_bin`` on MySQL 8) makes them count too.
    """

    impl = String
    cache_ok = True

    def __init__(self, length: int = 63, *, mysql_collation: str = "utf8mb4_bin") -> None:
        super().__init__(length)
        self.length = length
        self.mysql_collation = mysql_collation

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """``VARCHAR`` with the binary collation on MySQL and MariaDB, plain elsewhere."""
        if dialect.name in ("mysql", "mariadb"):
            varchar = mysql.VARCHAR(self.length, charset="utf8mb4", collation=self.mysql_collation)
            return dialect.type_descriptor(varchar)
        return dialect.type_descriptor(String(self.length))
