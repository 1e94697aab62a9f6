"""Tenant keys of other types than strings: one spelling per key, on every path a key takes.

A key arrives as a string from a header, a subdomain or a claim, and is parsed into the app's
key type before anything else sees it; a key bound by code is coerced to it; a key leaving the
process is spelled and parsed back. The attacks: spellings of one key that differ (``"01"`` and
``"1"``, upper-case and brace-wrapped UUIDs), and keys of the wrong type, on each path.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from starlette.requests import HTTPConnection

from fastapi_tenancy import (
    CurrentTenant,
    HeaderResolver,
    IntegerKeys,
    InvalidTenantKey,
    JWTClaimResolver,
    SessionTenantMismatch,
    StringKeys,
    Tenancy,
    TenancyMisuse,
    TenantKeyType,
    TenantMismatch,
    UUIDKeys,
    capture,
    get_current_tenant,
    restore,
    tenant_key_of,
    with_tenant,
)
from fastapi_tenancy.chain import ResolverChain

ACME = uuid.UUID("3f2a5a4c-1b7e-4c1e-9d7a-2b8f0e6c1a11")
SECRET = b"a-test-secret-long-enough-for-hs512-" * 2


class Org:
    """A tenant record: its key is its id."""

    def __init__(self, key: Any) -> None:
        self.id = key

    @property
    def __tenant_key__(self) -> Any:
        return self.id


@pytest.mark.parametrize(
    ("keys", "raw", "key"),
    [
        (StringKeys(), "acme", "acme"),
        (IntegerKeys(), "1", 1),
        (IntegerKeys(), "9223372036854775807", 2**63 - 1),
        (UUIDKeys(), str(ACME), ACME),
    ],
)
def test_each_key_type_parses_its_one_spelling_and_spells_it_back(keys, raw, key) -> None:
    assert keys.parse(raw) == key
    assert type(keys.parse(raw)) is keys.python_type
    assert keys.format(key) == raw


@pytest.mark.parametrize(
    ("keys", "raw"),
    [
        (IntegerKeys(), "01"),
        (IntegerKeys(), "+1"),
        (IntegerKeys(), "-1"),
        (IntegerKeys(), "0"),
        (IntegerKeys(), " 1"),
        (IntegerKeys(), "1 "),
        (IntegerKeys(), "1_000"),
        (IntegerKeys(), "\u0661"),  # ARABIC-INDIC DIGIT ONE: int() would accept it
        (IntegerKeys(), "9223372036854775808"),
        (IntegerKeys(), ""),
        (UUIDKeys(), str(ACME).upper()),
        (UUIDKeys(), ACME.hex),
        (UUIDKeys(), "{" + str(ACME) + "}"),
        (UUIDKeys(), f"urn:uuid:{ACME}"),
        (UUIDKeys(), f" {ACME}"),
        (UUIDKeys(), "acme"),
        (StringKeys(), "ACME"),
        (StringKeys(), "acme\n"),
    ],
)
def test_every_other_spelling_of_a_key_is_refused(keys, raw) -> None:
    with pytest.raises(InvalidTenantKey):
        keys.parse(raw)


def test_a_custom_key_type_gets_the_one_spelling_rule_for_free() -> None:
    class Hex(TenantKeyType[int]):
        python_type = int

        def convert(self, raw: str) -> int:
            return int(raw, 16)

        def format(self, key: int) -> str:
            return format(key, "x")

        def column_type(self) -> Any:
            raise NotImplementedError

    assert Hex().parse("ff") == 255
    with pytest.raises(InvalidTenantKey):
        Hex().parse("FF")  # int("FF", 16) is 255 too, but "ff" is its spelling


def connection(*headers: tuple[bytes, bytes]) -> HTTPConnection:
    return HTTPConnection({"type": "http", "path": "/", "headers": list(headers)})


def bearer(**claims: Any) -> tuple[bytes, bytes]:
    payload = {"sub": "ann", "exp": int(time.time()) + 60, **claims}
    return (b"authorization", f"Bearer {jwt.encode(payload, SECRET)}".encode())


def chain(keys: TenantKeyType[Any]) -> ResolverChain:
    resolvers = [JWTClaimResolver(key=SECRET, algorithms=["HS256"]), HeaderResolver()]
    return ResolverChain(resolvers, validate_key=keys.parse)


@pytest.mark.anyio
async def test_the_chain_answers_the_parsed_key() -> None:
    result = await chain(UUIDKeys()).resolve(connection((b"x-tenant-id", str(ACME).encode())))
    assert result.key == ACME
    integer = await chain(IntegerKeys()).resolve(connection(bearer(tenant=42)))
    assert integer.key == 42


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("claim", "header"),
    [(1, "01"), ("1", "01"), (str(ACME), str(ACME).upper()), (str(ACME), ACME.hex)],
)
async def test_two_spellings_of_one_key_from_two_sources_disagree(claim, header) -> None:
    keys = IntegerKeys() if isinstance(claim, int) or claim.isdigit() else UUIDKeys()
    request = connection(bearer(tenant=claim), (b"x-tenant-id", header.encode()))
    with pytest.raises(TenantMismatch):
        await chain(keys).resolve(request)


@pytest.mark.anyio
async def test_an_integer_claim_and_its_decimal_header_agree() -> None:
    request = connection(bearer(tenant=7), (b"x-tenant-id", b"7"))
    assert (await chain(IntegerKeys()).resolve(request)).key == 7


def tenancy(key_type: Any) -> Tenancy:
    return Tenancy(create_engine("sqlite://"), resolvers=[HeaderResolver()], key_type=key_type)


def test_a_session_coerces_a_string_bound_by_code_to_the_key_type() -> None:
    kit = tenancy(uuid.UUID)
    with with_tenant(str(ACME)), kit.session() as session:
        assert session.tenant_id == ACME
    with with_tenant(Org(ACME)), kit.session() as session:
        assert session.tenant_id == ACME
    with kit.session(tenant=Org(ACME)) as session:
        assert session.tenant_id == ACME


@pytest.mark.parametrize(
    ("key_type", "bound"),
    [(uuid.UUID, str(ACME).upper()), (uuid.UUID, 7), (int, "01"), (int, ACME), (str, 7)],
)
def test_a_key_of_the_wrong_type_or_spelling_makes_no_session(key_type, bound) -> None:
    kit = tenancy(key_type)
    with pytest.raises((InvalidTenantKey, TenancyMisuse)), with_tenant(bound):
        kit.session()
    with pytest.raises((InvalidTenantKey, TenancyMisuse)):
        kit.session(tenant=bound)


def test_a_session_made_for_a_spelling_refuses_another_tenant_bound_later() -> None:
    kit = tenancy(uuid.UUID)
    other = uuid.uuid4()
    with with_tenant(str(ACME)), kit.session() as session:
        with with_tenant(str(ACME)):
            session.scope.check_ambient()  # the same spelling: the same tenant
        with with_tenant(other), pytest.raises(SessionTenantMismatch):
            session.scope.check_ambient()


@pytest.mark.parametrize("value", [None, "", True, False])
def test_nothing_that_is_not_a_key_can_be_bound(value) -> None:
    with pytest.raises(ValueError, match="needs a tenant key"):
        with_tenant(value)
    with pytest.raises(ValueError, match="needs a tenant key"):
        with_tenant(Org(value))


def test_tenant_key_of_answers_a_records_key_or_the_key_itself() -> None:
    assert tenant_key_of(Org(ACME)) == ACME
    assert tenant_key_of(ACME) == ACME
    assert tenant_key_of("acme") == "acme"


@pytest.mark.parametrize("key", [ACME, 42, "acme"])
def test_capture_and_restore_carry_the_key_and_its_type_through_json(key) -> None:
    with with_tenant(key):
        captured = json.loads(json.dumps(capture()))
    with restore(captured):
        assert get_current_tenant() == key
        assert type(get_current_tenant()) is type(key)


@pytest.mark.parametrize(
    "captured",
    [
        {"v": 1, "tenant": "01", "source": "code", "key": "int"},
        {"v": 1, "tenant": str(ACME).upper(), "source": "code", "key": "uuid"},
        {"v": 1, "tenant": "acme", "source": "code", "key": "uuid"},
        {"v": 1, "tenant": "acme", "source": "code", "key": "pickle"},
    ],
)
def test_restore_refuses_a_key_its_type_does_not_spell_so(captured) -> None:
    with pytest.raises(InvalidTenantKey):
        restore(captured)


def test_capture_refuses_a_key_type_it_cannot_carry() -> None:
    with with_tenant(3.5), pytest.raises(TenancyMisuse):
        capture()


def test_over_http_an_integer_key_in_another_spelling_is_400_before_any_lookup() -> None:
    looked_up: list[Any] = []

    def lookup(key: Any) -> Any:
        looked_up.append(key)
        return {"id": key}

    kit = Tenancy(
        create_engine("sqlite://"), resolvers=[HeaderResolver()], key_type=int, lookup=lookup
    )
    app = FastAPI()
    kit.install(app)

    @app.get("/whoami")
    def whoami(tenant: CurrentTenant) -> dict[str, Any]:
        return {"id": tenant.id, "type": type(tenant.id).__name__}

    client = TestClient(app)
    refused = [client.get("/whoami", headers={"X-Tenant-ID": raw}) for raw in ("01", "1.0", "x")]
    served = client.get("/whoami", headers={"X-Tenant-ID": "1"})

    assert [(r.status_code, r.json()["code"]) for r in refused] == [(400, "invalid_tenant_key")] * 3
    assert served.json() == {"id": 1, "type": "int"}
    assert looked_up == [1]
