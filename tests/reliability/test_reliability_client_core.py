"""Client-core behaviours over real sockets: shared token-renewal failures, TLS failures, and local mistakes that must
never be retried or reported as a possibly placed order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from airflow_provider_truconnect.client import (
    AsyncTruConnectClient,
    ClientConfig,
    RetryPolicy,
    TokenCache,
    TruConnectClient,
    TruConnectConfigError,
    TruConnectConnectionError,
    TruConnectServerError,
)
from airflow_provider_truconnect.client.paths import ORDERS
from airflow_provider_truconnect.emulator.server import RunningEmulator
from tests.conftest import FakeClock
from tests.reliability.support import Harness, activation_order

TOKEN = "POST /auth/realms/tru-staff/protocol/openid-connect/token"
CALLERS = 10


def config_for(emu: RunningEmulator, **kwargs: Any) -> ClientConfig:
    return ClientConfig(
        client_id=emu.client_id,
        client_secret=emu.client_secret,
        api_base=kwargs.pop("api_base", emu.api_base),
        oauth_url=kwargs.pop("oauth_url", emu.oauth_url),
        **kwargs,
    )


def token_requests(emu: RunningEmulator) -> int:
    return sum(emu.control.stats()["requests_by_route"].get(TOKEN, {}).values())


def no_retries() -> RetryPolicy:
    return RetryPolicy(max_retries=0)


# ------------------------------------------------------------------------------------ token renewal failures
def test_waiting_threads_share_a_failed_renewal(clocked_emulator: tuple[RunningEmulator, FakeClock]) -> None:
    emu, clock = clocked_emulator
    # The token endpoint answers 503 after a delay, so every caller is waiting for the first one's renewal.
    emu.control.add_fault("token", status=503, delay=0.5, count=100)
    cache = TokenCache()
    client = TruConnectClient(config_for(emu), token_cache=cache, clock=clock, retry_policy=no_retries())
    start = threading.Barrier(CALLERS)
    outcomes: list[BaseException | None] = [None] * CALLERS

    def call(index: int) -> None:
        start.wait()
        try:
            client.request("GET", "/v2/products")
        except BaseException as exc:  # noqa: BLE001 - recorded and checked below
            outcomes[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert token_requests(emu) == 1
    assert all(isinstance(exc, TruConnectServerError) and exc.status_code == 503 for exc in outcomes), outcomes
    assert all(exc is not None and exc.sent is False for exc in outcomes)  # no API request left without a token
    assert len({id(exc) for exc in outcomes}) == CALLERS  # each caller raises its own copy

    # A call that starts after the failure tries again, and succeeds once the endpoint recovers.
    emu.control.clear_faults()
    assert client.request("GET", "/v2/products")["data"]
    assert token_requests(emu) == 2
    client.close()


def test_waiting_tasks_share_a_failed_renewal(clocked_emulator: tuple[RunningEmulator, FakeClock]) -> None:
    emu, clock = clocked_emulator
    emu.control.add_fault("token", status=503, delay=0.5, count=100)
    cache = TokenCache()

    async def scenario() -> tuple[list[Any], Any]:
        async with AsyncTruConnectClient(
            config_for(emu), token_cache=cache, clock=clock, retry_policy=no_retries()
        ) as client:
            outcomes = await asyncio.gather(
                *(client.request("GET", "/v2/products") for _ in range(CALLERS)), return_exceptions=True
            )
            after_failure = await asyncio.gather(client.request("GET", "/v2/products"), return_exceptions=True)
            return outcomes, after_failure[0]

    outcomes, later = asyncio.run(scenario())
    assert all(isinstance(exc, TruConnectServerError) and exc.status_code == 503 for exc in outcomes), outcomes
    # Ten callers, one token request; the call made after the failure tried again (and failed again).
    assert isinstance(later, TruConnectServerError)
    assert token_requests(emu) == 2


def test_each_retry_attempt_renews_once(clocked_emulator: tuple[RunningEmulator, FakeClock]) -> None:
    """With retries, concurrent callers still send at most one token request per retry attempt."""
    emu, clock = clocked_emulator
    emu.control.add_fault("token", status=503, delay=0.3, count=100)

    async def asleep(seconds: float) -> None:
        clock.advance(seconds)

    policy = RetryPolicy(max_retries=2, asleep=asleep)

    async def scenario() -> list[Any]:
        async with AsyncTruConnectClient(
            config_for(emu), token_cache=TokenCache(), clock=clock, retry_policy=policy
        ) as client:
            return await asyncio.gather(
                *(client.request("GET", "/v2/products") for _ in range(CALLERS)), return_exceptions=True
            )

    outcomes = asyncio.run(scenario())
    assert all(isinstance(exc, TruConnectServerError) for exc in outcomes)
    assert token_requests(emu) <= policy.max_retries + 1


# ------------------------------------------------------------------------------------ TLS failures
def test_tls_failure_is_not_retried_sync_and_async(clocked_emulator: tuple[RunningEmulator, FakeClock]) -> None:
    emu, clock = clocked_emulator
    # https to the emulator's plain-http port: the TLS handshake fails, as a certificate verification failure would.
    https_base = emu.api_base.replace("http://", "https://")
    https_token = emu.oauth_url.replace("http://", "https://")
    cfg = config_for(emu, api_base=https_base, oauth_url=https_token)
    sync_client = TruConnectClient(
        cfg, token_cache=TokenCache(), clock=clock, retry_policy=RetryPolicy(sleep=clock.advance)
    )
    with pytest.raises(TruConnectConnectionError, match="TLS") as sync_info:
        sync_client.request("GET", "/v2/products")
    assert not sync_info.value.retryable and sync_client.requests_sent == 1

    async def asleep(seconds: float) -> None:
        clock.advance(seconds)

    async def run() -> tuple[BaseException, int]:
        async with AsyncTruConnectClient(
            cfg, token_cache=TokenCache(), clock=clock, retry_policy=RetryPolicy(asleep=asleep)
        ) as client:
            try:
                await client.request("GET", "/v2/products")
            except TruConnectConnectionError as exc:
                return exc, client.requests_sent
            raise AssertionError("the TLS handshake should have failed")

    async_exc, sent = asyncio.run(run())
    assert "TLS" in str(async_exc) and not getattr(async_exc, "retryable", True)
    assert sent == 1


# ------------------------------------------------------------------------------------ local mistakes
@pytest.mark.parametrize(
    "headers", [{"X-Foo": 1}, {"X-Foo": "a\r\nX-Injected: 1"}, {"X-Foo": "caf\u00e9"}], ids=["int", "crlf", "latin1"]
)
def test_bad_header_on_an_order_is_a_config_error_not_an_uncertain_order(harness: Harness, headers: Any) -> None:
    body = activation_order(harness.emu)
    with pytest.raises(TruConnectConfigError) as info:
        harness.call("POST", ORDERS, json=body, headers=headers)
    assert info.value.field == "headers.X-Foo"
    assert "MAY have been created" not in str(info.value)
    assert harness.waits == []  # not retried
    assert harness.stats()["requests_by_route"].get("POST /v2/orders", {}) == {}
    assert harness.emu.control.orders() == []


def test_non_json_body_is_a_config_error_before_sending(harness: Harness) -> None:
    with pytest.raises(TruConnectConfigError) as info:
        harness.call("POST", "/v2/subscriptions/x/activate", json={"when": object()})
    assert info.value.field == "json.when"
    assert harness.stats()["requests_total"] == 0
