"""Tenant keys: the one gate every key passes before any lookup, the key types (string,
integer, UUID or the app's own), and the column type that stores string keys so that the
database compares them exactly."""

from __future__ import annotations

import re
import uuid
import weakref
from typing import Any, Generic, TypeVar

from sqlalchemy import Integer, String, Uuid
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from fastapi_tenancy.exceptions import InvalidTenantKey, TenancyMisuse

__all__ = [
    "DEFAULT_KEY_PATTERN",
    "IntegerKeys",
    "KeyValidator",
    "StringKeys",
    "TenantKey",
    "TenantKeyType",
    "UUIDKeys",
    "key_type_for",
    "tenant_key_of",
]

KeyT = TypeVar("KeyT")

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


# The column type TenantKey answers per dialect, by length and collation: made once, not on
# every expanding parameter SQLAlchemy renders. Weak on the dialect, so engines can go.
_IMPLS: weakref.WeakKeyDictionary[Dialect, dict[tuple[int, str], TypeEngine[Any]]] = (
    weakref.WeakKeyDictionary()
)


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
        """``VARCHAR`` with the binary collation on MySQL and MariaDB, plain elsewhere; made
        once per dialect (SQLAlchemy asks again for every expanding parameter it renders)."""
        made = _IMPLS.setdefault(dialect, {})
        key = (self.length, self.mysql_collation)
        impl = made.get(key)
        if impl is None:
            if dialect.name in ("mysql", "mariadb"):
                impl = mysql.VARCHAR(self.length, charset="utf8mb4", collation=self.mysql_collation)
            else:
                impl = String(self.length)
            impl = made[key] = dialect.type_descriptor(impl)
        return impl


class TenantKeyType(Generic[KeyT]):
    """How tenant keys of one Python type are parsed, spelled and stored.

    A key arrives as a string (a header, a subdomain, a claim) and is parsed into
    ``python_type`` before anything else sees it. Every key has exactly one spelling:
    ``parse(raw)`` refuses a string unless ``format()`` of the parsed key gives ``raw`` back,
    so ``"01"`` is not the integer key ``1`` and an upper-case UUID is not its lower-case twin;
    two sources that spell one tenant differently disagree instead of meeting in a cache or a
    comparison. Subclass it for a key type of your own: give ``python_type``, ``column_type()``
    and ``convert()``.
    """

    python_type: type[KeyT]

    def convert(self, raw: str) -> KeyT:
        """Turn ``raw`` into a key, or raise ``ValueError``; ``parse`` adds the spelling check."""
        raise NotImplementedError

    def format(self, key: KeyT) -> str:
        """The one spelling of ``key``: what a header, a setting or a log line carries."""
        return str(key)

    def column_type(self) -> TypeEngine[Any]:
        """The SQLAlchemy type of tenant columns holding these keys."""
        raise NotImplementedError

    def parse(self, raw: str) -> KeyT:
        """Parse a key from a request or a message; ``InvalidTenantKey`` when it is not one."""
        try:
            key = self.convert(raw)
        except (ValueError, TypeError):
            raise InvalidTenantKey() from None
        if self.format(key) != raw:
            raise InvalidTenantKey()
        return key

    def coerce(self, value: Any) -> KeyT:
        """A key bound by code (``with_tenant``, a test): a key of this type, a tenant record
        (see :func:`tenant_key_of`), or the key's string spelling."""
        value = tenant_key_of(value)
        if isinstance(value, self.python_type) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self.parse(value)
        raise TenancyMisuse(
            f"the tenant {value!r} is a {type(value).__name__}; this app's tenant keys are "
            f"{self.python_type.__name__}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StringKeys(TenantKeyType[str]):
    """String keys (slugs) matching ``pattern``, stored in :class:`TenantKey` columns."""

    python_type = str

    def __init__(self, pattern: str | re.Pattern[str] = DEFAULT_KEY_PATTERN) -> None:
        self.validate = KeyValidator(pattern)

    def convert(self, raw: str) -> str:
        """``raw`` itself when it matches the pattern."""
        if self.validate.pattern.fullmatch(raw) is None:
            raise ValueError(raw)
        return raw

    def column_type(self) -> TypeEngine[Any]:
        """:class:`TenantKey`: compared exactly on every database."""
        return TenantKey()

    def __repr__(self) -> str:
        return f"StringKeys({self.validate.pattern.pattern!r})"


class IntegerKeys(TenantKeyType[int]):
    """Integer keys (a tenants table's integer primary key): decimal digits without sign or
    leading zeros, from 1 to ``maximum`` (2**63 - 1, PostgreSQL's and MySQL's BIGINT)."""

    python_type = int
    _DIGITS = re.compile(r"[1-9][0-9]{0,18}")

    def __init__(self, maximum: int = 2**63 - 1) -> None:
        self.maximum = maximum

    def convert(self, raw: str) -> int:
        """The integer ``raw`` spells."""
        if self._DIGITS.fullmatch(raw) is None:
            raise ValueError(raw)
        key = int(raw)
        if key > self.maximum:
            raise ValueError(raw)
        return key

    def parse(self, raw: str) -> int:
        """As :meth:`TenantKeyType.parse`; the pattern admits only the one spelling."""
        try:
            return self.convert(raw)
        except ValueError:
            raise InvalidTenantKey() from None

    def column_type(self) -> TypeEngine[Any]:
        """``INTEGER``, as SQLModel maps ``int`` (declare ``BigInteger`` yourself if needed)."""
        return Integer()


class UUIDKeys(TenantKeyType[uuid.UUID]):
    """UUID keys, spelled in the canonical lower-case, hyphenated form of ``str(uuid)``."""

    python_type = uuid.UUID

    _CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    def convert(self, raw: str) -> uuid.UUID:
        """The UUID ``raw`` spells."""
        return uuid.UUID(raw)

    def parse(self, raw: str) -> uuid.UUID:
        """As :meth:`TenantKeyType.parse`; the pattern admits only the one spelling."""
        if self._CANONICAL.fullmatch(raw) is None:
            raise InvalidTenantKey()
        return uuid.UUID(raw)

    def column_type(self) -> TypeEngine[Any]:
        """``Uuid``: native on PostgreSQL, ``CHAR(32)`` elsewhere."""
        return Uuid()


def key_type_for(
    spec: type[Any] | TenantKeyType[Any], *, pattern: str | re.Pattern[str] = DEFAULT_KEY_PATTERN
) -> TenantKeyType[Any]:
    """The key type for ``str``, ``int`` or ``uuid.UUID``, or ``spec`` itself when it is one."""
    if isinstance(spec, TenantKeyType):
        return spec
    if spec is str:
        return StringKeys(pattern)
    if spec is int:
        return IntegerKeys()
    if spec is uuid.UUID:
        return UUIDKeys()
    raise TypeError(
        f"no built-in tenant key type for {spec!r}: pass a TenantKeyType subclass instance"
    )


def tenant_key_of(value: Any) -> Any:
    """The tenant key of a tenant record, or ``value`` itself when it is a key.

    A record names its key with a ``__tenant_key__`` attribute or property (Ash calls this
    ``ToTenant``)::

        class Organization(SQLModel, table=True):
            id: UUID = Field(default_factory=uuid4, primary_key=True)

            @property
            def __tenant_key__(self) -> UUID:
                return self.id
    """
    return getattr(value, "__tenant_key__", value)
