"""Logging in and the bearer token: what needs one, which tokens are refused, and how many
password hashes run at once."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import httpx
import jwt
import pytest
from example_support import BASE_DOMAIN, FAST_HASH, SECRET, Headers, bearer, in_an_hour, mint
from fastapi.testclient import TestClient
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from example_app import create_app
from example_app.auth import LoginLimits, PasswordHasher
from example_app.models import Tenant
from example_app.seed import init_database

PROTECTED = [
    ("GET", "/me"),
    ("GET", "/projects"),
    ("POST", "/projects"),
    ("GET", "/projects/1"),
    ("PATCH", "/projects/1"),
    ("DELETE", "/projects/1"),
    ("GET", "/projects/1/tasks"),
    ("POST", "/projects/1/tasks"),
    ("GET", "/stats"),
    ("GET", "/admin/projects"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _tampered(token: str) -> str:
    """alice's token with its payload rewritten to name globex, keeping the signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenant"] = "globex"
    return ".".join([header, _b64(json.dumps(claims).encode()), signature])


def _unsigned(claims: dict[str, object]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


ALICE = {"sub": "alice@acme.test", "tenant": "acme", "roles": []}
BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "tampered": _tampered,
    "expired": lambda _: mint({**ALICE, "exp": int(time.time()) - 60}),
    "without-exp": lambda _: mint(ALICE),
    "signed-with-another-key": lambda _: mint(
        {**ALICE, "exp": in_an_hour()}, key="not-the-app-key-but-long-enough-0123456789"
    ),
    "alg-none": lambda _: _unsigned({**ALICE, "exp": in_an_hour()}),
    "hs512-not-allowed": lambda _: mint({**ALICE, "exp": in_an_hour()}, algorithm="HS512"),
    "without-sub": lambda _: mint({"tenant": "acme", "roles": [], "exp": in_an_hour()}),
    "garbage": lambda _: "not.a.token",
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_a_bad_token_is_401_and_never_falls_through_to_the_header(
    api: TestClient, alice: Headers, kind: str
) -> None:
    token = BAD_TOKENS[kind](alice["Authorization"].removeprefix("Bearer "))
    for path in ("/projects", "/me", "/admin/projects"):
        r = api.get(path, headers={**bearer(token), "X-Tenant-ID": "acme"})
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "invalid_token"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_route_but_healthz_plans_and_login_needs_a_token(
    api: TestClient, method: str, path: str
) -> None:
    for headers in ({}, {"X-Tenant-ID": "acme"}, {"Authorization": "Basic YWxpY2U6eA=="}):
        r = api.request(method, path, headers=headers, json={"name": "x"})
        assert r.status_code == 401, r.text
        assert r.json() == {
            "detail": "This needs a bearer token: log in with POST /auth/login.",
            "code": "not_authenticated",
        }
        assert r.headers["WWW-Authenticate"] == "Bearer"


def test_healthz_and_plans_answer_without_a_token_or_a_tenant(api: TestClient) -> None:
    r = api.get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}

    r = api.get("/plans")
    assert r.status_code == 200, r.text
    assert [plan["code"] for plan in r.json()] == ["free", "team", "enterprise"]


def test_plans_answer_with_a_tenant_too(api: TestClient, alice: Headers) -> None:
    r = api.get("/plans", headers=alice)
    assert r.status_code == 200, r.text
    assert len(r.json()) == 3


def test_login_answers_a_bearer_token_with_the_users_claims(api: TestClient) -> None:
    r = api.post("/auth/login", json={"email": "alice@acme.test", "password": "alice-pass"})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice@acme.test"
    assert claims["tenant"] == "acme"
    assert claims["roles"] == []
    assert claims["exp"] > time.time()


def test_a_user_in_several_tenants_gets_a_token_without_a_tenant(api: TestClient) -> None:
    r = api.post("/auth/login", json={"email": "carol@example.test", "password": "carol-pass"})
    claims = jwt.decode(r.json()["access_token"], SECRET, algorithms=["HS256"])
    assert "tenant" not in claims


def test_a_platform_admins_token_carries_the_admin_role(api: TestClient) -> None:
    r = api.post("/auth/login", json={"email": "root@example.test", "password": "root-pass"})
    claims = jwt.decode(r.json()["access_token"], SECRET, algorithms=["HS256"])
    assert claims["roles"] == ["admin"]
    assert "tenant" not in claims


def test_a_wrong_password_and_an_unknown_email_get_the_same_401(api: TestClient) -> None:
    wrong = api.post("/auth/login", json={"email": "alice@acme.test", "password": "guess"})
    unknown = api.post("/auth/login", json={"email": "mallory@evil.test", "password": "guess"})

    assert wrong.status_code == 401, wrong.text
    assert wrong.json() == {
        "detail": "The email or the password is wrong.",
        "code": "invalid_credentials",
    }
    assert unknown.status_code == 401, unknown.text
    assert unknown.content == wrong.content


def test_login_works_with_a_stale_token_still_attached(api: TestClient) -> None:
    stale = mint({**ALICE, "exp": int(time.time()) - 60})
    r = api.post(
        "/auth/login",
        json={"email": "alice@acme.test", "password": "alice-pass"},
        headers=bearer(stale),
    )
    assert r.status_code == 200, r.text


def test_a_malformed_login_body_is_422_in_the_error_shape(api: TestClient) -> None:
    r = api.post("/auth/login", json={"email": "alice@acme.test"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"


def test_an_inactive_tenant_is_refused(api: TestClient, engine: Engine, dave: Headers) -> None:
    with Session(engine) as session:
        session.exec(update(Tenant).where(col(Tenant.slug) == "initech").values(active=False))
        session.commit()

    r = api.get("/projects", headers=dave)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "tenant_inactive"


# -- bounded logins -----------------------------------------------------------------------------
# Logins hash passwords a few at a time: a burst of them cannot take the server's memory. The
# app gets a real Argon2 hasher (cheap parameters) that counts its work and can hold every
# verification at a gate, so the tests see how many hashes run at once without timing anything.

GATE_TIMEOUT = 30.0


class GatedHasher(Argon2Hasher):
    """Argon2 that counts hashes and verifications, the most that ran at once, and makes every
    verification wait at ``gate`` (open unless a test closes it)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self.hashes = self.verifications = self.running = self.peak = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._lock:
            self.hashes += 1
        return super().hash(password, salt=salt)

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        with self._lock:
            self.verifications += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if not self.gate.wait(GATE_TIMEOUT):
                raise TimeoutError("the test never opened the gate")
            return super().verify(password, hash)
        finally:
            with self._lock:
                self.running -= 1

    def reset_counts(self) -> None:
        with self._lock:
            self.hashes = self.verifications = self.peak = 0


@pytest.fixture
def hasher() -> GatedHasher:
    return GatedHasher()


@pytest.fixture
def client_with(
    engine: Engine, hasher: GatedHasher
) -> Iterator[Callable[[LoginLimits | None], TestClient]]:
    """``client_with(limits)``: a client on an app whose logins hash with ``hasher``."""
    init_database(engine, PasswordHasher(FAST_HASH))
    clients: list[TestClient] = []

    def make(limits: LoginLimits | None) -> TestClient:
        app = create_app(
            engine,
            jwt_secret=SECRET,
            base_domain=BASE_DOMAIN,
            password_hash=PasswordHash((hasher,)),
            login_limits=limits,
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def log_in(api: TestClient, email: str, password: str) -> httpx.Response:
    return api.post("/auth/login", json={"email": email, "password": password})


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GATE_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {GATE_TIMEOUT}s")
        time.sleep(0.01)


def test_no_more_logins_hash_at_once_than_allowed_and_a_full_queue_answers_503(
    client_with: Callable[[LoginLimits | None], TestClient], hasher: GatedHasher
) -> None:
    api = client_with(LoginLimits(max_hashes=2, max_waiting=2, wait=GATE_TIMEOUT))
    hasher.reset_counts()
    hasher.gate.clear()
    attempts = [("alice@acme.test", "guess"), ("nobody@example.test", "guess")] * 3

    with ThreadPoolExecutor(len(attempts)) as pool:
        pending: set[Future[httpx.Response]] = {
            pool.submit(log_in, api, email, password) for email, password in attempts
        }
        # Two hash, two wait for a slot: the last two find the queue full and are answered
        # while every hash is still held at the gate.
        refused: list[httpx.Response] = []
        while len(refused) < 2:
            done, pending = wait(pending, timeout=GATE_TIMEOUT, return_when=FIRST_COMPLETED)
            assert done, "no login was answered while the hashes were held"
            refused += [future.result() for future in done]
        assert hasher.running == 2
        assert api.get("/healthz").status_code == 200  # other requests are served meanwhile
        assert api.get("/plans").status_code == 200
        hasher.gate.set()
        answered = [future.result(timeout=GATE_TIMEOUT) for future in pending]

    for r in refused:
        assert r.status_code == 503, r.text
        assert r.json() == {
            "detail": "Too many logins at once. Retry in a moment.",
            "code": "login_busy",
        }
        assert int(r.headers["Retry-After"]) >= 1
    assert [r.status_code for r in answered] == [401] * 4
    assert hasher.peak == 2
    assert hasher.verifications == 4


def test_a_login_that_waits_too_long_for_a_hash_answers_503_with_retry_after(
    client_with: Callable[[LoginLimits | None], TestClient], hasher: GatedHasher
) -> None:
    api = client_with(LoginLimits(max_hashes=1, wait=0.2))
    hasher.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(log_in, api, "alice@acme.test", "alice-pass")
        wait_until(lambda: hasher.running == 1, "the first login's hash")

        r = log_in(api, "bob@globex.test", "bob-pass")

        hasher.gate.set()
        assert first.result(timeout=GATE_TIMEOUT).status_code == 200
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "login_busy"
    assert "Retry-After" in r.headers
    assert log_in(api, "bob@globex.test", "bob-pass").status_code == 200  # free again


@pytest.mark.parametrize(
    ("email", "password"),
    [
        pytest.param("mallory@evil.test", "guess", id="unknown-email"),
        pytest.param("alice@acme.test", "guess", id="wrong-password"),
        pytest.param("alice@acme.test", "alice-pass", id="right-password"),
    ],
)
def test_every_login_costs_exactly_one_hash_whether_or_not_the_email_exists(
    client_with: Callable[[LoginLimits | None], TestClient],
    hasher: GatedHasher,
    email: str,
    password: str,
) -> None:
    api = client_with(None)
    hasher.reset_counts()  # creating the app hashed once: the unknown emails' stand-in

    r = log_in(api, email, password)

    assert r.status_code in (200, 401), r.text
    assert (hasher.verifications, hasher.hashes) == (1, 0)


@pytest.mark.parametrize(
    "limits",
    [{"max_hashes": 0}, {"max_waiting": -1}, {"wait": -1.0}, {"wait": float("inf")}],
)
def test_login_limits_refuse_meaningless_values(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(limits))):
        LoginLimits(**limits)  # type: ignore[arg-type]
