"""One ``httpx.AsyncClient`` (connection pool) per event loop and transport settings, shared by every async client.

A triggerer runs every trigger in one event loop. Were each trigger to open its own pool, 1,000 deferred waits would
keep 1,000 TCP (and TLS) connections to the API open between their polls; sharing one pool per loop bounds them by
the pool's limit (``max_connections`` of :func:`new_http_client`),
and the waits reuse each other's connections.

The pool is keyed by the running loop (an httpx pool belongs to the loop it was opened in) and by every setting of
the configuration that :func:`new_http_client` reads
(:data:`TRANSPORT_FIELDS`), so that two configurations share a pool only when it is the pool each would have built.
Requests enter a shared pool through :func:`request_slot`, at most :data:`MAX_IN_FLIGHT` at a time: httpx's pool scans
its whole queue of waiting requests whenever one is added or finishes, so 1,000 triggers polling at the same moment
would cost the loop seconds of CPU per round of polls; the surplus waits in a first-come first-served semaphore
instead.
Clients that use a shared pool do not close it (``AsyncTruConnectClient.aclose`` closes only a pool it opened); it is
closed when its loop ends: a task of the loop waits for cancellation, which ``asyncio.run`` (the triggerer's and the
tests' way to run a loop) delivers to every remaining task before closing the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Hashable
from typing import Any

import httpx

from airflow_provider_truconnect.client.config import ClientConfig

log = logging.getLogger(__name__)

#: The configuration fields that shape the transport built by ``new_http_client``: TLS trust (``verify_ssl`` and the
#: trust resolved from it) and the timeouts. A test checks that ``new_http_client`` reads nothing else.
TRANSPORT_FIELDS = ("verify_ssl", "trust", "timeout", "connect_timeout")

#: Requests let into one shared pool at once: the pool's ``max_connections`` (a test checks that they agree).
MAX_IN_FLIGHT = 32

PoolKey = tuple[Hashable, ...]


class _LoopPools:
    """The pools of one event loop, and the task that closes them when the loop ends."""

    def __init__(self) -> None:
        self.clients: dict[PoolKey, httpx.AsyncClient] = {}
        self.closer: asyncio.Task[None] | None = None

    async def close_when_cancelled(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            with _GUARD:
                if _POOLS.get(loop) is self:
                    del _POOLS[loop]
            clients, self.clients = list(self.clients.values()), {}
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPools] = weakref.WeakKeyDictionary()
_GATES: weakref.WeakKeyDictionary[httpx.AsyncClient, asyncio.Semaphore] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def pool_key(config: ClientConfig) -> PoolKey:
    """The settings that decide whether two configurations may share a pool.

    :param config: the client configuration.
    :return: the values of :data:`TRANSPORT_FIELDS` (fields this version of the configuration lacks are skipped).
    """
    return tuple(getattr(config, name, None) for name in TRANSPORT_FIELDS)


def new_http_client(config: ClientConfig) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` (connection pool) for a configuration: its TLS trust, timeouts and limits.

    The one place where the async transport is configured; clients built for the same settings may share one.

    :param config: the client configuration.
    :return: a new client; the caller closes it.
    """
    return httpx.AsyncClient(
        verify=config.trust.ssl_context(),
        timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
        # Keep-alive for every connection the pool may open: a burst of polls then reuses them instead of reconnecting.
        limits=httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT),
        follow_redirects=False,
    )


def shared_http_client(config: ClientConfig) -> httpx.AsyncClient:
    """The running loop's pool for this configuration's transport settings, built on first use.

    Must be called from a coroutine. Do not close the returned client: it is closed when the loop ends.

    :param config: the client configuration.
    :return: the shared ``httpx.AsyncClient``.
    :raises RuntimeError: when no event loop is running.
    """
    loop = asyncio.get_running_loop()
    key = pool_key(config)
    with _GUARD:
        pools = _POOLS.get(loop)
        if pools is None:
            pools = _POOLS[loop] = _LoopPools()
        client = pools.clients.get(key)
        if client is not None and not client.is_closed:
            return client
        client = pools.clients[key] = new_http_client(config)
        _GATES[client] = asyncio.Semaphore(MAX_IN_FLIGHT)
        if pools.closer is None or pools.closer.done():
            pools.closer = loop.create_task(pools.close_when_cancelled(loop), name="truconnect-http-pool-closer")
    log.debug("Opened a shared HTTP connection pool for this event loop (%d in it)", len(pools.clients))
    return client


def request_slot(http: httpx.AsyncClient) -> contextlib.AbstractAsyncContextManager[Any]:
    """What to hold while sending one request through ``http``: a place in the shared pool's queue.

    :param http: the client the request goes through.
    :return: the pool's semaphore when ``http`` is a shared pool, else a context that does nothing.
    """
    gate = _GATES.get(http)
    return gate if gate is not None else contextlib.nullcontext()


def pools_of_running_loop() -> list[httpx.AsyncClient]:
    """The shared pools of the running loop (for tests and benchmarks).

    :return: the open clients.
    """
    pools = _POOLS.get(asyncio.get_running_loop())
    return [] if pools is None else [c for c in pools.clients.values() if not c.is_closed]


def _reset_after_fork() -> None:
    # The parent's loops do not run in a child, and a guard another thread held would stay held forever.
    global _GUARD
    _GUARD = threading.Lock()
    _POOLS.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
