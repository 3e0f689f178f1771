"""In-memory state of the emulator, composed of one part per concern.

==================  ==========================================================================================
``runtime``         the lock, the current configuration and the clock (:mod:`.runtime`, :mod:`.clock`)
``store``           products, SIMs, subscriptions and webhook events of the seed (:mod:`.store`, :mod:`.seed`,
                    :mod:`.lifecycle`, :mod:`.notifications`)
``order_engine``    orders and their lazy lifecycle (:mod:`.orders`, :mod:`.order_validation`)
``token_server``    issued tokens and grant counters (:mod:`.tokens`)
``rate_limiter``    the per-minute request limit (:mod:`.ratelimit`)
``fault_book``      injected faults (:mod:`.faults`)
``request_log``     request counters (:mod:`.stats`)
``inflight``        requests being served and the state generation they belong to (:mod:`.inflight`)
==================  ==========================================================================================

The state is transport-agnostic (no Starlette here): :mod:`.app` maps HTTP onto these parts. Every public method
holds :attr:`lock`, so tests in thread mode can read the live object safely. Time-driven behaviour is evaluated
lazily against the clock when something is read; nothing runs in the background.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from airflow_provider_truconnect.emulator.clock import EmulatorClock, iso, parse_datetime
from airflow_provider_truconnect.emulator.config import EmulatorConfig
from airflow_provider_truconnect.emulator.errors import ApiError, OAuthError, Problem, invalid_params
from airflow_provider_truconnect.emulator.faults import Fault, FaultBook
from airflow_provider_truconnect.emulator.inflight import DEFAULT_DRAIN_TIMEOUT, InFlight, Ticket
from airflow_provider_truconnect.emulator.models import SMDP_ADDRESS, Order, Product, Sim, Subscription, TokenRecord
from airflow_provider_truconnect.emulator.orders import OrderEngine
from airflow_provider_truconnect.emulator.ratelimit import RateLimiter
from airflow_provider_truconnect.emulator.runtime import Runtime
from airflow_provider_truconnect.emulator.stats import RequestLog
from airflow_provider_truconnect.emulator.store import DataStore
from airflow_provider_truconnect.emulator.tokens import TokenServer

__all__ = [
    "SMDP_ADDRESS",
    "ApiError",
    "EmulatorClock",
    "EmulatorState",
    "Fault",
    "OAuthError",
    "Order",
    "Problem",
    "Product",
    "Sim",
    "Subscription",
    "TokenRecord",
    "invalid_params",
    "iso",
    "parse_datetime",
]

_RESEED_FIELDS = ("seed", "seed_subscriptions", "clients")


class EmulatorState:
    """All mutable emulator state. Thread-safe: each public method holds :attr:`lock`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        """:param config: initial (and reset-default) configuration."""
        self.default_config = config or EmulatorConfig()
        self.runtime = Runtime(self.default_config)
        self.inflight = InFlight()
        self.reset()

    @property
    def lock(self) -> threading.RLock:
        """:return: the lock every part holds while it reads or changes state."""
        return self.runtime.lock

    @property
    def config(self) -> EmulatorConfig:
        """:return: the current configuration."""
        return self.runtime.config

    @property
    def clock(self) -> EmulatorClock:
        """:return: the emulator clock."""
        return self.runtime.clock

    def now(self) -> float:
        """:return: the emulator clock's now."""
        return self.runtime.now()

    # ------------------------------------------------------------------------------------------------- lifecycle
    def reset(self, config: EmulatorConfig | None = None, *, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Start a new generation: restore the default config (or ``config``), clock, data, tokens, faults and stats.

        Requests that arrived before the reset change nothing afterwards and are not counted; the reset wakes those
        still waiting and then waits up to ``drain_timeout`` seconds for them to finish.

        :param config: a configuration to use instead of the default one.
        :param drain_timeout: the longest wait for requests of the previous generation.
        """
        with self.lock:
            self.inflight.next_generation()
            runtime = self.runtime
            runtime.config = config or self.default_config
            runtime.clock = EmulatorClock(runtime.config.clock)
            self.token_server = TokenServer(runtime)
            self.rate_limiter = RateLimiter(runtime)
            self.fault_book = FaultBook(lambda: runtime.config.seed)
            self.request_log = RequestLog()
            self._seed()
        self.inflight.drain(drain_timeout)

    def _seed(self) -> None:
        self.store = DataStore(self.runtime)
        self.order_engine = OrderEngine(self.store)

    def close(self) -> None:
        """The server is stopping: wake every request that waits (delays, pauses, answers that never end)."""
        self.inflight.close()

    def is_current(self, ticket: Ticket) -> bool:
        """:param ticket: a request. :return: whether it arrived in the current generation (hold :attr:`lock`)."""
        return self.inflight.is_current(ticket)

    def update_config(self, updates: Mapping[str, Any]) -> EmulatorConfig:
        """Change configuration fields now; changing seed data fields (``seed``, ``seed_subscriptions``, ``clients``)
        re-seeds the data (and drops the orders).

        :param updates: field -> value.
        :return: the new configuration.
        :raises ValueError: on an unknown field or bad value.
        """
        with self.lock:
            runtime = self.runtime
            new = runtime.config.with_updates(updates)
            runtime.config = new
            if "clock" in updates:
                offset = runtime.clock.offset
                runtime.clock = EmulatorClock(new.clock)
                runtime.clock.offset = offset
            if any(k in updates for k in _RESEED_FIELDS):
                self._seed()
            return new

    # ----------------------------------------------------------------------------------------------------- stats
    def record_request(
        self,
        route: str,
        status: int,
        raw_target: str,
        correlation_id: str | None,
        client_id: str | None,
        method: str,
        *,
        ticket: Ticket | None = None,
    ) -> bool:
        """Record one answered request in the stats, unless it belongs to an earlier generation.

        :param route: route template (``GET /v2/sims/{iccid}``) or ``unmatched``.
        :param status: the HTTP status sent (0 when no HTTP answer was sent).
        :param raw_target: raw request target (path and query as received).
        :param correlation_id: the ``X-Correlation-ID`` header, if any.
        :param client_id: the authenticated client, if any.
        :param method: HTTP method.
        :param ticket: the request's ticket; without one the request counts in the current generation.
        :return: whether it was recorded.
        """
        with self.lock:
            if ticket is not None and not self.is_current(ticket):
                return False
            self.request_log.record(route, status, raw_target, correlation_id, client_id, method, self.now())
            return True

    def stats(self) -> dict[str, Any]:
        """:return: a JSON-serialisable snapshot of the counters (see the control plane docs)."""
        with self.lock:
            tokens = self.token_server
            totals, failures = tokens.grant_totals()
            return {
                "now": self.now(),
                **self.request_log.snapshot(),
                "token_grants": {c: dict(g) for c, g in tokens.grants.items()},
                "token_grants_total": totals,
                "token_failures": {g: dict(e) for g, e in tokens.grant_failures.items()},
                "token_failures_by_error": failures,
                "orders_created": [
                    {"id": o.id, "client_id": o.client_id, "correlation_id": o.correlation_id}
                    for o in self.order_engine.order_log
                ],
                "notifications": list(self.store.notifier.events),
            }

    # ---------------------------------------------------------------------------------------------------- faults
    def add_fault(self, data: Mapping[str, Any]) -> Fault:
        """:param data: fault JSON (see :meth:`Fault.from_json`).
        :return: the stored fault.
        :raises ValueError: on a bad description."""
        with self.lock:
            return self.fault_book.add(data)

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self.lock:
            self.fault_book.clear()

    @property
    def faults(self) -> list[Fault]:
        """:return: the pending faults, in the order they were added."""
        return self.fault_book.faults

    # ------------------------------------------------------------------------------------------- data (read-only)
    def list_subscriptions(
        self, client_id: str, page: int, page_size: int, **filters: Any
    ) -> tuple[list[Subscription], bool]:
        """See :meth:`DataStore.list_subscriptions`.

        :param client_id: caller. :param page: 1-based page. :param page_size: items per page.
        :param filters: ``iccid``, ``email``, ``product_id``, ``before``, ``after``, ``statuses``.
        :return: the page and whether another page exists.
        """
        return self.store.list_subscriptions(client_id, page, page_size, **filters)

    @property
    def products(self) -> dict[str, Product]:
        """:return: products by id."""
        return self.store.products

    @property
    def product_list(self) -> list[Product]:
        """:return: products in catalogue order."""
        return self.store.product_list

    @property
    def sims(self) -> dict[str, Sim]:
        """:return: SIMs of every client by ICCID."""
        return self.store.sims

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """:return: subscriptions of every client by id."""
        return self.store.subscriptions

    @property
    def subs_by_iccid(self) -> dict[str, list[Subscription]]:
        """:return: each SIM's subscriptions, oldest first."""
        return self.store.subs_by_iccid

    @property
    def client_subs(self) -> dict[str, list[Subscription]]:
        """:return: each client's subscriptions, oldest first."""
        return self.store.client_subs

    @property
    def orders(self) -> dict[str, Order]:
        """:return: orders by id."""
        return self.order_engine.orders

    @property
    def issued_tokens(self) -> list[str]:
        """:return: every access and refresh token issued in this generation, oldest first."""
        return self.token_server.issued_tokens

    @property
    def notifications(self) -> list[dict[str, Any]]:
        """:return: recorded webhook events."""
        return self.store.notifier.events
