"""The example app's configuration: read from the environment by ``python -m example_app`` only.

Nothing here runs at import time; :meth:`Settings.from_env` is called by the command line (and
by :func:`~example_app.app.create_app` when it is given no engine), never by the kit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

__all__ = [
    "DEFAULT_BASE_DOMAIN",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_PORT",
    "DEV_JWT_SECRET",
    "MIN_SECRET_BYTES",
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
    jwt_secret: str = DEV_JWT_SECRET
    base_domain: str = DEFAULT_BASE_DOMAIN
    rls: bool = False

    @property
    def uses_dev_secret(self) -> bool:
        """Whether the JWT key is the published development default."""
        return self.jwt_secret == DEV_JWT_SECRET

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``DATABASE_URL``, ``PORT``, ``EXAMPLE_JWT_SECRET``, ``EXAMPLE_BASE_DOMAIN`` and
        ``EXAMPLE_RLS``.

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
        return cls(database_url=url, port=port, jwt_secret=secret, base_domain=base_domain, rls=rls)


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


def _sqlite_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(raw_url: str | URL, **kwargs: Any) -> Engine:
    """A sync engine for ``raw_url``; on SQLite, foreign keys are switched on per connection.

    SQLite ignores foreign keys unless each connection asks for them, and the app relies on
    one to keep every task in its project's tenant.
    """
    url = database_url(raw_url) if isinstance(raw_url, str) else raw_url
    kwargs.setdefault("pool_pre_ping", url.get_backend_name() != "sqlite")
    engine = create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_foreign_keys)
    return engine
