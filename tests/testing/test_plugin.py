"""The pytest plugin, tested the way its users meet it: inside pytest runs of their own."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

import pytest

Run = Callable[..., pytest.RunResult]


def test_the_plugin_is_registered_through_the_pytest11_entry_point() -> None:
    (entry,) = [e for e in entry_points(group="pytest11") if e.name == "fastapi_tenancy"]
    assert entry.value == "fastapi_tenancy.testing"


def test_pytest_loads_the_plugin_with_no_configuration(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    plugin_project.makepyfile(
        """
        def test_loaded(pytestconfig, bound_tenant, tenant_client, tenancy_token):
            assert pytestconfig.pluginmanager.has_plugin("fastapi_tenancy")
        """
    )
    run_inner().assert_outcomes(passed=1)


def test_a_missing_tenancy_app_fixture_fails_with_instructions(
    pytester: pytest.Pytester, run_inner: Run
) -> None:
    pytester.makepyfile(
        """
        def test_needs_the_app(tenant_client):
            pass
        """
    )
    result = run_inner()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs your app: define a fixture named tenancy_app*"])


def test_an_app_without_tenancy_fails_with_a_clear_message(
    pytester: pytest.Pytester, run_inner: Run
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from fastapi import FastAPI

        @pytest.fixture
        def tenancy_app():
            return FastAPI()

        def test_needs_tenancy(tenant_client):
            pass
        """
    )
    result = run_inner()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*No Tenancy is installed on*tenancy.install(app)*"])


# --------------------------------------------------------------------------------------------
# No tenant leaks between tests


LEAKS = """
import pytest
from fastapi_tenancy import get_current_tenant, with_tenant
from fastapi_tenancy.context import TenantContext, bind

pytestmark = pytest.mark.anyio


@pytest.fixture
def leaky_fixture():
    with_tenant("from-a-fixture").__enter__()  # never left
    yield


def test_1_binds_without_resetting():
    bind(TenantContext(id="acme"))
    assert get_current_tenant() == "acme"


def test_2_sees_nothing():
    assert get_current_tenant() is None


def test_3_enters_a_binding_and_never_leaves_it():
    with_tenant("globex").__enter__()


def test_4_sees_nothing():
    assert get_current_tenant() is None


def test_5_uses_bound_tenant_and_a_leaky_fixture(bound_tenant, leaky_fixture):
    bound_tenant("initech")
    assert get_current_tenant() == "initech"


def test_6_sees_nothing():
    assert get_current_tenant() is None


async def test_7_async_test_binds_without_resetting():
    bind(TenantContext(id="async-acme"))
    with_tenant("async-globex").__enter__()


async def test_8_async_test_sees_nothing():
    assert get_current_tenant() is None


def test_9_fails_while_bound(bound_tenant):
    bound_tenant("umbrella")
    raise AssertionError("the test failed with a tenant bound")


def test_10_sees_nothing():
    assert get_current_tenant() is None


async def test_11_async_sees_nothing_either():
    assert get_current_tenant() is None
"""


def test_a_tenant_set_in_one_test_does_not_reach_the_next(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    plugin_project.makepyfile(test_leaks=LEAKS)
    result = run_inner("-p", "no:randomly")
    result.assert_outcomes(passed=10, failed=1)
    result.stdout.fnmatch_lines(["*test_9_fails_while_bound*"])


def test_without_the_plugin_the_same_tests_do_leak(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    # The control experiment: the isolation above is the plugin's doing.
    plugin_project.makepyfile(
        test_leaks=LEAKS.replace("bound_tenant, leaky_fixture", "leaky_fixture").replace(
            'bound_tenant("initech")', 'with_tenant("initech").__enter__()'
        )
    )
    (plugin_project.path / "conftest.py").unlink()
    plugin_project.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def anyio_backend():
            return "asyncio"
        """
    )
    result = run_inner("-p", "no:fastapi_tenancy", "-k", "not test_9 and not test_10")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 3, result.stdout.str()


def test_bound_tenant_binds_for_the_test_in_sync_and_async_tests_and_fixtures(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    plugin_project.makepyfile(
        """
        import pytest
        from fastapi_tenancy import get_current_tenant, get_tenant_context

        @pytest.fixture
        def as_acme(bound_tenant):
            bound_tenant("acme")

        def test_sync(bound_tenant):
            context = bound_tenant("acme", claims={"sub": "ann"})
            assert get_tenant_context() is context
            assert (context.source, context.claims["sub"]) == ("test", "ann")
            bound_tenant("globex")
            assert get_current_tenant() == "globex"

        def test_from_a_fixture(as_acme):
            assert get_current_tenant() == "acme"

        @pytest.mark.anyio
        async def test_async_from_a_fixture(as_acme):
            assert get_current_tenant() == "acme"

        @pytest.mark.anyio
        async def test_async_inside(bound_tenant):
            bound_tenant("initech")
            assert get_current_tenant() == "initech"

        @pytest.mark.anyio
        async def test_async_after():
            assert get_current_tenant() is None

        def test_after():
            assert get_current_tenant() is None

        def test_refuses_an_empty_tenant(bound_tenant):
            with pytest.raises(ValueError):
                bound_tenant("")
        """
    )
    run_inner("-p", "no:randomly").assert_outcomes(passed=7)


def test_a_tenant_bound_in_a_test_never_reaches_a_request(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    plugin_project.makepyfile(
        """
        import pytest

        def test_sync(bound_tenant, tenant_client):
            bound_tenant("acme")
            assert tenant_client().get("/whoami").json()["tenant"] is None
            assert tenant_client("globex").get("/whoami").json()["tenant"] == "globex"

        @pytest.mark.anyio
        async def test_async(bound_tenant, async_tenant_client):
            bound_tenant("acme")
            async with async_tenant_client() as client:
                assert (await client.get("/whoami")).json()["tenant"] is None
        """
    )
    run_inner().assert_outcomes(passed=2)


# --------------------------------------------------------------------------------------------
# Tokens and clients


def test_tenant_client_sends_the_tenant_the_way_the_app_resolves_it(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    plugin_project.makepyfile(
        """
        def test_token_first(tenant_client):
            body = tenant_client("acme", as_user="ann@acme.test").get("/whoami").json()
            assert body == {
                "tenant": "acme", "source": "jwt", "sub": "ann@acme.test", "host": "testserver"
            }

        def test_via_subdomain(tenant_client):
            body = tenant_client("acme", via="subdomain").get("/whoami").json()
            assert (body["tenant"], body["source"], body["host"]) == (
                "acme", "subdomain", "acme.example.test"
            )

        def test_via_header_as_a_user(tenant_client):
            body = tenant_client("globex", via="header", as_user="bob").get("/whoami").json()
            assert (body["tenant"], body["source"], body["sub"]) == ("globex", "header", "bob")

        def test_admin(tenant_client):
            assert tenant_client(None, as_user="root", admin=True).get("/admin").status_code == 200
            refused = tenant_client("acme", as_user="ann").get("/admin")
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "admin_required"

        def test_extra_headers_are_added(tenant_client):
            client = tenant_client("acme", headers={"X-Tenant-ID": "globex"})
            assert client.get("/whoami").json()["code"] == "tenant_mismatch"
        """
    )
    run_inner().assert_outcomes(passed=5)


def test_tenancy_token_mints_tokens_the_app_accepts_and_refuses(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    plugin_project.makepyfile(
        """
        import jwt

        def call(tenant_client, token):
            return tenant_client(headers={"Authorization": f"Bearer {token}"}).get("/whoami")

        def test_claims(tenancy_token):
            claims = jwt.decode(tenancy_token("acme"), options={"verify_signature": False})
            assert claims["tenant"] == "acme"
            assert claims["aud"] == "inner-api"
            assert claims["iss"] == "https://issuer.test"
            assert claims["exp"] - claims["iat"] == 3600

        def test_accepted_with_any_claims(tenancy_token, tenant_client):
            r = call(tenant_client, tenancy_token("acme", sub="carol", plan="pro"))
            assert (r.status_code, r.json()["sub"]) == (200, "carol")

        def test_expired(tenancy_token, tenant_client):
            r = call(tenant_client, tenancy_token("acme", expires_in=-10))
            assert (r.status_code, r.json()["code"]) == (401, "invalid_token")

        def test_without_exp(tenancy_token, tenant_client):
            r = call(tenant_client, tenancy_token("acme", expires_in=None))
            assert (r.status_code, r.json()["code"]) == (401, "invalid_token")

        def test_wrong_audience(tenancy_token, tenant_client):
            r = call(tenant_client, tenancy_token("acme", aud="another-api"))
            assert (r.status_code, r.json()["code"]) == (401, "invalid_token")
        """
    )
    run_inner().assert_outcomes(passed=5)


def test_async_tenant_client_runs_the_app_on_the_asgi_transport(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    plugin_project.makepyfile(
        """
        import anyio
        import pytest

        pytestmark = pytest.mark.anyio

        async def test_two_tenants_at_once(async_tenant_client):
            seen = {}

            async def ask(tenant):
                async with async_tenant_client(tenant, as_user=f"{tenant}-user") as client:
                    for _ in range(5):
                        body = (await client.get("/whoami")).json()
                        seen.setdefault(tenant, set()).add((body["tenant"], body["sub"]))

            async with anyio.create_task_group() as group:
                for tenant in ("acme", "globex", "initech"):
                    group.start_soon(ask, tenant)
            assert seen == {t: {(t, f"{t}-user")} for t in ("acme", "globex", "initech")}
        """
    )
    run_inner().assert_outcomes(passed=1)


def test_apps_resolving_by_header_or_subdomain_only_get_clients_that_fit(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    plugin_project.makepyfile(
        """
        import pytest
        from inner_app import build_app
        from fastapi_tenancy import HeaderResolver, SubdomainResolver

        @pytest.fixture(params=["header", "subdomain"])
        def tenancy_app(request):
            if request.param == "header":
                return build_app([HeaderResolver("X-Org")])
            return build_app([SubdomainResolver("saas.test")])

        def test_tenant_arrives(tenant_client):
            assert tenant_client("acme").get("/whoami").json()["tenant"] == "acme"

        def test_as_user_needs_a_token(tenant_client):
            with pytest.raises(LookupError, match="no JWTClaimResolver"):
                tenant_client("acme", as_user="ann")
        """
    )
    run_inner().assert_outcomes(passed=4)


def test_public_key_apps_need_the_signing_key_fixture(
    plugin_project: pytest.Pytester, run_inner: Run
) -> None:
    plugin_project.makepyfile(
        """
        import pytest
        from cryptography.hazmat.primitives.asymmetric import ec
        from inner_app import build_app
        from fastapi_tenancy import JWTClaimResolver

        PRIVATE = ec.generate_private_key(ec.SECP256R1())

        @pytest.fixture
        def tenancy_app():
            resolver = JWTClaimResolver(key=PRIVATE.public_key(), algorithms=["ES256"])
            return build_app([resolver])

        def test_without_the_key(tenant_client):
            with pytest.raises(LookupError, match="tenancy_signing_key"):
                tenant_client("acme")

        class TestWithTheKey:
            @pytest.fixture
            def tenancy_signing_key(self):
                return PRIVATE

            def test_tokens_verify(self, tenant_client):
                body = tenant_client("acme", as_user="ann").get("/whoami").json()
                assert (body["tenant"], body["sub"]) == ("acme", "ann")
        """
    )
    run_inner().assert_outcomes(passed=2)


def test_admin_claims_follow_the_apps_rule(plugin_project: pytest.Pytester, run_inner: Run) -> None:
    plugin_project.makepyfile(
        """
        import pytest
        from inner_app import build_app, jwt_resolver
        from fastapi_tenancy import Tenancy

        @pytest.fixture
        def tenancy_admin_claims():
            return {"is_staff": True}

        @pytest.fixture
        def tenancy_app():
            app = build_app([jwt_resolver()])
            from fastapi_tenancy.testing import find_tenancy
            find_tenancy(app).is_admin = lambda context: context.claims.get("is_staff") is True
            return app

        def test_admin(tenant_client):
            assert tenant_client(as_user="root", admin=True).get("/admin").status_code == 200
            assert tenant_client(as_user="ann").get("/admin").status_code == 403
        """
    )
    run_inner().assert_outcomes(passed=1)
