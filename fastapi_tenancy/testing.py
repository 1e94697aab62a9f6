"""pytest plugin: test a multitenant FastAPI app as its tenants, with no tenant leaking out.

Installed with the package and loaded by pytest through the ``pytest11`` entry point. Tell it
which app to test by overriding one fixture, in your ``conftest.py``::

    @pytest.fixture
    def tenancy_app():
        return create_app()

Fixtures
    ``tenancy_app``           your app; override it (the default fails with a message saying so)
    ``app_tenancy``           the :class:`~fastapi_tenancy.Tenancy` installed on it
    ``tenancy_signing_key``   the key test tokens are signed with; ``None`` (the default) uses
                              the app's own HMAC secret; override it with the private key for
                              RS*/ES* apps and apps that fetch their keys from a JWKS
    ``tenancy_admin_claims``  the claims a token carries for ``admin=True``
                              (``{"roles": ["admin"]}`` by default)
    ``tenancy_token``         ``tenancy_token("acme", as_user="ann@acme.test", **claims)``: a
                              token the app accepts (its key, algorithm, audience, issuer)
    ``tenant_client``         ``tenant_client("acme", as_user=..., admin=False)``: a Starlette
                              ``TestClient`` sending every request as that tenant, the way the app
                              resolves tenants (token claim, subdomain or header, in chain order)
    ``async_tenant_client``   the same as an ``httpx.AsyncClient`` on ``httpx.ASGITransport``
    ``tenant_clients``        the :class:`TenantClients` behind the three above
    ``bound_tenant``          ``bound_tenant("acme")`` binds a tenant for the rest of the test
                              (unit tests of code that reads the tenant or opens
                              ``tenancy.session()``); it is unbound afterwards

Isolation between tests: whatever a test binds (with ``bound_tenant``, or by entering a
binding it never leaves) is undone when the test ends, fixtures' bindings included, so no
tenant reaches the next test; the tenant a request sees is always the one its middleware
resolved. A tenant bound by a sync fixture is visible inside ``async def`` tests too.

:func:`assert_tenant_isolation` creates data as each of several tenants and asserts that no
response to one tenant contains another's.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import secrets
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import jwt
import pytest

from .context import TenantContext, bind, checked_key, get_tenant_context, unbind
from .keys import tenant_key_of
from .middleware import TenancyMiddleware
from .resolvers import HeaderResolver, JWTClaimResolver, SubdomainResolver
from .tenancy import Tenancy

if TYPE_CHECKING:
    import httpx
    from starlette.testclient import TestClient

__all__ = [
    "IsolationRoute",
    "TenantClients",
    "app_tenancy",
    "assert_tenant_isolation",
    "async_tenant_client",
    "bound_tenant",
    "find_tenancy",
    "tenancy_admin_claims",
    "tenancy_app",
    "tenancy_signing_key",
    "tenancy_token",
    "tenant_client",
    "tenant_clients",
]

Via = Literal["token", "subdomain", "header"]
"""How a client names its tenant: a token claim, the Host's subdomain, or a header."""

DEFAULT_ADMIN_CLAIMS: Mapping[str, Any] = MappingProxyType({"roles": ["admin"]})
_HMAC = frozenset({"HS256", "HS384", "HS512"})


def find_tenancy(app: Any) -> Tenancy:
    """The :class:`Tenancy` that ``tenancy.install(app)`` put on ``app``."""
    for middleware in getattr(app, "user_middleware", ()):
        cls = getattr(middleware, "cls", None)
        if isinstance(cls, type) and issubclass(cls, TenancyMiddleware):
            tenancy = getattr(middleware, "kwargs", {}).get("tenancy")
            if isinstance(tenancy, Tenancy):
                return tenancy
    raise LookupError(
        f"No Tenancy is installed on {app!r}: call tenancy.install(app), or override the "
        "app_tenancy fixture to return it."
    )


class TenantClients:
    """Mints tokens and builds clients that talk to ``app`` as a given tenant.

    The tenant is sent the way the app resolves it: the first resolver of its chain that a
    client can satisfy decides (a ``JWTClaimResolver`` whose key can sign, a
    ``SubdomainResolver`` or a ``HeaderResolver``); pass ``via=`` to choose. ``as_user`` puts
    the principal claim (``sub`` unless the Tenancy says otherwise) in a token, ``admin``
    adds ``admin_claims``; both need a ``JWTClaimResolver``.

        clients = TenantClients(app)
        r = clients.client("acme", as_user="ann@acme.test").get("/projects")
    """

    def __init__(
        self,
        app: Any,
        *,
        tenancy: Tenancy | None = None,
        signing_key: Any = None,
        admin_claims: Mapping[str, Any] = DEFAULT_ADMIN_CLAIMS,
        base_url: str = "http://testserver",
    ) -> None:
        self.app = app
        self.tenancy = tenancy if tenancy is not None else find_tenancy(app)
        self.signing_key = signing_key
        self.admin_claims = dict(admin_claims)
        self.base_url = base_url

    @property
    def token_resolver(self) -> JWTClaimResolver | None:
        """The first ``JWTClaimResolver`` of the app's chain, if any."""
        for resolver in self.tenancy.chain.resolvers:
            if isinstance(resolver, JWTClaimResolver):
                return resolver
        return None

    def spelling(self, tenant: Any) -> str:
        """How a request names ``tenant`` (a key of the app's key type, a tenant record, or a
        string sent as it is, even a key the app refuses)."""
        key = tenant_key_of(tenant)
        return key if isinstance(key, str) else self.tenancy.keys.format(key)

    def token(
        self,
        tenant: Any = None,
        *,
        as_user: str | None = None,
        admin: bool = False,
        expires_in: float | None = 3600,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A token the app's ``JWTClaimResolver`` accepts, naming ``tenant`` in its claim.

        Audience and issuer are the resolver's, ``iat`` is now and ``exp`` is ``expires_in``
        seconds later (``None`` leaves ``exp`` out, a negative value makes an expired token).
        ``claims`` are added last and win.
        """
        resolver = self.token_resolver
        if resolver is None:
            raise LookupError("The app has no JWTClaimResolver, so it accepts no tokens.")
        key, algorithm, kid = self._signing(resolver)
        now = int(time.time())
        payload: dict[str, Any] = {"iat": now}
        if expires_in is not None:
            payload["exp"] = now + int(expires_in)
        if resolver.audience is not None:
            audience = resolver.audience
            payload["aud"] = audience if isinstance(audience, str) else audience[0]
        if resolver.issuer is not None:
            payload["iss"] = resolver.issuer
        if tenant is not None:
            payload[resolver.claim] = self.spelling(tenant)
        if as_user is not None:
            payload[self.tenancy.principal_claim] = as_user
        if admin:
            payload.update(self.admin_claims)
        payload.update(claims)
        token_headers = {"kid": kid} if kid is not None else {}
        token_headers.update(headers or {})
        return jwt.encode(payload, key, algorithm=algorithm, headers=token_headers or None)

    def request_options(
        self,
        tenant: Any,
        *,
        as_user: str | None = None,
        admin: bool = False,
        via: Via | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> tuple[str, dict[str, str]]:
        """The base URL and headers that make a request come from ``tenant``."""
        headers: dict[str, str] = {}
        base_url = self.base_url
        if tenant is not None:
            tenant = self.spelling(tenant)
            via = via or self._default_via()
        wants_token = via == "token" or as_user is not None or admin or bool(claims)
        if tenant is not None and via == "header":
            header = next(
                (r for r in self.tenancy.chain.resolvers if isinstance(r, HeaderResolver)), None
            )
            if header is None:
                raise LookupError("The app has no HeaderResolver.")
            headers[header.name] = tenant
        elif tenant is not None and via == "subdomain":
            subdomain = next(
                (r for r in self.tenancy.chain.resolvers if isinstance(r, SubdomainResolver)),
                None,
            )
            if subdomain is None:
                raise LookupError("The app has no SubdomainResolver.")
            scheme = self.base_url.partition("://")[0] or "http"
            base_url = f"{scheme}://{tenant}.{subdomain.base_domain}"
        if wants_token:
            resolver = self.token_resolver
            if resolver is None:
                raise LookupError(
                    "as_user, admin and claims need a token, and the app has no JWTClaimResolver."
                )
            token = self.token(
                tenant if via == "token" else None,
                as_user=as_user,
                admin=admin,
                **dict(claims or {}),
            )
            headers[resolver.header] = f"Bearer {token}"
        return base_url, headers

    def client(
        self,
        tenant: Any = None,
        *,
        as_user: str | None = None,
        admin: bool = False,
        via: Via | None = None,
        claims: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> TestClient:
        """A Starlette ``TestClient`` whose every request comes from ``tenant``.

        ``kwargs`` go to ``TestClient`` (headers given there are added). The app's lifespan
        runs only if you enter the client with ``with``.
        """
        TestClient = _test_client_class()
        base_url, headers = self.request_options(
            tenant, as_user=as_user, admin=admin, via=via, claims=claims
        )
        headers.update(kwargs.pop("headers", None) or {})
        return TestClient(self.app, base_url=base_url, headers=headers, **kwargs)

    def async_client(
        self,
        tenant: Any = None,
        *,
        as_user: str | None = None,
        admin: bool = False,
        via: Via | None = None,
        claims: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` on ``httpx.ASGITransport`` whose requests come from ``tenant``.

        Use it as ``async with``. The app runs in the test's own event loop and task.
        """
        import httpx

        base_url, headers = self.request_options(
            tenant, as_user=as_user, admin=admin, via=via, claims=claims
        )
        headers.update(kwargs.pop("headers", None) or {})
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers, **kwargs)

    def _default_via(self) -> Via:
        for resolver in self.tenancy.chain.resolvers:
            if isinstance(resolver, JWTClaimResolver):
                if self._can_sign(resolver):
                    return "token"
            elif isinstance(resolver, SubdomainResolver):
                return "subdomain"
            elif isinstance(resolver, HeaderResolver):
                return "header"
        raise LookupError(
            f"Cannot tell how to send a tenant to this app: its resolvers are "
            f"{list(self.tenancy.chain.resolvers)!r}. Give the signing key (the "
            "tenancy_signing_key fixture) for a JWTClaimResolver, or pass headers= or "
            "base_url= yourself."
        )

    def _can_sign(self, resolver: JWTClaimResolver) -> bool:
        return self.signing_key is not None or (
            resolver.jwks_client is None and bool(_HMAC.intersection(resolver.algorithms))
        )

    def _signing(self, resolver: JWTClaimResolver) -> tuple[Any, str, str | None]:
        key = self.signing_key
        kid: str | None = None
        if isinstance(key, jwt.PyJWK):
            kid = key.key_id
            key = key.key
        if key is None:
            if not self._can_sign(resolver):
                raise LookupError(
                    "The app verifies tokens with a public key or a JWKS, so the plugin cannot "
                    "sign them: override the tenancy_signing_key fixture with the private key "
                    "(a jwt.PyJWK to send its kid)."
                )
            # The resolver keeps its prepared HMAC secret; signing with it is what the app's
            # own token issuer does.
            key = resolver._key
        for name in resolver.algorithms:
            algorithm = jwt.get_algorithm_by_name(name)
            try:
                algorithm.prepare_key(key)
            except (jwt.InvalidKeyError, TypeError, ValueError):
                continue
            return key, name, kid
        raise LookupError(
            f"The signing key fits none of the app's algorithms {list(resolver.algorithms)}."
        )


def _test_client_class() -> type[TestClient]:
    # Starlette >= 1 warns once, on import, that it prefers httpx2 over httpx for TestClient.
    # That is Starlette's choice of transport, not the user's doing: keep it out of suites that
    # turn warnings into errors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    return TestClient


# --------------------------------------------------------------------------------------------
# The isolation check


@dataclass(frozen=True, slots=True)
class IsolationRoute:
    """One route of :func:`assert_tenant_isolation`.

    Non-GET routes create data: string values of ``json`` may hold ``{marker}`` (a value unique
    to the tenant and the run, which must come back in read responses) and ``{tenant}``. In
    paths, ``{id}`` is the ``id`` of the first thing the tenant created, ``{tenant}`` its key.
    Strings work too: ``"GET /projects"``, and ``("POST /projects", {"name": "{marker}"})``.
    """

    method: str
    path: str
    json: Any = None

    @classmethod
    def parse(cls, spec: IsolationRoute | str | tuple[str, Any]) -> IsolationRoute:
        """Turn ``"GET /path"`` or ``("POST /path", body)`` into a route."""
        if isinstance(spec, IsolationRoute):
            return spec
        body: Any = None
        if isinstance(spec, tuple):
            spec, body = spec
        method, _, path = spec.strip().partition(" ")
        if not path:
            method, path = "GET", method
        return cls(method.upper(), path.strip(), body)


def _fill(value: Any, replacements: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for name, replacement in replacements.items():
            value = value.replace("{" + name + "}", replacement)
        return value
    if isinstance(value, Mapping):
        return {key: _fill(item, replacements) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_fill(item, replacements) for item in value]
    return value


def assert_tenant_isolation(
    app: Any,
    *,
    tenants: Sequence[Any],
    routes: Sequence[IsolationRoute | str | tuple[str, Any]],
    users: Mapping[str, str] | None = None,
    id_field: str = "id",
    foreign_status: Sequence[int] | None = (403, 404),
    **client_options: Any,
) -> None:
    """Create data as each tenant and assert that no tenant's responses show another's data.

    ``app`` is the application (or a :class:`TenantClients`). Every non-GET route is called as
    every tenant, tenants interleaved, with a marker unique to the tenant; then every GET route
    is called as every tenant, and a response holding another tenant's marker fails the check.
    A GET path with ``{id}`` is also asked with the other tenants' ids and must answer one of
    ``foreign_status`` (``None`` skips that). Each tenant must see its own marker somewhere,
    or the check would prove nothing. ``tenants`` are keys of the app's key type, their
    string spellings, or tenant records; ``users`` names the user each tenant acts as (by the
    tenant's spelling); ``client_options`` go to :class:`TenantClients`.

        assert_tenant_isolation(
            app,
            tenants=["acme", "globex"],
            routes=[
                ("POST /projects", {"name": "{marker}"}),
                "GET /projects",
                "GET /projects/{id}",
            ],
        )
    """
    clients = app if isinstance(app, TenantClients) else TenantClients(app, **client_options)
    tenants = [clients.spelling(tenant) for tenant in tenants]
    if len(set(tenants)) < 2:
        raise ValueError("assert_tenant_isolation needs at least two different tenants.")
    parsed = [IsolationRoute.parse(spec) for spec in routes]
    writes = [route for route in parsed if route.method != "GET"]
    reads = [route for route in parsed if route.method == "GET"]
    if not writes or not reads:
        raise ValueError("Give at least one route that creates data and one GET route.")
    if not any("{marker}" in str(route.json) for route in writes):
        raise ValueError('Put "{marker}" in a field of a created body that GET routes return.')

    run = secrets.token_hex(4)
    markers = {tenant: f"iso{run}n{index}" for index, tenant in enumerate(tenants)}
    ids: dict[str, str] = {}
    users = users or {}
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        http = {tenant: clients.client(tenant, as_user=users.get(tenant)) for tenant in tenants}
        for client in http.values():
            stack.callback(client.close)

        def values(tenant: str) -> dict[str, str]:
            found = {"tenant": tenant, "marker": markers[tenant]}
            if tenant in ids:
                found["id"] = ids[tenant]
            return found

        for route in writes:
            for tenant in tenants:
                path = _fill(route.path, values(tenant))
                response = http[tenant].request(
                    route.method, path, json=_fill(route.json, values(tenant))
                )
                if response.status_code >= 300:
                    raise AssertionError(
                        f"{tenant} could not create data with {route.method} {path}: "
                        f"{response.status_code} {response.text}"
                    )
                created = response.json() if response.content else None
                if tenant not in ids and isinstance(created, Mapping) and id_field in created:
                    ids[tenant] = str(created[id_field])

        seen_own = dict.fromkeys(tenants, False)
        for tenant in tenants:
            for route in reads:
                owners = [tenant]
                if "{id}" in route.path:
                    owners += [other for other in tenants if other != tenant]
                for owner in owners:
                    path = _fill(route.path, {**values(owner), "tenant": tenant})
                    response = http[tenant].get(path)
                    body = response.text
                    for other in tenants:
                        if other != tenant and markers[other] in body:
                            problems.append(
                                f"GET {path} as {tenant} answered {response.status_code} with "
                                f"data of {other}"
                            )
                    if owner != tenant:
                        if foreign_status is not None and response.status_code not in tuple(
                            foreign_status
                        ):
                            problems.append(
                                f"GET {path} as {tenant}, with an id of {owner}, answered "
                                f"{response.status_code}, not one of {tuple(foreign_status)}"
                            )
                    elif response.status_code < 300 and markers[tenant] in body:
                        seen_own[tenant] = True
        for tenant, seen in seen_own.items():
            if not seen:
                problems.append(
                    f"no GET route showed {tenant} its own data, so the check proves nothing"
                )
    if problems:
        raise AssertionError("Tenant isolation failed:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def tenancy_app() -> Any:
    """The application under test. Override this fixture in your ``conftest.py``."""
    pytest.fail(
        "fastapi_tenancy's pytest plugin needs your app: define a fixture named tenancy_app "
        "in conftest.py that returns it, e.g.\n\n"
        "    @pytest.fixture\n"
        "    def tenancy_app():\n"
        "        return create_app()\n",
        pytrace=False,
    )


@pytest.fixture
def app_tenancy(tenancy_app: Any) -> Tenancy:
    """The :class:`Tenancy` installed on ``tenancy_app``."""
    try:
        return find_tenancy(tenancy_app)
    except LookupError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def tenancy_signing_key() -> Any:
    """The key test tokens are signed with; ``None`` signs with the app's own HMAC secret.

    Override it with the private key when the app verifies with a public key or a JWKS (a
    ``jwt.PyJWK`` also sends its ``kid``).
    """
    return None


@pytest.fixture
def tenancy_admin_claims() -> Mapping[str, Any]:
    """The claims a token carries for ``admin=True``; override to match your ``is_admin``."""
    return DEFAULT_ADMIN_CLAIMS


@pytest.fixture
def tenant_clients(
    tenancy_app: Any,
    app_tenancy: Tenancy,
    tenancy_signing_key: Any,
    tenancy_admin_claims: Mapping[str, Any],
) -> TenantClients:
    """The :class:`TenantClients` for ``tenancy_app``: tokens, clients, the isolation check."""
    return TenantClients(
        tenancy_app,
        tenancy=app_tenancy,
        signing_key=tenancy_signing_key,
        admin_claims=tenancy_admin_claims,
    )


@pytest.fixture
def tenancy_token(tenant_clients: TenantClients) -> Callable[..., str]:
    """``tenancy_token(tenant=None, *, as_user=None, admin=False, expires_in=3600, **claims)``."""
    return tenant_clients.token


@pytest.fixture
def tenant_client(tenant_clients: TenantClients) -> Iterator[Callable[..., TestClient]]:
    """``tenant_client("acme", as_user=None, admin=False, via=None, **kwargs)``: a ``TestClient``
    acting as that tenant; closed after the test."""
    made: list[TestClient] = []

    def make(tenant: Any = None, **options: Any) -> TestClient:
        client = tenant_clients.client(tenant, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def async_tenant_client(tenant_clients: TenantClients) -> Callable[..., httpx.AsyncClient]:
    """Async twin of ``tenant_client``: an ``httpx.AsyncClient`` to use with ``async with``."""
    return tenant_clients.async_client


@pytest.fixture
def bound_tenant() -> Iterator[Callable[..., TenantContext]]:
    """``bound_tenant("acme")`` binds the tenant for the rest of the test and returns its context.

    It takes a key of any type or a tenant record (see :func:`~fastapi_tenancy.tenant_key_of`).

    For unit tests of code that reads the tenant or opens ``tenancy.session()``. Everything it
    bound is unbound when the test ends, whatever the test did meanwhile. Call it inside the
    test (or a sync fixture); ``async def`` tests see it too.
    """
    tokens: list[Any] = []

    def bind_tenant(
        tenant_id: Any, *, source: str = "test", claims: Mapping[str, Any] | None = None
    ) -> TenantContext:
        context = TenantContext(
            id=checked_key(tenant_id, "bound_tenant()"),
            source=source,
            claims=MappingProxyType(dict(claims or {})),
        )
        tokens.append(bind(context))
        return context

    yield bind_tenant
    for token in reversed(tokens):
        # A token made inside an async test belongs to its event loop's context, which the
        # test wrapper below has already restored.
        with contextlib.suppress(ValueError, RuntimeError):
            unbind(token)


# --------------------------------------------------------------------------------------------
# Hooks: nothing a test binds outlives it


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Restore the tenant binding after each test's setup, call and teardown."""
    token = bind(get_tenant_context())
    try:
        return (yield)
    finally:
        with contextlib.suppress(ValueError, RuntimeError):
            unbind(token)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Run ``async def`` tests with the tenant the sync fixtures bound, and undo their bindings.

    Async test plugins run every test in one long-lived task, whose context a test could leave
    a binding in; the wrapper resets it within that task.
    """
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return (yield)
    outer = get_tenant_context()

    @functools.wraps(func)
    async def isolated(*args: Any, **kwargs: Any) -> Any:
        token = bind(outer if outer is not None else get_tenant_context())
        try:
            return await func(*args, **kwargs)
        finally:
            unbind(token)

    pyfuncitem.obj = isolated
    try:
        return (yield)
    finally:
        pyfuncitem.obj = func
