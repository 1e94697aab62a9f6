"""The example app's configuration: read from the environment by ``python -m example_app`` only.

Nothing here runs at import time; :meth:`Settings.from_env` is called by the command line (and
by :func:`~example_app.app.create_app` when it is given no engine), never by the kit.
:func:`make_engine` gives every engine of the app bounded waits (:class:`EngineTimeouts`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.pool import QueuePool

from fastapi_tenancy import DEFAULT_KEY_PATTERN, TENANT_SCHEMA

__all__ = [
    "DEFAULT_BASE_DOMAIN",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUTS",
    "DEV_JWT_SECRET",
    "MIN_RLS_PASSWORD_LENGTH",
    "MIN_SECRET_BYTES",
    "EngineTimeouts",
    "Settings",
    "database_url",
    "make_engine",
]

DEFAULT_DATABASE_URL = "sqlite:///./example_app.db"
DEFAULT_PORT = 8000
DEFAULT_BASE_DOMAIN = "example.test"
DEV_JWT_SECRET = "example-app-development-key-not-for-production"  # noqa: S105 (printed on start)
MIN_SECRET_BYTES = 32
"""HS256 keys shorter than the hash (32 bytes) are refused: PyJWT and RFC 7518 say so."""
MIN_RLS_PASSWORD_LENGTH = 16
RLS_PASSWORD_LABEL = b"example_app: password of the EXAMPLE_RLS=1 application role, v1"
"""The message HMAC-SHA256 signs under the JWT key to derive the role password (see
:attr:`Settings.role_password`)."""

# Bare dialect names mapped to the drivers the project installs (psycopg 3, PyMySQL).
_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``python -m example_app`` reads from its environment."""

    database_url: str = DEFAULT_DATABASE_URL
    port: int = DEFAULT_PORT
    jwt_secret: str = field(default=DEV_JWT_SECRET, repr=False)
    base_domain: str = DEFAULT_BASE_DOMAIN
    rls: bool = False
    rls_password: str | None = field(default=None, repr=False)
    max_tenants: int | None = None
    schema_tenants: tuple[str, ...] = ()

    @property
    def uses_dev_secret(self) -> bool:
        """Whether the JWT key is the published development default."""
        return self.jwt_secret == DEV_JWT_SECRET

    @property
    def role_password(self) -> str:
        """The password of the ``EXAMPLE_RLS=1`` application role: ``EXAMPLE_RLS_PASSWORD``, or
        an HMAC-SHA256 of a fixed label under the JWT key.

        One value per deployment, so every worker that prepares the role sets the same password
        and none locks the others' connections out; the HMAC gives it with no setting of its own
        and tells nothing about the JWT key.
        """
        if self.rls_password is not None:
            return self.rls_password
        digest = hmac.digest(self.jwt_secret.encode(), RLS_PASSWORD_LABEL, hashlib.sha256)
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``DATABASE_URL``, ``PORT``, ``EXAMPLE_JWT_SECRET``, ``EXAMPLE_BASE_DOMAIN``,
        ``EXAMPLE_RLS``, ``EXAMPLE_RLS_PASSWORD``, ``EXAMPLE_MAX_TENANTS`` and
        ``EXAMPLE_SCHEMA_TENANTS`` (slugs, comma-separated, of the tenants kept in a schema of
        their own; PostgreSQL or MariaDB, without ``EXAMPLE_RLS``).

        Unset or empty variables take the defaults; bad values raise ``ValueError`` with a
        sentence naming the variable.
        """
        env = os.environ if environ is None else environ
        raw_port = env.get("PORT", "").strip() or str(DEFAULT_PORT)
        try:
            port = int(raw_port)
        except ValueError:
            raise ValueError(f"PORT must be a number, not {raw_port!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"PORT must be between 1 and 65535, not {port}")
        secret = env.get("EXAMPLE_JWT_SECRET", "") or DEV_JWT_SECRET
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"EXAMPLE_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long "
                '(try: python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        url = env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
        parsed = database_url(url)  # fail early, with the variable's name, on a bad URL
        base_domain = env.get("EXAMPLE_BASE_DOMAIN", "").strip() or DEFAULT_BASE_DOMAIN
        rls = _flag("EXAMPLE_RLS", env.get("EXAMPLE_RLS", ""))
        if rls and parsed.get_backend_name() != "postgresql":
            raise ValueError(
                "EXAMPLE_RLS=1 needs PostgreSQL: set DATABASE_URL=postgresql://... "
                "(row-level security is a PostgreSQL feature)"
            )
        rls_password = env.get("EXAMPLE_RLS_PASSWORD", "") or None
        if rls_password is not None and not _acceptable_role_password(rls_password):
            # The value itself is never shown: it is a credential.
            raise ValueError(
                f"EXAMPLE_RLS_PASSWORD must be {MIN_RLS_PASSWORD_LENGTH} or more printable ASCII "
                "characters"
            )
        max_tenants = _max_tenants(env.get("EXAMPLE_MAX_TENANTS", ""))
        schema_tenants = _schema_tenants(env.get("EXAMPLE_SCHEMA_TENANTS", ""))
        if schema_tenants and parsed.get_backend_name() == "sqlite":
            raise ValueError(
                "EXAMPLE_SCHEMA_TENANTS needs PostgreSQL or MariaDB: SQLite has no schemas"
            )
        if schema_tenants and rls:
            raise ValueError(
                "EXAMPLE_SCHEMA_TENANTS and EXAMPLE_RLS=1 do not go together: the policies "
                "are made on the shared tables only"
            )
        return cls(
            database_url=url,
            port=port,
            jwt_secret=secret,
            base_domain=base_domain,
            rls=rls,
            rls_password=rls_password,
            max_tenants=max_tenants,
            schema_tenants=schema_tenants,
        )


def _schema_tenants(raw: str) -> tuple[str, ...]:
    """``EXAMPLE_SCHEMA_TENANTS``: the slugs of the tenants kept in a schema of their own."""
    slugs = tuple(slug.strip() for slug in raw.split(",") if slug.strip())
    for slug in slugs:
        if not re.fullmatch(DEFAULT_KEY_PATTERN, slug):
            raise ValueError(f"EXAMPLE_SCHEMA_TENANTS names {slug!r}, which is not a tenant slug")
    return slugs


def _max_tenants(raw: str) -> int | None:
    """``EXAMPLE_MAX_TENANTS``: how many tenants the database may hold, suspended ones and the
    seeded ones included (``POST /signup`` answers 403 at the limit); unset means no limit."""
    value = raw.strip()
    if not value:
        return None
    if not (value.isascii() and value.isdecimal()) or int(value) < 1:
        raise ValueError(f"EXAMPLE_MAX_TENANTS must be a whole number of 1 or more, not {raw!r}")
    return int(value)


def _acceptable_role_password(password: str) -> bool:
    # ASCII only: PostgreSQL normalizes other passwords (SASLprep) before it hashes them.
    return (
        len(password) >= MIN_RLS_PASSWORD_LENGTH and password.isascii() and password.isprintable()
    )


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be 1 or 0, not {raw!r}")


def database_url(raw: str) -> URL:
    """Parse ``raw``, giving bare ``postgresql://`` and ``mysql://`` URLs the installed drivers."""
    try:
        url = make_url(raw)
    except Exception as error:  # SQLAlchemy raises ArgumentError, or ValueError for bad ports
        raise ValueError(f"DATABASE_URL is not a database URL: {raw!r}") from error
    driver = _DRIVERS.get(url.drivername)
    return url if driver is None else url.set(drivername=driver)


@dataclass(frozen=True, slots=True)
class EngineTimeouts:
    """How long the app's engines wait on the database, in seconds; see :func:`make_engine`.

    ``connect``: to open a connection; ``statement``: for one statement to run on the server;
    ``pool``: for a free connection of the pool; ``keepalive_idle``: of silence on a
    PostgreSQL connection before TCP keepalive probes ask whether the server is still there.

        make_engine(url, timeouts=EngineTimeouts(statement=60))
    """

    connect: int = 5
    statement: float = 15.0
    pool: float = 5.0
    keepalive_idle: int = 30

    def __post_init__(self) -> None:
        for name in ("connect", "statement", "pool", "keepalive_idle"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a number of seconds above 0, not {value}")


DEFAULT_TIMEOUTS = EngineTimeouts()
KEEPALIVE_INTERVAL = 10
"""Seconds between two unanswered TCP keepalive probes (PostgreSQL)."""
KEEPALIVE_COUNT = 3
"""Unanswered probes after which the connection counts as dead (PostgreSQL)."""


def _sqlite_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _mysql_statement_timeout(seconds: float) -> Callable[[Any, Any], None]:
    def set_timeout(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if "MariaDB" in dbapi_connection.get_server_info():
            cursor.execute("SET SESSION max_statement_time = %s", (seconds,))
        else:  # MySQL's own, which bounds SELECT statements only
            cursor.execute("SET SESSION max_execution_time = %s", (math.ceil(seconds * 1000),))
        cursor.close()

    return set_timeout


def _connect_args(url: URL, timeouts: EngineTimeouts) -> dict[str, Any]:
    """The driver's timeout arguments for ``url``; a setting the URL names itself stays."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        statement = f"-c statement_timeout={math.ceil(timeouts.statement * 1000)}"
        given = url.query.get("options", "")
        given = " ".join(given) if isinstance(given, tuple) else given
        args: dict[str, Any] = {
            "connect_timeout": timeouts.connect,
            "keepalives": 1,
            "keepalives_idle": timeouts.keepalive_idle,
            "keepalives_interval": KEEPALIVE_INTERVAL,
            "keepalives_count": KEEPALIVE_COUNT,
            # Later -c settings win, so a statement_timeout in the URL's options stays.
            "options": " ".join(filter(None, [statement, given])),
        }
    elif backend in ("mysql", "mariadb"):
        # A read waits for the server's answer: longer than a statement may run, so that the
        # server's own timeout ends a slow statement, with an error, before the socket gives up.
        io_timeout = math.ceil(timeouts.statement) + timeouts.connect
        args = {
            "connect_timeout": timeouts.connect,
            "read_timeout": io_timeout,
            "write_timeout": io_timeout,
        }
    else:
        return {}
    return {key: value for key, value in args.items() if key == "options" or key not in url.query}


def make_engine(
    raw_url: str | URL, *, timeouts: EngineTimeouts = DEFAULT_TIMEOUTS, **kwargs: Any
) -> Engine:
    """A sync engine for ``raw_url`` whose every wait on the database is bounded.

    PostgreSQL: ``connect_timeout``, TCP keepalives and ``statement_timeout``; MariaDB:
    ``connect_timeout``, ``read_timeout``, ``write_timeout`` and ``max_statement_time`` (MySQL:
    ``max_execution_time``); every pooled engine: ``pool_timeout``. A statement over its time
    fails, and the kit answers it ``503 database_unavailable``, so no request, and no thread,
    waits on the database without end. SQLite: foreign keys are switched on per connection;
    SQLite ignores them unless each connection asks, and the app relies on one to keep every
    task in its project's tenant. Every engine translates the tenant schema placeholder to the
    shared tables (a tenant session with a schema of its own translates it there instead), so
    the app's own SQL outside tenant sessions, the seed and the tests' second clients reach the
    tables. ``kwargs`` go to ``create_engine`` and win over the defaults.
    """
    url = database_url(raw_url) if isinstance(raw_url, str) else raw_url
    backend = url.get_backend_name()
    kwargs.setdefault("pool_pre_ping", backend != "sqlite")
    dialect = url.get_dialect()
    if (
        "poolclass" not in kwargs
        and issubclass(dialect, DefaultDialect)
        and issubclass(dialect.get_pool_class(url), QueuePool)
    ):
        kwargs.setdefault("pool_timeout", timeouts.pool)
    kwargs["connect_args"] = {**_connect_args(url, timeouts), **kwargs.get("connect_args", {})}
    kwargs.setdefault("execution_options", {"schema_translate_map": {TENANT_SCHEMA: None}})
    engine = create_engine(url, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_foreign_keys)
    elif backend in ("mysql", "mariadb"):
        event.listen(engine, "connect", _mysql_statement_timeout(timeouts.statement))
    return engine
