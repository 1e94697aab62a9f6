"""The token signing keys' endpoint fails: it is down, it hangs, or it answers garbage.

The JWKS is served by a local HTTP server behind a :class:`~faults.tcp_proxy.TcpProxy`, so
"down" is a reset connection and "hung" a connection that never answers (slower than any
timeout), as on a real network; tests/resolvers/test_jwt.py covers the many bodies and delays
a server can answer with. A crowd of
requests needing the keys at once shares one fetch (one connection reaches the proxy), each
answers ``503 tenancy_unavailable`` in JSON within the JWKS timeout, each is logged, and the
keys are fetched again, and requests served, within seconds of the endpoint's return.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import create_engine

from fastapi_tenancy import JWTClaimResolver, Tenancy, get_current_tenant
from tests.http_servers import JWKSServer, serving

from .support import (
    RECOVERY_WITHIN,
    Timed,
    assert_unavailable,
    client,
    failures,
    logged,
    served_again,
    timed,
)
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio

JWKS_TIMEOUT = 0.5
CROWD = 10
GARBAGE = b"<html><body>502 Bad Gateway</body></html>"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_set(rsa_key: rsa.RSAPrivateKey) -> bytes:
    jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    return json.dumps({"keys": [{**jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"}]}).encode()


@pytest.fixture
def endpoint(key_set: bytes) -> Iterator[JWKSServer]:
    with serving(JWKSServer()) as server:
        server.serve(key_set)
        yield server


@pytest.fixture
def proxy(endpoint: JWKSServer) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", endpoint.server_address[1]) as proxy:
        yield proxy


def build_app(proxy: TcpProxy) -> FastAPI:
    resolver = JWTClaimResolver(
        jwks_url=f"http://{proxy.address}/.well-known/jwks.json",
        algorithms=["RS256"],
        jwks_timeout=JWKS_TIMEOUT,
    )
    app = FastAPI()
    Tenancy(create_engine("sqlite://"), resolvers=[resolver]).install(app)

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return {"tenant": get_current_tenant()}

    return app


def bearer(rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    claims = {"sub": "ann@acme.test", "tenant": "acme", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("fault", ["down", "hung", "garbage"])
async def test_a_failing_jwks_endpoint_is_503_for_a_crowd_that_shares_one_fetch_until_it_is_back(
    fault: str,
    proxy: TcpProxy,
    endpoint: JWKSServer,
    key_set: bytes,
    rsa_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    if fault == "down":
        proxy.drop()
    elif fault == "hung":
        proxy.stall()
    else:
        endpoint.serve(GARBAGE)
    headers = bearer(rsa_key)
    answers: list[Timed] = []
    async with client(build_app(proxy)) as http:

        async def ask() -> None:
            answers.append(await timed(http.get("/whoami", headers=headers)))

        with proxy.watchdog(JWKS_TIMEOUT + 3):
            async with anyio.create_task_group() as tasks:
                for _ in range(CROWD):
                    tasks.start_soon(ask)

        assert len(answers) == CROWD
        for answer in answers:
            assert_unavailable(answer, codes=("tenancy_unavailable",), within=JWKS_TIMEOUT + 1)
        assert proxy.accepted == 1, "the crowd shared one fetch"
        assert endpoint.hits == (1 if fault == "garbage" else 0)
        logged_failures = failures(caplog)
        assert len(logged_failures) == CROWD
        for record in logged_failures:
            assert logged(record, "tenancy_code") == "tenancy_unavailable"
            assert record.exc_info is not None

        proxy.pass_through()
        endpoint.serve(key_set)
        again = await served_again(http, "/whoami", headers=headers)

    assert again.response.json() == {"tenant": "acme"}, again.response.text
    assert again.seconds <= RECOVERY_WITHIN
    assert proxy.accepted == 2, "one fetch more, once the failure was no longer remembered"
