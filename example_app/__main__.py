"""``python -m example_app``: create and seed the database on first start, then serve.

Reads ``DATABASE_URL``, ``PORT``, ``EXAMPLE_JWT_SECRET``, ``EXAMPLE_BASE_DOMAIN``,
``EXAMPLE_RLS``, ``EXAMPLE_RLS_PASSWORD`` and ``EXAMPLE_MAX_TENANTS``; see ``--help``. Once it
serves, the engines are the app's: its shutdown disposes of them, on Ctrl-C and on SIGTERM
alike.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from fastapi_tenancy.postgres import UnsafeDatabaseRole

from .app import create_app
from .auth import PasswordHasher
from .rls import DEFAULT_APP_ROLE, RoleSetupError, owner_bypasses_rls, prepare_rls
from .seed import SEED_USERS, init_database
from .settings import (
    DEFAULT_BASE_DOMAIN,
    DEFAULT_DATABASE_URL,
    DEFAULT_PORT,
    MIN_RLS_PASSWORD_LENGTH,
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
  EXAMPLE_RLS          1 turns PostgreSQL row-level security on under the ORM wall: requests
                       run as the ordinary role {DEFAULT_APP_ROLE}, which the DATABASE_URL role
                       (a superuser or BYPASSRLS, able to create roles) creates at each start
  EXAMPLE_RLS_PASSWORD that role's password, {MIN_RLS_PASSWORD_LENGTH}+ printable ASCII characters;
                       default: derived from EXAMPLE_JWT_SECRET (HMAC-SHA256), the same in
                       every worker
  EXAMPLE_MAX_TENANTS  how many tenants the database may hold (the seeded and suspended ones
                       count): POST /signup answers 403 at the limit; default: no limit
  EXAMPLE_SCHEMA_TENANTS  slugs, comma-separated, of the tenants whose projects, tasks and
                       notes live in a schema of their own (tenant_<slug>); PostgreSQL or
                       MariaDB, not with EXAMPLE_RLS

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
    if settings.rls:
        source = "the JWT key" if settings.rls_password is None else "EXAMPLE_RLS_PASSWORD"
        lines.append(
            f"row-level security: on; requests run as {DEFAULT_APP_ROLE!r} (password from "
            f"{source}), "
            f"/admin/projects as the DATABASE_URL role"
        )
    if settings.uses_dev_secret:
        derives = ""
        if settings.rls and settings.rls_password is None:
            derives = f" and derive the password of {DEFAULT_APP_ROLE!r}"
        lines.append(
            f"WARNING: EXAMPLE_JWT_SECRET is not set; using the development key "
            f"{settings.jwt_secret!r}. Anyone who reads this can mint tokens{derives}: set "
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
    engines = [engine]
    serving = False
    try:
        seeded = init_database(
            engine, PasswordHasher(), reset=reset, schema_tenants=settings.schema_tenants
        )
        app_engine, admin_engine = engine, None
        if settings.rls:
            if not owner_bypasses_rls(engine):
                print(
                    "example_app: EXAMPLE_RLS=1 needs a DATABASE_URL role that is a superuser "
                    "or has BYPASSRLS: it serves /admin/projects across tenants",
                    file=sys.stderr,
                )
                return 2
            try:
                app_url = prepare_rls(engine, password=settings.role_password)
            except RoleSetupError as error:
                print(f"example_app: {error}", file=sys.stderr)
                return 2
            app_engine, admin_engine = make_engine(app_url), engine
            engines.append(app_engine)
        app = create_app(
            app_engine,
            jwt_secret=settings.jwt_secret,
            base_domain=settings.base_domain,
            admin_engine=admin_engine,
            rls=settings.rls,
            own_engines=True,
            max_tenants=settings.max_tenants,
            schema_tenants=settings.schema_tenants,
        )
        if settings.rls:
            try:
                with app_engine.connect():  # the kit checks the role on the first connection
                    pass
            except UnsafeDatabaseRole as error:
                print(f"example_app: {error}", file=sys.stderr)
                return 2
        print(_banner(settings, seeded), flush=True)
        serving = True  # from here on the app's shutdown disposes of the engines
        uvicorn.run(app, host=HOST, port=settings.port, access_log=False, log_config=None)
    finally:
        if not serving:
            for each in engines:
                each.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
