"""Database fixtures: every database test runs on SQLite, PostgreSQL and MariaDB.

Fixtures
    backend         "sqlite", "postgres" or "mariadb". A test that uses any fixture below is
                    parametrized over the three (ids ``sqlite``, ``postgres``, ``mariadb``).
    database        the test's private database, dropped at teardown: a file in ``tmp_path``
                    (SQLite), a fresh ``t_<hex>`` schema (PostgreSQL) or database (MariaDB).
    db_url          the sync URL of that database as a string; self-contained, so the example
                    app or a subprocess can use it (on PostgreSQL the schema travels in the URL's
                    ``options=-csearch_path=...``).
    engine          a sync ``Engine`` on it (pysqlite, psycopg, pymysql).
    async_engine    an ``AsyncEngine`` on it (aiosqlite, asyncpg, aiomysql) with ``NullPool``:
                    no connection outlives its checkout, so the engine works from any event loop
                    (an anyio test's, or the one ``TestClient`` runs the app in).
    any_engine      sync and async in one fixture: six parametrizations, ids ``sqlite-sync`` ...
                    ``mariadb-async``.
    create_tables   ``create_tables(engine, Model, ...)`` creates the tables of SQLModel table
                    classes, ``Table`` objects or a whole ``MetaData`` on either kind of engine;
                    in an async test, ``await create_tables.acreate(async_engine, Model)`` works
                    with pooled async engines too.
    make_database   ``with make_database("postgres") as db:`` another private database.
    anyio_backend   "asyncio"; mark async tests with ``@pytest.mark.anyio``.

``database.create_engine(**kw)`` / ``database.create_async_engine(**kw)`` build extra engines on
the test's database (a pooled async engine, say); the test disposes of those itself.

On SQLite the engines turn ``PRAGMA foreign_keys`` on, so foreign keys behave as on the servers.

Markers
    ``@pytest.mark.backends("postgres")`` runs a test's database fixtures on those backends only.
    ``postgres`` / ``mariadb`` are set on the server parametrizations automatically; mark a test
    by hand only if it reaches a server without these fixtures.

Servers
    ``TENANCY_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
    and ``TENANCY_TEST_MARIADB_URL`` (default ``mysql+pymysql://root@127.0.0.1:3306/test``) name
    the servers; ``off`` disables one. Each server is tried once per session, and only if a
    selected test needs it. Unreachable: its tests are skipped and one line in the terminal
    summary says so, unless ``CI`` is ``true`` or ``1``, where the run stops with an error.
    Tests marked ``citus`` run only when ``TENANCY_TEST_CITUS_URL`` names a Citus coordinator
    (CI has none); otherwise they are deselected and one line in the summary says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema, DropSchema

pytest_plugins = ["pytester"]

BACKENDS = ("sqlite", "postgres", "mariadb")
FLAVORS = ("sync", "async")
CONNECT_TIMEOUT = 3  # seconds, for the one probe per server and session
DROP_LOCK_TIMEOUT = 5  # seconds a teardown DROP waits for a lock before it reports a leak


# --------------------------------------------------------------------------------------------
# Servers: configuration and the once-per-session availability check


@dataclass(frozen=True)
class ServerSpec:
    label: str
    env_var: str
    default_url: str
    default_port: int
    dialects: tuple[str, ...]
    sync_driver: str
    async_driver: str


SERVERS: Mapping[str, ServerSpec] = {
    "postgres": ServerSpec(
        label="PostgreSQL",
        env_var="TENANCY_TEST_POSTGRES_URL",
        default_url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        default_port=5432,
        dialects=("postgresql",),
        sync_driver="psycopg",
        async_driver="asyncpg",
    ),
    "mariadb": ServerSpec(
        label="MariaDB",
        env_var="TENANCY_TEST_MARIADB_URL",
        default_url="mysql+pymysql://root@127.0.0.1:3306/test",
        default_port=3306,
        dialects=("mysql", "mariadb"),
        sync_driver="pymysql",
        async_driver="aiomysql",
    ),
}

_SERVER_MARKS = {"postgres": pytest.mark.postgres, "mariadb": pytest.mark.mariadb}


@dataclass(frozen=True)
class ServerStatus:
    """The verdict on one server: usable (``url`` set), skipped, or fatal (stop the run)."""

    backend: str
    url: URL | None
    message: str = ""
    fatal: bool = False

    @property
    def available(self) -> bool:
        return self.url is not None


def is_ci(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() in {"1", "true", "yes"}


def server_url(backend: str, raw: str) -> URL:
    """Parse a server URL, defaulting the driver to the sync one the kit is tested with."""
    spec = SERVERS[backend]
    url = make_url(raw)
    if url.get_backend_name() not in spec.dialects:
        raise ArgumentError(f"not a {spec.label} URL")
    if "+" not in url.drivername:
        url = url.set(drivername=f"{url.drivername}+{spec.sync_driver}")
    return url


def _error_summary(exc: BaseException) -> str:
    detail = str(getattr(exc, "orig", None) or exc).strip()
    return (detail.splitlines() or [type(exc).__name__])[0][:200]


def _looks_unreachable(detail: str) -> bool:
    lowered = detail.lower()
    return any(
        word in lowered
        for word in ("refused", "timeout", "timed out", "can't connect", "name or service")
    )


def check_server(backend: str, environ: Mapping[str, str] | None = None) -> ServerStatus:
    """Decide whether the tests that need ``backend``'s server run, skip, or stop the session.

    Reads ``environ`` (default ``os.environ``) on every call and caches nothing; the session
    caches the verdict in ``config.stash`` (see ``server_status``).
    """
    env = os.environ if environ is None else environ
    spec = SERVERS[backend]
    raw = env.get(spec.env_var, "").strip()
    if raw.lower() == "off":
        return ServerStatus(
            backend, None, f"{spec.label} suite skipped: disabled by {spec.env_var}=off"
        )
    try:
        url = server_url(backend, raw or spec.default_url)
    except ArgumentError as exc:
        return ServerStatus(
            backend,
            None,
            f"{spec.env_var} is not a usable {spec.label} URL ({exc})",
            fatal=True,
        )

    probe = create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT}
    )
    try:
        with probe.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not usable"; the message says which
        where = f"{url.host or 'localhost'}:{url.port or spec.default_port}"
        detail = _error_summary(exc)
        shown = url.render_as_string(hide_password=True)
        if is_ci(env):
            return ServerStatus(
                backend,
                None,
                f"{spec.label} server required (CI=true) but {shown} is not usable: {detail} "
                f"(set {spec.env_var} to a reachable server)",
                fatal=True,
            )
        if _looks_unreachable(detail):
            problem = f"no server at {where}"
        else:
            problem = f"cannot use {where}: {detail}"
        return ServerStatus(
            backend,
            None,
            f"{spec.label} suite skipped: {problem} "
            f"(set {spec.env_var} or start one; CI=true makes this a failure)",
        )
    finally:
        probe.dispose()
    return ServerStatus(backend, url)


_STATUS_KEY = pytest.StashKey[dict[str, ServerStatus]]()


def server_status(config: pytest.Config, backend: str) -> ServerStatus:
    """The session's verdict on ``backend``'s server, checked on first use."""
    cache = config.stash.setdefault(_STATUS_KEY, {})
    if backend not in cache:
        cache[backend] = check_server(backend)
    return cache[backend]


def _require_server(config: pytest.Config, backend: str) -> URL:
    status = server_status(config, backend)
    if status.url is None:
        if status.fatal:
            pytest.fail(status.message, pytrace=False)
        pytest.skip(status.message)
    return status.url


# --------------------------------------------------------------------------------------------
# Hooks


def pytest_report_header(config: pytest.Config) -> str:
    shown = []
    for spec in SERVERS.values():
        raw = os.environ.get(spec.env_var, "").strip() or spec.default_url
        try:
            value = "off" if raw.lower() == "off" else make_url(raw).render_as_string()
        except ArgumentError:
            value = "<invalid URL>"
        shown.append(f"{spec.label} {value}")
    ci = "; CI: an unreachable server fails the run" if is_ci() else ""
    return f"databases: SQLite (a file per test), {', '.join(shown)}{ci}"


def _directly_parametrized(metafunc: pytest.Metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        argnames = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(argnames, str):
            argnames = [n.strip() for n in argnames.split(",")]
        if name in argnames:
            return True
    return False


def _wanted_backends(metafunc: pytest.Metafunc) -> tuple[str, ...]:
    mark = metafunc.definition.get_closest_marker("backends")
    if mark is None:
        return BACKENDS
    unknown = set(mark.args) - set(BACKENDS)
    if unknown or not mark.args:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: @pytest.mark.backends takes some of {BACKENDS}, "
            f"got {mark.args}"
        )
    return tuple(b for b in BACKENDS if b in mark.args)


def _marks(backend: str) -> list[pytest.MarkDecorator]:
    return [_SERVER_MARKS[backend]] if backend in _SERVER_MARKS else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "backend" not in names or _directly_parametrized(metafunc, "backend"):
        return
    wanted = _wanted_backends(metafunc)
    if "any_engine" in names:
        metafunc.parametrize(
            ("backend", "engine_flavor"),
            [pytest.param(b, f, id=f"{b}-{f}", marks=_marks(b)) for b in wanted for f in FLAVORS],
            indirect=True,
        )
    else:
        metafunc.parametrize(
            "backend", [pytest.param(b, id=b, marks=_marks(b)) for b in wanted], indirect=True
        )


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: probe only what will run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fatal = []
    for backend in SERVERS:
        needing = [item for item in items if item.get_closest_marker(backend)]
        if not needing:
            continue
        status = server_status(config, backend)
        if status.available:
            continue
        if status.fatal:
            fatal.append(status.message)
            continue
        skip = pytest.mark.skip(reason=status.message)
        for item in needing:
            item.add_marker(skip)
    if fatal:
        pytest.exit("\n".join(fatal), returncode=pytest.ExitCode.USAGE_ERROR)
    if not os.environ.get(CITUS_URL_VARIABLE):
        citus = [item for item in items if item.get_closest_marker("citus")]
        if citus:
            items[:] = [item for item in items if not item.get_closest_marker("citus")]
            config.hook.pytest_deselected(items=citus)
            config.stash[_CITUS_KEY] = len(citus)


CITUS_URL_VARIABLE = "TENANCY_TEST_CITUS_URL"
_CITUS_KEY = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    citus = config.stash.get(_CITUS_KEY, 0)
    if citus:
        terminalreporter.write_line(
            f"Citus suite not run ({citus} tests): set TENANCY_TEST_CITUS_URL to a coordinator's "
            "URL to run it (docs/citus.md); CI has no Citus",
            yellow=True,
        )
    statuses = config.stash.get(_STATUS_KEY, {})
    for backend in sorted(statuses):
        status = statuses[backend]
        if not status.available and not status.fatal:
            terminalreporter.write_line(status.message, yellow=True)


# --------------------------------------------------------------------------------------------
# Private databases


def _sqlite_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@dataclass(frozen=True)
class IsolatedDatabase:
    """One test's private database and how to reach it, sync and async."""

    backend: str
    url: URL
    async_url: URL
    name: str | None = None  # the schema (PostgreSQL) or database (MariaDB) made for the test
    server_url: URL | None = None  # the server's own URL, outside the private database
    async_connect_args: Mapping[str, Any] = field(default_factory=dict)

    def create_engine(self, **kwargs: Any) -> Engine:
        engine = create_engine(self.url, **kwargs)
        if self.backend == "sqlite":
            event.listen(engine, "connect", _sqlite_foreign_keys)
        return engine

    def create_async_engine(self, **kwargs: Any) -> AsyncEngine:
        """An ``AsyncEngine`` on this database, with ``NullPool`` unless ``poolclass`` is given."""
        kwargs.setdefault("poolclass", NullPool)
        kwargs["connect_args"] = {**self.async_connect_args, **kwargs.get("connect_args", {})}
        engine = create_async_engine(self.async_url, **kwargs)
        if self.backend == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_foreign_keys)
        return engine


def _postgres_database(server: URL, schema: str) -> IsolatedDatabase:
    # application_name tags the test's sessions, so a teardown can end the ones a test leaked.
    options = " ".join(filter(None, [server.query.get("options"), f"-csearch_path={schema}"]))
    sync_url = server.update_query_dict({"options": options, "application_name": schema})
    async_url = server.set(drivername=f"postgresql+{SERVERS['postgres'].async_driver}")
    async_url = async_url.difference_update_query(["options", "application_name"])
    return IsolatedDatabase(
        backend="postgres",
        url=sync_url,
        async_url=async_url,
        name=schema,
        server_url=server,
        async_connect_args={"server_settings": {"search_path": schema, "application_name": schema}},
    )


def _mariadb_database(server: URL, database: str) -> IsolatedDatabase:
    sync_url = server.set(database=database)
    dialect = sync_url.get_backend_name()
    async_url = sync_url.set(drivername=f"{dialect}+{SERVERS['mariadb'].async_driver}")
    return IsolatedDatabase(
        backend="mariadb", url=sync_url, async_url=async_url, name=database, server_url=server
    )


def _drop(admin: Engine, backend: str, name: str) -> None:
    with admin.begin() as conn:
        if backend == "postgres":
            conn.execute(
                text("SELECT set_config('lock_timeout', :t, true)"), {"t": f"{DROP_LOCK_TIMEOUT}s"}
            )
        else:
            conn.execute(text("SET SESSION lock_wait_timeout = :t"), {"t": DROP_LOCK_TIMEOUT})
        conn.execute(DropSchema(name, cascade=backend == "postgres", if_exists=True))


def _end_sessions(admin: Engine, backend: str, name: str) -> None:
    """End the server sessions still inside ``name`` (connections a test never gave back)."""
    with admin.connect() as conn:
        if backend == "postgres":
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            return
        ids = conn.execute(
            text(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = :name AND id <> CONNECTION_ID()"
            ),
            {"name": name},
        ).scalars()
        for session_id in ids.all():
            with contextlib.suppress(SQLAlchemyError):  # it may have ended meanwhile
                conn.execute(text(f"KILL CONNECTION {int(session_id)}"))


def _drop_private(admin: Engine, backend: str, name: str) -> None:
    try:
        _drop(admin, backend, name)
        return
    except SQLAlchemyError as exc:
        reason = _error_summary(exc)
    # A connection the test left in a transaction holds a lock: end it, drop, then report it.
    _end_sessions(admin, backend, name)
    _drop(admin, backend, name)
    kind = "schema" if backend == "postgres" else "database"
    raise RuntimeError(
        f"the test left a connection open in a transaction on {backend} {kind} {name}, so it "
        f"could not be dropped ({reason}); the fixture ended that session and dropped {name}"
    )


@contextlib.contextmanager
def isolated_database(
    backend: str, server: URL | None = None, directory: Path | None = None
) -> Iterator[IsolatedDatabase]:
    """Create a private database for the block and drop it afterwards.

    SQLite: a new file in ``directory``. PostgreSQL: a ``t_<hex>`` schema on ``server``, made
    the connections' only ``search_path`` entry. MariaDB: a ``t_<hex>`` database on ``server``.
    The name is generated and always passes through SQLAlchemy's identifier quoting.
    """
    name = f"t_{secrets.token_hex(6)}"
    if backend == "sqlite":
        if directory is None:
            raise ValueError("SQLite needs a directory for its database file")
        url = URL.create("sqlite", database=str(directory / f"{name}.sqlite3"))
        yield IsolatedDatabase("sqlite", url, url.set(drivername="sqlite+aiosqlite"))
        return
    if server is None:
        raise ValueError(f"{backend} needs the server's URL")

    admin = create_engine(server, poolclass=NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(CreateSchema(name))
        try:
            if backend == "postgres":
                yield _postgres_database(server, name)
            else:
                yield _mariadb_database(server, name)
        finally:
            _drop_private(admin, backend, name)
    finally:
        admin.dispose()


# --------------------------------------------------------------------------------------------
# Creating tables

TableSource = Any  # a SQLModel table class, a Table, a MetaData, or an iterable of those


def _tables_by_metadata(items: Iterable[TableSource]) -> list[tuple[MetaData, list[Table] | None]]:
    groups: dict[int, tuple[MetaData, list[Table] | None]] = {}

    def add(item: TableSource) -> None:
        if isinstance(item, MetaData):
            groups[id(item)] = (item, None)
            return
        table = item if isinstance(item, Table) else getattr(item, "__table__", None)
        if isinstance(table, Table):
            _metadata, tables = groups.setdefault(id(table.metadata), (table.metadata, []))
            if tables is not None and table not in tables:
                tables.append(table)
            return
        if isinstance(item, Iterable) and not isinstance(item, str | bytes):
            for sub in item:
                add(sub)
            return
        raise TypeError(
            f"create_tables takes SQLModel table classes (table=True), Table objects or a "
            f"MetaData, not {item!r}"
        )

    add(items)
    return list(groups.values())


def _create_all(conn: Connection, groups: list[tuple[MetaData, list[Table] | None]]) -> None:
    for metadata, tables in groups:
        metadata.create_all(conn, tables=tables)


def _run_in_private_loop(make_coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # A thread of its own has no running loop, so this works from sync and async tests alike.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(make_coro())).result()


class TableCreator:
    """``create_tables(engine, *models)``: create the tables in the engine's database.

    ``models`` are SQLModel table classes, ``Table`` objects, a ``MetaData`` (all its tables)
    or lists of those. Name every table a foreign key points to. Works on a sync ``Engine`` and
    on a pool-less ``AsyncEngine`` such as the ``async_engine`` fixture (it runs ``run_sync`` on
    a private event loop). For a pooled ``AsyncEngine``, in an async test:
    ``await create_tables.acreate(engine, *models)``.
    """

    def __call__(self, engine: Engine | AsyncEngine, *models: TableSource) -> None:
        groups = _tables_by_metadata(models)
        if isinstance(engine, AsyncEngine):
            if not isinstance(engine.sync_engine.pool, NullPool):
                raise TypeError(
                    "create_tables() needs an AsyncEngine with NullPool (its connections would "
                    "belong to a private event loop); use `await create_tables.acreate(...)`"
                )
            _run_in_private_loop(lambda: self._acreate(engine, groups))
            return
        with engine.begin() as conn:
            _create_all(conn, groups)

    async def acreate(self, engine: AsyncEngine, *models: TableSource) -> None:
        await self._acreate(engine, _tables_by_metadata(models))

    async def _acreate(
        self, engine: AsyncEngine, groups: list[tuple[MetaData, list[Table] | None]]
    ) -> None:
        async with engine.begin() as conn:
            await conn.run_sync(_create_all, groups)


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database under test; parametrized by ``pytest_generate_tests`` above."""
    name: str | None = getattr(request, "param", None)
    if name not in BACKENDS:
        raise pytest.UsageError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


@pytest.fixture
def engine_flavor(request: pytest.FixtureRequest) -> str:
    """The engine kind for ``any_engine``, "sync" or "async"; set by ``pytest_generate_tests``."""
    flavor: str | None = getattr(request, "param", None)
    if flavor not in FLAVORS:
        raise pytest.UsageError(f"engine_flavor must be one of {FLAVORS}, got {flavor!r}")
    return flavor


@pytest.fixture
def make_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[str], contextlib.AbstractContextManager[IsolatedDatabase]]:
    """``with make_database("mariadb") as db:`` a private database, dropped when the block ends."""

    def make(backend: str) -> contextlib.AbstractContextManager[IsolatedDatabase]:
        server = None if backend == "sqlite" else _require_server(request.config, backend)
        return isolated_database(backend, server, tmp_path)

    return make


@pytest.fixture
def database(
    backend: str,
    make_database: Callable[[str], contextlib.AbstractContextManager[IsolatedDatabase]],
) -> Iterator[IsolatedDatabase]:
    with make_database(backend) as db:
        yield db


@pytest.fixture
def db_url(database: IsolatedDatabase) -> str:
    return database.url.render_as_string(hide_password=False)


@pytest.fixture
def engine(database: IsolatedDatabase) -> Iterator[Engine]:
    sync_engine = database.create_engine()
    try:
        yield sync_engine
    finally:
        sync_engine.dispose()


@pytest.fixture
def async_engine(database: IsolatedDatabase) -> Iterator[AsyncEngine]:
    engine = database.create_async_engine()
    try:
        yield engine
    finally:
        # NullPool holds no connections, so this needs no event loop.
        engine.sync_engine.dispose()


@pytest.fixture
def any_engine(
    request: pytest.FixtureRequest, backend: str, engine_flavor: str
) -> Engine | AsyncEngine:
    # ``backend`` is requested so that a test asking only for ``any_engine`` is parametrized.
    chosen: Engine | AsyncEngine = request.getfixturevalue(
        "async_engine" if engine_flavor == "async" else "engine"
    )
    return chosen


@pytest.fixture
def create_tables() -> TableCreator:
    return TableCreator()


@pytest.fixture
def probe_server() -> Callable[..., ServerStatus]:
    """``check_server`` itself, for the tests of these fixtures: no session cache involved."""
    return check_server


@pytest.fixture
def world(
    engine: Engine, any_engine: Engine | AsyncEngine, create_tables: TableCreator
) -> Iterator[Any]:
    """The lifecycle tests' seeded tenants, projects and tasks behind an app whose registry
    they are (``tests/purge_models.py``), on every database and engine flavour."""
    from purge_models import TABLES, World

    create_tables(engine, *TABLES)
    made = World(engine, any_engine)
    try:
        yield made
    finally:
        made.close()
