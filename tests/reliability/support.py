"""Helpers of the reliability suite: a hook and an async client on an emulator that shares the test's clock.

Retries wait on the fake clock (``RetryPolicy(sleep=..., asleep=...)``), so the suite measures *simulated* waiting
and never sleeps; only the read-timeout and drop scenarios spend a little real time, by nature.

The measured figures of every scenario are gathered in :data:`REPORT` and written to ``test-results/reliability.json``
at the end of the session by ``conftest.py`` (merged into the existing file, so a partial run refreshes only what it
ran). They live here, not in ``conftest.py``, so that tests and fixtures share one module object.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import Connection

from airflow_provider_truconnect.client import AsyncTruConnectClient, RetryPolicy, TokenCache
from airflow_provider_truconnect.client.orders import validate_order
from airflow_provider_truconnect.client.paths import ORDERS
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from tests.conftest import FakeClock

RESULTS_FILE = Path(__file__).resolve().parents[2] / "test-results" / "reliability.json"
#: scenario name -> measured figures; filled by the tests, written at session end.
REPORT: dict[str, dict[str, Any]] = {}


def report(name: str, **figures: Any) -> None:
    """Record the figures of one scenario for ``test-results/reliability.json`` and the README table."""
    REPORT[name] = figures


def connection_for(emu: RunningEmulator, **extra: Any) -> Connection:
    """An Airflow Connection pointing at the emulator, with extra fields merged in."""
    return Connection(
        conn_id="tc_reliability",
        conn_type="truconnect",
        host=extra.pop("host", emu.api_base),
        login=emu.client_id,
        password=extra.pop("password", emu.client_secret),
        extra=json.dumps({"oauth_url": emu.oauth_url, **extra}),
    )


def activation_order(emu: RunningEmulator) -> dict[str, Any]:
    """A valid new-eSIM order body for a product the emulator sells."""
    assert emu.state is not None
    product = next(p for p in emu.state.product_list if "ESIM" in p.sim_type)
    return {
        "operation_type": "ACTIVATION",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": product.id},
        "subscriber": {
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "country_of_residence": "GB",
            "device": {"operating_system": "ios", "model": "iPhone", "id": "1234567"},
        },
    }


@dataclass
class Harness:
    """One way of calling the API (``sync``: the hook; ``async``: ``AsyncTruConnectClient``) with a fake clock."""

    emu: RunningEmulator
    clock: FakeClock
    mode: str
    extra: dict[str, Any] = field(default_factory=dict)
    cache: TokenCache = field(default_factory=TokenCache)
    waits: list[float] = field(default_factory=list)
    policy: RetryPolicy = field(init=False)
    _hook: TruConnectHook | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.policy = self.make_policy()

    def make_policy(self, **kwargs: Any) -> RetryPolicy:
        def sleep(seconds: float) -> None:
            self.waits.append(seconds)
            self.clock.advance(seconds)

        async def asleep(seconds: float) -> None:
            sleep(seconds)

        return RetryPolicy(sleep=sleep, asleep=asleep, **kwargs)

    @property
    def hook(self) -> TruConnectHook:
        if self._hook is None:
            self._hook = TruConnectHook(
                "tc_reliability",
                connection=connection_for(self.emu, **self.extra),
                clock=self.clock,
                retry_policy=self.policy,
                token_cache=self.cache,
            )
        return self._hook

    def reconfigure(self, policy: RetryPolicy | None = None, **extra: Any) -> None:
        """Change connection extras or the policy; the next call builds a new hook / client."""
        self.extra.update(extra)
        if policy is not None:
            self.policy = policy
        if self._hook is not None:
            self._hook.close()
        self._hook = None

    def call(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return self.hook.request(method, endpoint, **kwargs)
        return asyncio.run(self._acall(method, endpoint, kwargs))

    async def _acall(self, method: str, endpoint: str, kwargs: dict[str, Any]) -> Any:
        client = await self.async_client()
        try:
            return await client.request(method, endpoint, **kwargs)
        finally:
            await client.aclose()

    async def async_client(self) -> AsyncTruConnectClient:
        """The async client as triggers build it: through the hook's async connection path."""
        return await self.hook.get_async_client()

    def create_order(self, body: dict[str, Any]) -> Any:
        if self.mode == "sync":
            return self.hook.create_order(body)
        return self.call("POST", ORDERS, json=validate_order(body))

    def close(self) -> None:
        if self._hook is not None:
            self._hook.close()

    # ------------------------------------------------------------------ emulator views
    def stats(self) -> dict[str, Any]:
        return self.emu.control.stats()

    def route_counts(self, route: str) -> dict[str, int]:
        return dict(self.stats()["requests_by_route"].get(route, {}))

    def settle(self, route: str, requests: int, deadline_s: float = 5.0) -> None:
        """Wait (real time, briefly) until the emulator has answered ``requests`` requests on ``route``.

        A request the client gave up on (read timeout) is still being served; it must land in *this* test's stats,
        not in the next test's, which shares the emulator.
        """
        end = time.monotonic() + deadline_s
        while sum(self.route_counts(route).values()) < requests and time.monotonic() < end:
            time.sleep(0.05)

    def recorded_statuses(self, correlation_id: str) -> list[int]:
        """Statuses the emulator recorded for requests carrying this correlation id (0 = dropped)."""
        return [r["status"] for r in self.stats()["requests"] if r["correlation_id"] == correlation_id]


class Gate:
    """A port that refuses connections until :meth:`open`, then forwards them to the emulator.

    Bound but not listening, the socket makes the kernel refuse connections: a request sent there provably never
    reached any server. Opening the gate (e.g. from the retry policy's sleep) lets the next attempt through.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.opened = False

    def open(self) -> None:
        if self.opened:
            return
        self.opened = True
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True, name="reliability-gate").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
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

    def close(self) -> None:
        self.sock.close()
