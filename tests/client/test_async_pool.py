"""The shared async connection pool: one per event loop and transport settings, closed when the loop ends."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import httpx
import pytest

from airflow_provider_truconnect.client import async_pool
from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient
from airflow_provider_truconnect.client.async_pool import (
    TRANSPORT_FIELDS,
    new_http_client,
    pool_key,
    shared_http_client,
)
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.emulator.server import RunningEmulator


def config(**kwargs: Any) -> ClientConfig:
    return ClientConfig(client_id="id", client_secret="secret", api_base="https://api.example.com", **kwargs)


class _Recorder:
    """A configuration that records which of its attributes are read."""

    def __init__(self, wrapped: ClientConfig) -> None:
        self._wrapped = wrapped
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._wrapped, name)


async def test_the_pool_key_covers_every_setting_new_http_client_reads() -> None:
    recorder = _Recorder(config())
    client = new_http_client(recorder)  # type: ignore[arg-type]
    await client.aclose()
    assert recorder.read, "new_http_client read no setting at all?"
    assert recorder.read <= set(TRANSPORT_FIELDS), f"add {recorder.read - set(TRANSPORT_FIELDS)} to TRANSPORT_FIELDS"


def test_the_key_ignores_credentials_and_follows_transport_settings() -> None:
    base = config()
    assert pool_key(base) == pool_key(dataclasses.replace(base, client_id="other", client_secret="other-secret"))
    assert pool_key(base) == pool_key(dataclasses.replace(base, max_retries=0, oauth_cache="host"))
    for changed in ({"timeout": 5.0}, {"connect_timeout": 1.0}, {"verify_ssl": False}):
        assert pool_key(base) != pool_key(dataclasses.replace(base, **changed)), changed


async def test_one_pool_per_loop_and_settings() -> None:
    base = config()
    first = shared_http_client(base)
    assert shared_http_client(dataclasses.replace(base, client_id="other", client_secret="x")) is first
    assert shared_http_client(dataclasses.replace(base, timeout=5.0)) is not first
    assert shared_http_client(dataclasses.replace(base, verify_ssl=False)) is not first
    assert len(async_pool.pools_of_running_loop()) == 3

    other_loop: list[httpx.AsyncClient] = []

    async def in_other_loop() -> None:
        other_loop.append(shared_http_client(base))

    thread = threading.Thread(target=lambda: asyncio.run(in_other_loop()))
    thread.start()
    thread.join(30)
    assert other_loop[0] is not first
    assert other_loop[0].is_closed  # its loop has ended
    assert not first.is_closed


def test_the_pools_close_when_their_loop_ends() -> None:
    async def open_pools() -> tuple[asyncio.AbstractEventLoop, list[httpx.AsyncClient]]:
        return asyncio.get_running_loop(), [shared_http_client(config()), shared_http_client(config(timeout=3.0))]

    loop, pools = asyncio.run(open_pools())
    assert all(pool.is_closed for pool in pools)
    assert loop not in async_pool._POOLS  # nothing kept for a closed loop


def test_shared_http_client_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        shared_http_client(config())


async def test_a_client_on_the_shared_pool_does_not_close_it(truconnect_emulator: RunningEmulator) -> None:
    emu = truconnect_emulator
    cfg = ClientConfig.from_connection_fields(
        host=emu.api_base, login=emu.client_id, password=emu.client_secret, extra={"oauth_url": emu.oauth_url}
    )
    pool = shared_http_client(cfg)
    cache = TokenCache()
    for _ in range(2):
        async with AsyncTruConnectClient(cfg, http_client=pool, token_cache=cache) as client:
            assert (await client.request("GET", "/v2/products"))["data"]
        assert not pool.is_closed
    assert sum(emu.control.stats()["token_grants_total"].values()) == 1


async def test_no_more_requests_enter_the_pool_than_it_has_connections(truconnect_emulator: RunningEmulator) -> None:
    emu = truconnect_emulator
    emu.control.set_config(rate_limit_per_minute=None)
    cfg = ClientConfig.from_connection_fields(
        host=emu.api_base, login=emu.client_id, password=emu.client_secret, extra={"oauth_url": emu.oauth_url}
    )
    pool = shared_http_client(cfg)
    httpcore_pool = pool._transport._pool  # type: ignore[attr-defined]
    assert async_pool.MAX_IN_FLIGHT == httpcore_pool._max_connections
    client = AsyncTruConnectClient(cfg, http_client=pool, token_cache=TokenCache())
    await client.token()
    queued: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            queued.append(len(httpcore_pool._requests))
            await asyncio.sleep(0)

    sampler = asyncio.ensure_future(sample())
    results = await asyncio.gather(*(client.request("GET", "/v2/products") for _ in range(200)))
    done.set()
    await sampler
    assert all(r["data"] for r in results)
    assert 0 < max(queued) <= async_pool.MAX_IN_FLIGHT  # the other requests waited outside httpx's pool
