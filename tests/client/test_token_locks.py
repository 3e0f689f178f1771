"""The token cache's locks: single flight per key across threads *and* event loops, and a forked child that never
inherits a lock another thread held."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time

from airflow_provider_truconnect.client.auth import TokenManager
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.client.tokens import GrantRequest, Token


def _config() -> ClientConfig:
    return ClientConfig(client_id="cid", client_secret="secret-123", api_base="https://api.example.com/connect-api")


def _token(now: float, value: str) -> Token:
    return Token(access_token=value, token_type="Bearer", obtained_at=now, expires_at=now + 300)


def test_one_renewal_for_coroutines_of_different_event_loops() -> None:
    """Four threads, each with its own event loop, ask for a token at once: exactly one fetch."""
    cache = TokenCache()
    fetches: list[str] = []
    started = threading.Event()
    release = threading.Event()

    async def fetch(grant: GrantRequest, previous: Token | None) -> Token:
        fetches.append(threading.current_thread().name)
        started.set()
        while not release.is_set():  # hold the renewal open until every loop is waiting for it
            await asyncio.sleep(0.005)
        return _token(time.time(), "tok-1")

    async def no_mask(value: str) -> None:
        return None

    results: list[str] = []

    def loop_thread() -> None:
        manager = TokenManager(_config(), cache=cache, clock=time.time)
        results.append(asyncio.run(manager.aget_token(fetch, no_mask)).access_token)

    threads = [threading.Thread(target=loop_thread, name=f"loop-{i}") for i in range(4)]
    threads[0].start()
    assert started.wait(10)
    for t in threads[1:]:
        t.start()
    # The other loops are now polling the key's lock; let the first renewal finish.
    time.sleep(0.05)
    release.set()
    for t in threads:
        t.join(10)
    assert len(fetches) == 1
    assert results == ["tok-1"] * 4


def test_threads_and_an_event_loop_share_one_renewal() -> None:
    cache = TokenCache()
    fetches: list[str] = []
    release = threading.Event()
    in_fetch = threading.Event()

    def sync_fetch(grant: GrantRequest, previous: Token | None) -> Token:
        fetches.append("sync")
        in_fetch.set()
        assert release.wait(10)
        return _token(time.time(), "tok-sync")

    async def async_fetch(grant: GrantRequest, previous: Token | None) -> Token:
        fetches.append("async")
        return _token(time.time(), "tok-async")

    async def no_mask(value: str) -> None:
        return None

    got: list[str] = []
    t = threading.Thread(
        target=lambda: got.append(
            TokenManager(_config(), cache=cache, clock=time.time).get_token(sync_fetch).access_token
        )
    )
    t.start()
    assert in_fetch.wait(10)

    async def from_loop() -> str:
        waiter = asyncio.ensure_future(
            TokenManager(_config(), cache=cache, clock=time.time).aget_token(async_fetch, no_mask)
        )
        await asyncio.sleep(0.05)
        release.set()  # the loop was waiting for the thread's renewal, not starting its own
        return (await waiter).access_token

    got.append(asyncio.run(from_loop()))
    t.join(10)
    assert fetches == ["sync"] and got == ["tok-sync", "tok-sync"]


def _child_takes_the_lock(cache: TokenCache, key: tuple[str, str, str, str], result: multiprocessing.Queue) -> None:
    lock = cache.thread_lock(key)
    result.put(lock.acquire(timeout=2))


def test_a_forked_child_does_not_inherit_a_held_lock() -> None:
    """A child forked while another thread renews must not wait forever for a lock no thread will release."""
    cache = TokenCache()
    key = _config().cache_key
    held = cache.thread_lock(key)
    assert held.acquire()  # another thread of the parent is renewing
    try:
        ctx = multiprocessing.get_context("fork")
        result: multiprocessing.Queue = ctx.Queue()
        child = ctx.Process(target=_child_takes_the_lock, args=(cache, key, result))
        child.start()
        child.join(20)
        assert child.exitcode == 0
        assert result.get(timeout=5) is True
    finally:
        held.release()
    # The parent's lock is untouched.
    assert cache.thread_lock(key) is held
