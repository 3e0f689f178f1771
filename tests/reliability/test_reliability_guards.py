"""Over real sockets, two rules that guard money (issue 11), for both transports:

* a **connect timeout** proves that the request never reached a server, so an order POST that hit one is sent again
  (and only then): the port here listens with a full accept queue, so the kernel drops the connection attempt and the
  client's connect times out, exactly as against a host that does not answer;
* a **401 for a stale token** (one client's request was sent with token A while another client of the same cache
  already had A rejected and obtained B) does not throw B away: one renewal, not two.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from airflow_provider_truconnect.client import (
    AsyncTruConnectClient,
    RetryPolicy,
    TokenCache,
    TruConnectClient,
    TruConnectConnectionError,
    TruConnectOrderUncertainError,
)
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.tokens import Token
from airflow_provider_truconnect.emulator.server import RunningEmulator
from tests.conftest import FakeClock
from tests.reliability.support import activation_order

ORDER_ROUTE = "POST /v2/orders"
PRODUCTS_ROUTE = "GET /v2/products"
#: Short, so that a test that waits for a connect timeout spends well under a second on each.
CONNECT_TIMEOUT = 0.3


class SilentPort:
    """A listening port whose accept queue is full: connection attempts get no answer and time out.

    ``listen(0)`` keeps one connection in the queue; this port fills it itself, after which the kernel drops every
    new connection attempt (a connect timeout on the client's side, and provably nothing sent). :meth:`open` empties
    the queue and forwards the connections that follow to ``upstream_port``.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port: int = self.sock.getsockname()[1]
        self.fillers: list[socket.socket] = []
        self.opened = False
        for _ in range(16):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.settimeout(CONNECT_TIMEOUT)
            try:
                probe.connect(("127.0.0.1", self.port))
            except TimeoutError:
                probe.close()
                return
            self.fillers.append(probe)
        raise RuntimeError("the accept queue never filled up")

    def open(self) -> None:
        if self.opened:
            return
        self.opened = True
        for filler in self.fillers:  # accepted before any real client, so the next connection goes through
            filler.close()
            conn, _ = self.sock.accept()
            conn.close()
        threading.Thread(target=self._accept, daemon=True, name="silent-port").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def silent_port(clocked_emulator: tuple[RunningEmulator, FakeClock]) -> Iterator[SilentPort]:
    emu, _ = clocked_emulator
    port = SilentPort(urlsplit(emu.url).port or 0)
    try:
        yield port
    finally:
        port.close()


def _config(emu: RunningEmulator, api_base: str | None = None) -> ClientConfig:
    return ClientConfig(
        client_id=emu.client_id,
        client_secret=emu.client_secret,
        api_base=api_base or emu.api_base,
        oauth_url=emu.oauth_url,
        connect_timeout=CONNECT_TIMEOUT,
    )


def _place_order(
    mode: str, config: ClientConfig, clock: FakeClock, body: dict[str, Any], on_wait: Any
) -> tuple[Any, list[float]]:
    """Place an order through the sync or async client; the retry waits call ``on_wait`` and advance the clock."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        on_wait()
        clock.advance(seconds)

    async def asleep(seconds: float) -> None:
        sleep(seconds)

    policy = RetryPolicy(max_retries=2, sleep=sleep, asleep=asleep)
    if mode == "sync":
        with TruConnectClient(config, token_cache=TokenCache(), clock=clock, retry_policy=policy) as client:
            try:
                return client.create_order(body), waits
            except Exception as exc:
                return exc, waits

    async def place() -> Any:
        async with AsyncTruConnectClient(config, token_cache=TokenCache(), clock=clock, retry_policy=policy) as client:
            try:
                return await client.request("POST", "/v2/orders", json=body)
            except Exception as exc:
                return exc

    return asyncio.run(place()), waits


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_order_that_hit_a_connect_timeout_is_placed_exactly_once(
    mode: str, clocked_emulator: tuple[RunningEmulator, FakeClock], silent_port: SilentPort
) -> None:
    emu, clock = clocked_emulator
    config = _config(emu, f"http://127.0.0.1:{silent_port.port}{urlsplit(emu.api_base).path}")
    created, waits = _place_order(mode, config, clock, activation_order(emu), silent_port.open)
    assert isinstance(created, dict), created
    assert [o["id"] for o in emu.control.orders()] == [created["id"]]
    assert emu.control.stats()["requests_by_route"][ORDER_ROUTE] == {"201": 1}
    assert len(waits) == 1  # one connect timeout, one retry


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_order_that_never_gets_a_connection_fails_as_not_sent(
    mode: str, clocked_emulator: tuple[RunningEmulator, FakeClock], silent_port: SilentPort
) -> None:
    emu, clock = clocked_emulator
    config = _config(emu, f"http://127.0.0.1:{silent_port.port}{urlsplit(emu.api_base).path}")
    err, waits = _place_order(mode, config, clock, activation_order(emu), lambda: None)
    assert type(err) is TruConnectConnectionError
    assert not isinstance(err, TruConnectOrderUncertainError)
    assert f"POST {urlsplit(emu.api_base).path}/v2/orders: connect timeout" in str(err)
    assert err.sent is False and err.retryable
    assert len(waits) == 2  # every attempt of the budget was made
    assert emu.control.orders() == []
    assert ORDER_ROUTE not in emu.control.stats()["requests_by_route"]


# ------------------------------------------------------------------------------------------- stale-token 401
def _grants(emu: RunningEmulator) -> int:
    return sum(emu.control.stats()["token_grants_total"].values())


def test_a_late_401_for_a_replaced_token_keeps_the_new_token_sync(
    clocked_emulator: tuple[RunningEmulator, FakeClock], mocker: Any
) -> None:
    emu, clock = clocked_emulator
    cache = TokenCache()
    late = TruConnectClient(_config(emu), token_cache=cache, clock=clock)
    other = TruConnectClient(_config(emu), token_cache=cache, clock=clock)
    send = late.session.request
    stale: list[str] = []

    def send_after_the_other_client_renewed(method: str, url: str, **kwargs: Any) -> Any:
        auth = kwargs["headers"].get("Authorization", "")
        if not stale and auth.startswith("Bearer "):
            # While this request is on its way with token A, A is revoked and the other client renews to B.
            stale.append(auth.removeprefix("Bearer "))
            emu.control.revoke(stale[0])
            assert other.request("GET", "/v2/products", params={"page_size": 1})["data"]
        return send(method, url, **kwargs)

    mocker.patch.object(late.session, "request", side_effect=send_after_the_other_client_renewed)
    try:
        assert late.request("GET", "/v2/products", params={"page_size": 1})["data"]
        assert late.request("GET", "/v2/products", params={"page_size": 1})["data"]
    finally:
        late.close()
        other.close()
    assert stale and _grants(emu) == 2  # A, then B once: the late 401 for A did not discard B
    assert emu.control.stats()["requests_by_route"][PRODUCTS_ROUTE] == {"401": 2, "200": 3}
    current = cache.get(late.tokens.key)
    assert current is not None and current.access_token != stale[0] and current.is_fresh(clock())


def test_a_late_401_for_a_replaced_token_keeps_the_new_token_async(
    clocked_emulator: tuple[RunningEmulator, FakeClock],
) -> None:
    emu, clock = clocked_emulator
    cache = TokenCache()
    stale: list[str] = []

    async def scenario() -> Token:
        other = AsyncTruConnectClient(_config(emu), token_cache=cache, clock=clock)

        async def before_send(request: httpx.Request) -> None:
            auth = request.headers.get("Authorization", "")
            if not stale and auth.startswith("Bearer "):
                stale.append(auth.removeprefix("Bearer "))
                await asyncio.to_thread(emu.control.revoke, stale[0])
                assert (await other.request("GET", "/v2/products", params={"page_size": 1}))["data"]

        http = httpx.AsyncClient(event_hooks={"request": [before_send]})
        late = AsyncTruConnectClient(_config(emu), http_client=http, token_cache=cache, clock=clock)
        try:
            assert (await late.request("GET", "/v2/products", params={"page_size": 1}))["data"]
            assert (await late.request("GET", "/v2/products", params={"page_size": 1}))["data"]
            return await late.token()
        finally:
            await http.aclose()
            await other.aclose()

    current = asyncio.run(scenario())
    assert stale and _grants(emu) == 2
    assert emu.control.stats()["requests_by_route"][PRODUCTS_ROUTE] == {"401": 2, "200": 3}
    assert current.access_token != stale[0]
