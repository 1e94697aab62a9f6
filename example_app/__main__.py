"""``python -m example_app``: create and seed the database on first start, then serve.

Reads ``DATABASE_URL``, ``PORT``, ``EXAMPLE_JWT_SECRET`` and ``EXAMPLE_BASE_DOMAIN``; see
``--help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from .app import create_app
from .auth import PasswordHasher
from .seed import SEED_USERS, init_database
from .settings import (
    DEFAULT_BASE_DOMAIN,
    DEFAULT_DATABASE_URL,
    DEFAULT_PORT,
    MIN_SECRET_BYTES,
    Settings,
    database_url,
    make_engine,
)

HOST = "127.0.0.1"
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _logins() -> str:
    lines = []
    for user in SEED_USERS:
        where = ", ".join(f"{tenant} ({role})" for tenant, role in user.tenants)
        if user.platform_admin:
            where = "platform admin, no tenant"
        lines.append(f"  {user.email:<20} {user.password:<11} {where}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m example_app",
        description=(
            "Serve the fastapi_tenancy example API on http://127.0.0.1:PORT. The first start "
            "creates and seeds the database; later starts keep its data."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""\
environment:
  DATABASE_URL         default {DEFAULT_DATABASE_URL}; e.g. postgresql+psycopg://user:pw@host/db
                       or mysql+pymysql://user:pw@host/db
  PORT                 default {DEFAULT_PORT}
  EXAMPLE_JWT_SECRET   the HS256 key, at least {MIN_SECRET_BYTES} bytes; a development default
                       (printed at start) is used when unset
  EXAMPLE_BASE_DOMAIN  default {DEFAULT_BASE_DOMAIN}: acme.{DEFAULT_BASE_DOMAIN} names tenant acme

seeded logins (email, password, tenants):
{_logins()}
""",
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="drop the app's tables and seed them afresh (deletes your changes)",
    )
    return parser


def _banner(settings: Settings, seeded: bool) -> str:
    url = f"http://{HOST}:{settings.port}"
    shown_db = database_url(settings.database_url).render_as_string(hide_password=True)
    state = "created and seeded" if seeded else "existing data kept (--reset reseeds)"
    lines = [
        f"example_app: serving {url}  (API docs: {url}/docs)",
        f"database: {shown_db}: {state}",
    ]
    if settings.uses_dev_secret:
        lines.append(
            f"WARNING: EXAMPLE_JWT_SECRET is not set; using the development key "
            f"{settings.jwt_secret!r}. Anyone who reads this can mint tokens: set "
            f"EXAMPLE_JWT_SECRET to a random value of {MIN_SECRET_BYTES}+ bytes outside "
            f"local development."
        )
    login = '{"email":"alice@acme.test","password":"alice-pass"}'
    lines += [
        "seeded logins (email, password, tenants):",
        _logins(),
        "try it (logs in as alice and lists acme's projects):",
        f"  TOKEN=$(curl -s -X POST {url}/auth/login -H 'Content-Type: application/json' "
        f'-d \'{login}\' | sed -E \'s/.*"access_token":"([^"]*)".*/\\1/\') && '
        f'curl -s {url}/projects -H "Authorization: Bearer $TOKEN"',
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example app; returns the exit status."""
    args = _parser().parse_args(argv)
    reset: bool = args.reset
    try:
        settings = Settings.from_env()
    except ValueError as error:
        print(f"example_app: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)

    engine = make_engine(settings.database_url)
    try:
        seeded = init_database(engine, PasswordHasher(), reset=reset)
        print(_banner(settings, seeded), flush=True)
        app = create_app(engine, jwt_secret=settings.jwt_secret, base_domain=settings.base_domain)
        uvicorn.run(app, host=HOST, port=settings.port, access_log=False, log_config=None)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
