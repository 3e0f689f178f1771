"""TruConnectHook against the emulator over real sockets: tokens, renewal, 401 handling, masking, config errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from airflow_provider_truconnect.client import (
    RetryPolicy,
    TokenCache,
    TruConnectAuthError,
    TruConnectConfigError,
    TruConnectNotFoundError,
)
from airflow_provider_truconnect.client.models import activation_codes
from airflow_provider_truconnect.emulator.server import RunningEmulator, run_emulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.version_compat import _airflow_version
from tests.conftest import FakeClock

CONN_ID = "tc_hook_test"


def grants(emu: RunningEmulator) -> dict[str, int]:
    return dict(emu.control.stats()["token_grants_total"])


@pytest.fixture
def clocked(fake_clock: FakeClock) -> Iterator[RunningEmulator]:
    """An emulator whose clock is the test's fake clock, so token expiry is driven without sleeping."""
    with run_emulator(clock=fake_clock, rate_limit_per_minute=None) as emu:
        yield emu


def set_conn(monkeypatch: pytest.MonkeyPatch, emu: RunningEmulator, conn_id: str = CONN_ID, **changes: Any) -> None:
    conn = json.loads(emu.connection_json())
    extra = conn.setdefault("extra", {})
    for key, value in changes.items():
        if key in ("host", "login", "password"):
            conn[key] = value
        else:
            extra[key] = value
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def make_hook(clock: FakeClock, cache: TokenCache, conn_id: str = CONN_ID) -> TruConnectHook:
    # Retries wait on the fake clock: no real sleeping in tests.
    return TruConnectHook(conn_id, clock=clock, token_cache=cache, retry_policy=RetryPolicy(sleep=clock.advance))


@pytest.fixture
def cache() -> TokenCache:
    return TokenCache()


@pytest.fixture
def masked(mocker: Any) -> list[str]:
    """Values the hook registered with Airflow's secret masker."""
    values: list[str] = []
    mocker.patch("airflow_provider_truconnect.hooks.truconnect.mask_secret", side_effect=values.append)
    return values


def test_one_token_for_100_calls_across_3_hooks_and_8_threads(
    clocked: RunningEmulator,
    fake_clock: FakeClock,
    cache: TokenCache,
    monkeypatch: pytest.MonkeyPatch,
    masked: list[str],
) -> None:
    set_conn(monkeypatch, clocked)
    hooks = [make_hook(fake_clock, cache) for _ in range(3)]
    iccid = next(iter(hooks[0].list_subscriptions(page_size=1)))["sim_id"]
    barrier = threading.Barrier(8)

    def call(i: int) -> str:
        if i < 8:
            barrier.wait()  # the first eight calls race for the (cached) token
        return str(hooks[i % 3].get_sim(iccid)["iccid"])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(99)))
    assert results == [iccid] * 99
    assert grants(clocked) == {"client_credentials": 1}
    stats = clocked.control.stats()
    assert stats["requests_by_route"]["GET /v2/sims/{iccid}"] == {"200": 99}
    tokens = set(clocked.control.issued_tokens())
    assert tokens <= set(masked)
    # Everything else registered is an activation code of that SIM (the hook masks those too).
    sim = hooks[0].get_sim(iccid)
    assert set(masked) - tokens == set(activation_codes(sim)) and activation_codes(sim)


def test_single_flight_when_token_expires_under_threads(
    clocked: RunningEmulator, fake_clock: FakeClock, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, clocked, issue_refresh_tokens=False)
    clocked.control.set_config(issue_refresh_tokens=False)
    hooks = [make_hook(fake_clock, cache) for _ in range(3)]
    hooks[0].request("GET", "/v2/products")
    fake_clock.advance(301)
    barrier = threading.Barrier(8)

    def call(i: int) -> Any:
        barrier.wait()
        return hooks[i % 3].request("GET", "/v2/products", params={"page_size": 1})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, range(8)))
    assert grants(clocked) == {"client_credentials": 2}


def test_renewal_uses_refresh_grant_then_falls_back(
    clocked: RunningEmulator, fake_clock: FakeClock, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, clocked)
    hook = make_hook(fake_clock, cache)
    hook.request("GET", "/v2/products")
    assert grants(clocked) == {"client_credentials": 1}

    fake_clock.advance(300)  # access token expired, refresh token (30 min) still valid
    hook.request("GET", "/v2/products")
    assert grants(clocked) == {"client_credentials": 1, "refresh_token": 1}

    # The refresh token is rejected (revoked): exactly one client_credentials fallback.
    clocked.control.revoke()
    fake_clock.advance(300)
    hook.request("GET", "/v2/products")
    stats = clocked.control.stats()
    assert stats["token_grants_total"] == {"client_credentials": 2, "refresh_token": 1}
    assert sum(stats["token_failures_by_error"].values()) == 1
    assert "invalid_grant" in stats["token_failures_by_error"]


def test_no_refresh_token_issued_means_client_credentials_again(
    clocked: RunningEmulator, fake_clock: FakeClock, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    clocked.control.set_config(issue_refresh_tokens=False)
    set_conn(monkeypatch, clocked)
    hook = make_hook(fake_clock, cache)
    for _ in range(3):
        hook.request("GET", "/v2/products")
        fake_clock.advance(300)
    assert grants(clocked) == {"client_credentials": 3}


def test_token_renewed_before_expiry_with_skew(
    clocked: RunningEmulator, fake_clock: FakeClock, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    clocked.control.set_config(issue_refresh_tokens=False)
    set_conn(monkeypatch, clocked)
    hook = make_hook(fake_clock, cache)
    hook.request("GET", "/v2/products")
    fake_clock.advance(265)  # 35 s left: still used
    hook.request("GET", "/v2/products")
    assert grants(clocked) == {"client_credentials": 1}
    fake_clock.advance(10)  # 25 s left: inside the 30 s skew, renewed proactively
    hook.request("GET", "/v2/products")
    assert grants(clocked) == {"client_credentials": 2}
    assert clocked.control.stats()["unauthorized"] == 0


def test_lying_expires_in_is_survived_by_one_reauth(
    clocked: RunningEmulator, fake_clock: FakeClock, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server says 300 s but tokens really die after 60 s: the 401 path re-authenticates once.
    clocked.control.set_config(access_token_lifetime=60, reported_expires_in=300, issue_refresh_tokens=False)
    set_conn(monkeypatch, clocked)
    hook = make_hook(fake_clock, cache)
    hook.request("GET", "/v2/products")
    fake_clock.advance(120)
    hook.request("GET", "/v2/products")
    stats = clocked.control.stats()
    assert stats["unauthorized"] == 1
    assert stats["token_grants_total"] == {"client_credentials": 2}


def test_401_once_reauthenticates_and_succeeds(
    clocked: RunningEmulator, fake_clock: FakeClock, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    clocked.control.set_config(issue_refresh_tokens=False)
    set_conn(monkeypatch, clocked)
    hook = make_hook(fake_clock, cache)
    hook.request("GET", "/v2/products")
    clocked.control.revoke()  # the token dies mid-run
    assert hook.request("GET", "/v2/products")["data"]
    stats = clocked.control.stats()
    assert stats["unauthorized"] == 1
    assert stats["token_grants_total"] == {"client_credentials": 2}


def test_401_twice_raises_auth_error(
    clocked: RunningEmulator, fake_clock: FakeClock, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, clocked)
    hook = make_hook(fake_clock, cache)
    clocked.control.add_fault("GET /v2/products", status=401, count=2)
    with pytest.raises(TruConnectAuthError) as info:
        hook.request("GET", "/v2/products")
    assert info.value.status_code == 401
    assert info.value.error_type == "UNAUTHORISED"
    assert info.value.correlation_id
    assert clocked.control.stats()["requests_by_route"]["GET /v2/products"] == {"401": 2}


def test_wrong_secret_is_an_auth_error_with_oauth_code(
    clocked: RunningEmulator, fake_clock: FakeClock, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, clocked, password="not-the-secret-42")
    hook = make_hook(fake_clock, cache)
    with pytest.raises(TruConnectAuthError) as info:
        hook.request("GET", "/v2/products")
    assert info.value.oauth_error == "invalid_client"
    assert info.value.status_code == 401
    assert "not-the-secret-42" not in str(info.value)
    assert grants(clocked) == {}


def test_client_secret_basic_auth_style(
    clocked: RunningEmulator, fake_clock: FakeClock, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, clocked, client_auth="client_secret_basic")
    hook = make_hook(fake_clock, cache)
    assert hook.request("GET", "/v2/products")["data"]
    assert grants(clocked) == {"client_credentials": 1}


def test_no_secret_or_token_in_any_log_record(
    clocked: RunningEmulator,
    fake_clock: FakeClock,
    cache: TokenCache,
    monkeypatch: pytest.MonkeyPatch,
    all_logs: Any,
) -> None:
    set_conn(monkeypatch, clocked)
    hook = make_hook(fake_clock, cache)
    hook.request("GET", "/v2/products")
    fake_clock.advance(300)
    hook.request("GET", "/v2/products")  # refresh grant
    clocked.control.revoke()
    hook.request("GET", "/v2/products")  # 401, re-auth
    clocked.control.add_fault("GET /v2/products", status=401, count=2)
    with pytest.raises(TruConnectAuthError) as info:
        hook.request("GET", "/v2/products")
    clocked.control.add_fault("GET /v2/products", status=503, count=1)
    hook.request("GET", "/v2/products")
    set_conn(monkeypatch, clocked, conn_id="tc_bad", password="wrong-secret-xyz")
    with pytest.raises(TruConnectAuthError) as bad:
        make_hook(fake_clock, TokenCache(), "tc_bad").request("GET", "/v2/products")

    text = all_logs.text() + str(info.value) + repr(info.value) + str(bad.value) + repr(hook) + repr(hook.client)
    text += repr(hook.client_config) + repr(cache.get(hook.client_config.cache_key))
    secrets = [clocked.client_secret, "wrong-secret-xyz", *clocked.control.issued_tokens()]
    assert len(secrets) >= 5
    assert all_logs.records, "the scenarios should have logged something"
    for secret in secrets:
        assert secret not in text
    for url in clocked.control.stats()["urls"]:
        for secret in secrets:
            assert secret not in url


def test_test_connection(clocked: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, clocked)
    ok, message = TruConnectHook(CONN_ID, token_cache=TokenCache()).test_connection()
    assert ok, message
    set_conn(monkeypatch, clocked, conn_id="tc_wrong", password="wrong-secret-123")
    ok, message = TruConnectHook("tc_wrong", token_cache=TokenCache()).test_connection()
    assert not ok
    assert "invalid_client" in message
    assert "wrong-secret-123" not in message


def test_resource_methods_and_encoded_ids(
    truconnect_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, truconnect_emulator)
    hook = TruConnectHook(CONN_ID, token_cache=TokenCache())
    product = next(iter(hook.list_products()))
    assert product["id"].endswith("=")
    assert hook.get_product(product["id"])["id"] == product["id"]
    sub = next(iter(hook.list_subscriptions(page_size=5)))
    assert hook.get_subscription(sub["id"])["id"] == sub["id"]
    sims = {s["sim_id"] for s in hook.list_subscriptions(iccid=sub["sim_id"])}
    assert sims == {sub["sim_id"]}
    assert hook.get_sim(sub["sim_id"])["iccid"] == sub["sim_id"]
    with pytest.raises(TruConnectNotFoundError):
        hook.get_order("00000000-0000-4000-8000-000000000000")
    with pytest.raises(TruConnectConfigError, match="iccid"):
        hook.get_sim(8944)  # type: ignore[arg-type]
    with pytest.raises(TruConnectConfigError, match="not a subscription filter"):
        list(hook.list_subscriptions(colour="red"))


def test_paginate_follows_every_page(truconnect_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, truconnect_emulator)
    hook = TruConnectHook(CONN_ID, token_cache=TokenCache())
    ids = [s["id"] for s in hook.paginate("/v2/subscriptions", page_size=7)]
    assert len(ids) == len(set(ids)) == truconnect_emulator.control.config()["seed_subscriptions"]
    pages = truconnect_emulator.control.stats()["requests_by_route"]["GET /v2/subscriptions"]["200"]
    assert pages == -(-len(ids) // 7)


def test_create_order_and_poll(truconnect_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, truconnect_emulator)
    hook = TruConnectHook(CONN_ID, token_cache=TokenCache())
    product = next(iter(hook.list_products()))
    order = {
        "operation_type": "ACTIVATION",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": product["id"]},
        "subscriber": {
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "country_of_residence": "GB",
            "device": {"operating_system": "ios", "model": "iPhone", "id": "1234567"},
        },
    }
    created = hook.create_order(order)
    assert created["status"] == "ACCEPTED"
    truconnect_emulator.control.advance(10)
    done = hook.get_order(created["id"])
    assert done["status"] == "COMPLETED"
    assert hook.get_sim(done["output"]["iccid"])["status"] == "Released"
    recorded = truconnect_emulator.control.orders()
    assert [o["id"] for o in recorded] == [created["id"]]


def test_order_body_is_checked_before_sending(
    truconnect_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, truconnect_emulator)
    hook = TruConnectHook(CONN_ID, token_cache=TokenCache())
    with pytest.raises(TruConnectConfigError, match=r"order\.subscriber\.email"):
        hook.create_order(
            {"operation_type": "ACTIVATION", "sim_type": "ESIM", "product": {"id": "x"}, "subscriber": {}}
        )
    assert truconnect_emulator.control.stats()["requests_total"] == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"login": ""}, "login"),
        ({"password": ""}, "password"),
        ({"host": "ftp://example.com/connect-api"}, "host"),
        ({"host": "http://api.example.com/connect-api"}, "host"),
        ({"oauth_url": "http://idp.example.com/token"}, "extra.oauth_url"),
        ({"oauth_url": "not a url"}, "extra.oauth_url"),
        ({"timeout": "soon"}, "extra.timeout"),
        ({"timeout": -1}, "extra.timeout"),
        ({"max_retries": 1.5}, "extra.max_retries"),
        ({"verify_ssl": 3}, "extra.verify_ssl"),
        ({"client_auth": "private_key_jwt"}, "extra.client_auth"),
        ({"scope": ["a"]}, "extra.scope"),
    ],
)
def test_bad_configuration_names_the_field_before_any_call(
    truconnect_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], field: str
) -> None:
    set_conn(monkeypatch, truconnect_emulator, **changes)
    with pytest.raises(TruConnectConfigError) as info:
        TruConnectHook(CONN_ID, token_cache=TokenCache()).get_sim("8944000000000000000")
    assert field in str(info.value)
    assert truconnect_emulator.control.stats()["requests_total"] == 0


def test_invalid_extra_json_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_TC_BADEXTRA",
        json.dumps({"conn_type": "truconnect", "login": "a", "password": "b", "extra": "{not json"}),
    )
    if (3, 0) <= _airflow_version() < (3, 2):
        # Airflow 3.0 and 3.1 refuse a non-JSON extra while reading the connection (Connection._validate_extra), and
        # their lookup then reports the connection as missing: the hook never sees the extra.
        from airflow.exceptions import AirflowNotFoundException

        with pytest.raises(AirflowNotFoundException, match="isn't defined"):
            TruConnectHook("tc_badextra").client_config  # noqa: B018
        return
    with pytest.raises(TruConnectConfigError) as info:
        TruConnectHook("tc_badextra").client_config  # noqa: B018
    assert info.value.field == "extra" and "not valid JSON" in str(info.value)


def test_insecure_http_allowed_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_TC_INSECURE",
        json.dumps(
            {
                "conn_type": "truconnect",
                "host": "http://api.test.internal/connect-api",
                "login": "a",
                "password": "b",
                "extra": {"allow_insecure_http": True},
            }
        ),
    )
    config = TruConnectHook("tc_insecure").client_config
    assert config.oauth_url == "http://api.test.internal/auth/realms/tru-staff/protocol/openid-connect/token"


def test_defaults_and_prefixed_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_TC_DEFAULTS",
        json.dumps(
            {
                "conn_type": "truconnect",
                "login": "cid",
                "password": "pw",
                "extra": {"extra__truconnect__timeout": "12", "max_retries": 2},
            }
        ),
    )
    config = TruConnectHook("tc_defaults").client_config
    assert config.api_base == "https://services.truphone.com/connect-api"
    assert config.oauth_url == "https://services.truphone.com/auth/realms/tru-staff/protocol/openid-connect/token"
    assert config.timeout == 12
    assert config.max_retries == 2
    assert "pw" not in repr(config)
