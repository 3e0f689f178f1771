"""Triggers and the hook's async client share one connection pool per event loop, against the emulator.

Open TCP connections are counted at the operating system (``psutil``), on the client side of this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from airflow_provider_truconnect.client.async_pool import pools_of_running_loop
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger
from tests.task_fixtures import first_event

#: ``max_connections`` of the pool built by ``new_http_client``.
POOL_LIMIT = 32


def connections_to(port: int) -> int:
    """Established TCP connections of this process whose remote end is the emulator."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


@pytest.fixture
def own_token_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not the token the sync hook obtained while placing the orders: the triggers must fetch their own.
    monkeypatch.setattr(TruConnectOrderTrigger, "token_cache", TokenCache())


async def test_many_triggers_share_one_pool_and_a_bounded_number_of_connections(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], own_token_cache: None
) -> None:
    emu.control.set_config(rate_limit_per_minute=None, order_fulfilling_after=0.2, order_complete_after=0.8)
    with TruConnectHook() as hook:
        order_ids = [hook.create_order(order_body())["id"] for _ in range(100)]
    grants_before = sum(emu.control.stats()["token_grants_total"].values())
    port = urlsplit(emu.url).port
    assert port is not None
    triggers = [TruConnectOrderTrigger(oid, "truconnect_default", 0.05, time.time() + 60) for oid in order_ids]
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, connections_to(port))
            await asyncio.sleep(0.02)

    sampler = asyncio.ensure_future(sample())
    events = await asyncio.gather(*(first_event(t) for t in triggers))
    done.set()
    await sampler
    assert [e["status"] for e in events] == ["success"] * 100
    assert len(pools_of_running_loop()) == 1 and not pools_of_running_loop()[0].is_closed
    assert 0 < peak <= POOL_LIMIT  # with a pool per trigger, 100 waits held about 100 connections
    assert sum(emu.control.stats()["token_grants_total"].values()) - grants_before == 1


async def test_a_finished_trigger_leaves_the_pool_to_the_others(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]
) -> None:
    with TruConnectHook() as hook:
        first_id, second_id = hook.create_order(order_body())["id"], hook.create_order(order_body())["id"]
    first = TruConnectOrderTrigger(first_id, "truconnect_default", 0.02, time.time() + 30)
    client = await first._get_client()
    assert (await first_event(first))["status"] == "success"
    assert first._client is None and not client.http.is_closed
    second = TruConnectOrderTrigger(second_id, "truconnect_default", 0.02, time.time() + 30)
    assert (await second._get_client()).http is client.http
    await second.cleanup()
    assert not client.http.is_closed


async def test_hook_clients_share_the_pool_of_their_settings(emu: RunningEmulator, add_conn: Any) -> None:
    first = await TruConnectHook().get_async_client()
    second = await TruConnectHook().get_async_client()
    slower = await TruConnectHook(add_conn("truconnect_slow", timeout=7)).get_async_client()
    assert first.http is second.http and slower.http is not first.http
    await first.aclose()
    assert (await second.request("GET", "/v2/products"))["data"]
    for client in (second, slower):
        await client.aclose()
    assert not first.http.is_closed and not slower.http.is_closed  # closed when the loop ends, not before


def test_the_pool_closes_when_the_triggerer_loop_ends(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]
) -> None:
    with TruConnectHook() as hook:
        order_id = hook.create_order(order_body())["id"]
    port = urlsplit(emu.url).port
    assert port is not None
    before = connections_to(port)  # the emulator's control-plane session may hold one
    seen: list[Any] = []

    async def triggerer() -> None:
        trigger = TruConnectOrderTrigger(order_id, "truconnect_default", 0.02, time.time() + 30)
        assert (await first_event(trigger))["status"] == "success"
        seen.extend(pools_of_running_loop())
        assert connections_to(port) > before  # kept alive for the next trigger

    asyncio.run(triggerer())
    assert len(seen) == 1 and seen[0].is_closed
    assert connections_to(port) == before
