"""Deferrable triggers for the Connect API: wait for an order, or for a condition on an endpoint.

Both triggers run in the triggerer's event loop and are fully asynchronous: the connection is read with Airflow's async
APIs (:meth:`TruConnectHook.get_async_client`), tokens come from the process-wide token cache (one token request per
connection, however many triggers poll), HTTP connections come from one pool per event loop and connection settings
(a bounded number of TCP connections, however many triggers poll), transient errors and 429 are retried by the
client's retry policy, and the deadline is an absolute epoch ``end_time`` so that it survives triggerer restarts. Each
trigger yields exactly one small JSON event and returns:

.. code-block:: python

    {"status": "success" | "failed" | "timeout" | "error", "message": str, ...}

Triggers only ever send ``GET`` requests, so running one twice (after a triggerer restart) is harmless.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient
from airflow_provider_truconnect.client.errors import (
    TruConnectError,
    TruConnectNotFoundError,
)
from airflow_provider_truconnect.client.models import (
    OrderStatus,
    activation_codes,
    bounded_value,
    extract_field,
    order_failed_message,
    order_failure,
    order_summary,
)
from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

T = TypeVar("T")
#: How far past the deadline a poll may run: enough for the token and one request on a busy triggerer (so the timeout
#: event carries a fresh status), far inside the minute Airflow's own deferral timeout allows beyond it
#: (``DEFER_TIMEOUT_GRACE``), so the trigger's timeout event always comes first.
DEADLINE_SLACK_SECONDS = 10.0
#: Longest rendering of a sensed value in an event's message (events are stored in the metadata database).
MAX_MESSAGE_VALUE_CHARS = 200


class _PastDeadline(Exception):
    """A poll (with its retries and waits) ran into the trigger's deadline and was cancelled."""


class _TruConnectPollingTrigger(BaseTrigger):
    """Shared plumbing: the async client, the clock, sleeping, and closing."""

    #: Test seams, deliberately outside ``serialize()``: a token cache and a retry policy for every instance.
    token_cache: TokenCache | None = None
    retry_policy: RetryPolicy | None = None

    def __init__(self, *, truconnect_conn_id: str, poll_interval: float, end_time: float) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float) or poll_interval <= 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        if isinstance(end_time, bool) or not isinstance(end_time, int | float):
            raise ValueError(f"end_time must be an epoch timestamp in seconds, got {end_time!r}")
        self.truconnect_conn_id = truconnect_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time)
        self._client: AsyncTruConnectClient | None = None

    def _now(self) -> float:
        """Epoch seconds; the deadline is absolute so it survives a triggerer restart."""
        return time.time()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _get_client(self) -> AsyncTruConnectClient:
        if self._client is None:
            hook = TruConnectHook(self.truconnect_conn_id, token_cache=self.token_cache, retry_policy=self.retry_policy)
            self._client = await hook.get_async_client()
        return self._client

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Leaves the connection pool open: it is the event loop's, shared with the other triggers of the same
            # connection settings, and closed when the loop ends.
            await client.aclose()

    async def _poll_by_deadline(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one poll, with the client's retries and waits, but never much past the deadline.

        Without the bound, one poll could take 5 attempts x (connect + read timeout) plus waits, minutes after the
        deadline, and Airflow's own deferral timeout would fire before the trigger's timeout event with the last
        status. The poll gets the time left plus :data:`DEADLINE_SLACK_SECONDS`.

        :raises _PastDeadline: when the poll ran out of that time.
        """
        budget = max(self.end_time - self._now(), 0.0) + DEADLINE_SLACK_SECONDS
        try:
            async with asyncio.timeout(budget):
                return await call()
        except TimeoutError:
            raise _PastDeadline from None

    async def _wait_before_next_poll(self) -> None:
        # Never sleep past the deadline, so that the timeout event is not late by a whole interval.
        await self._sleep(max(0.0, min(self.poll_interval, self.end_time - self._now())))

    async def cleanup(self) -> None:
        """Release the client if ``run()`` did not get to (e.g. the trigger was cancelled)."""
        await self._close()


class TruConnectOrderTrigger(_TruConnectPollingTrigger):
    """Poll ``GET /v2/orders/{order_id}`` until the order is ``COMPLETED`` or ``FAILED``, or ``end_time`` passes.

    Events (one per run):

    * ``{"status": "success", "message", "order_id", "summary"}`` when the order completed;
    * ``{"status": "failed", "message", "order_id", "summary", "error_type", "messages"}`` when it failed;
    * ``{"status": "timeout", "message", "order_id", "summary"}`` (last seen state) when ``end_time`` passed;
    * ``{"status": "error", "message", "order_id"}`` on a non-retryable error (unknown order, bad credentials ...).

    Retryable errors that outlast the client's retry budget do not end the wait: the order exists and keeps being
    fulfilled, so the trigger logs a warning and polls again at the next interval until the deadline.

    :param order_id: the order to wait for.
    :param truconnect_conn_id: the Airflow connection id.
    :param poll_interval: seconds between polls.
    :param end_time: the deadline as an epoch timestamp in seconds.
    """

    def __init__(self, order_id: str, truconnect_conn_id: str, poll_interval: float, end_time: float) -> None:
        super().__init__(truconnect_conn_id=truconnect_conn_id, poll_interval=poll_interval, end_time=end_time)
        if not isinstance(order_id, str) or not order_id.strip():
            raise ValueError("order_id must be a non-empty string")
        self.order_id = order_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and the keyword arguments that re-create this trigger."""
        return (
            "airflow_provider_truconnect.triggers.truconnect.TruConnectOrderTrigger",
            {
                "order_id": self.order_id,
                "truconnect_conn_id": self.truconnect_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the order is terminal or the deadline passes, then yield one event."""
        try:
            yield TriggerEvent(await self._poll())  # type: ignore[no-untyped-call]
        finally:
            await self._close()

    def _order_timeout(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": "timeout",
            "message": f"Order {self.order_id} not finished by the deadline "
            f"(last status {summary.get('status', 'unknown')})",
            "order_id": self.order_id,
            "summary": summary,
        }

    async def _poll(self) -> dict[str, Any]:
        order_id = self.order_id
        summary: dict[str, Any] = {"order_id": order_id}
        try:
            client = await self._get_client()
            while True:
                try:
                    order = await self._poll_by_deadline(lambda: client.get_order(order_id))
                except _PastDeadline:
                    return self._order_timeout(summary)
                except TruConnectError as exc:
                    if not exc.retryable:
                        raise
                    self.log.warning("Polling order %s failed after retries (%s); polling again", order_id, exc)
                else:
                    summary = order_summary(order)
                    status = OrderStatus.parse(order.get("status"))
                    if status is OrderStatus.COMPLETED:
                        return {
                            "status": "success",
                            "message": f"Order {order_id} COMPLETED",
                            "order_id": order_id,
                            "summary": summary,
                        }
                    if status is OrderStatus.FAILED:
                        error_type, messages = order_failure(order)
                        return {
                            "status": "failed",
                            "message": order_failed_message(order_id, error_type, messages),
                            "order_id": order_id,
                            "summary": summary,
                            "error_type": error_type,
                            "messages": messages,
                        }
                    self.log.info("Order %s is %s; next poll in %.1f s", order_id, status.value, self.poll_interval)
                if self._now() >= self.end_time:
                    return self._order_timeout(summary)
                await self._wait_before_next_poll()
        except Exception as exc:
            self.log.error("Waiting for order %s failed: %s", order_id, exc)
            return {"status": "error", "message": _describe(exc), "order_id": order_id}


class TruConnectSensorTrigger(_TruConnectPollingTrigger):
    """Poll an endpoint until a field has an accepted value, or just wait one interval for a worker-side check.

    With ``field_path`` and ``accepted_values`` the condition is evaluated here: ``GET endpoint`` every
    ``poll_interval`` until the value at ``field_path`` is in ``accepted_values`` (a 404 counts as "not yet").
    Without them (the sensor has a Python ``response_check``, which cannot travel to the triggerer) the trigger waits
    one ``poll_interval`` and fires so that the worker evaluates the callable on a fresh response.

    Events (one per run):

    * ``{"status": "success", "message", "endpoint", "check": "condition", "field_path", "value"}`` — condition met
      (``value`` is omitted when its JSON is larger than 1 KiB);
    * ``{"status": "success", "message", "endpoint", "check": "worker"}`` — interval elapsed, check on the worker;
    * ``{"status": "timeout", "message", "endpoint"}`` and ``{"status": "error", "message", "endpoint"}``.

    :param endpoint: the endpoint, relative to the API base.
    :param truconnect_conn_id: the Airflow connection id.
    :param poll_interval: seconds between polls.
    :param end_time: the deadline as an epoch timestamp in seconds.
    :param query: query parameters.
    :param field_path: dotted path of the field to test, e.g. ``status`` or ``data.0.status``.
    :param accepted_values: values of the field that satisfy the condition.
    """

    def __init__(
        self,
        endpoint: str,
        truconnect_conn_id: str,
        poll_interval: float,
        end_time: float,
        query: dict[str, Any] | None = None,
        field_path: str | None = None,
        accepted_values: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(truconnect_conn_id=truconnect_conn_id, poll_interval=poll_interval, end_time=end_time)
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise ValueError("endpoint must be a non-empty string")
        if (field_path is None) != (accepted_values is None):
            raise ValueError("field_path and accepted_values go together")
        self.endpoint = endpoint
        self.query = dict(query) if query else None
        self.field_path = field_path
        self.accepted_values = list(accepted_values) if accepted_values is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and the keyword arguments that re-create this trigger."""
        return (
            "airflow_provider_truconnect.triggers.truconnect.TruConnectSensorTrigger",
            {
                "endpoint": self.endpoint,
                "truconnect_conn_id": self.truconnect_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "query": self.query,
                "field_path": self.field_path,
                "accepted_values": self.accepted_values,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll (or wait) until the condition holds or the deadline passes, then yield one event."""
        try:
            yield TriggerEvent(await self._poll())  # type: ignore[no-untyped-call]
        finally:
            await self._close()

    def _timeout(self) -> dict[str, Any]:
        return {
            "status": "timeout",
            "message": f"Condition on {self.endpoint} not met by the deadline",
            "endpoint": self.endpoint,
        }

    async def _poll(self) -> dict[str, Any]:
        if self.field_path is None or self.accepted_values is None:
            if self._now() >= self.end_time:
                return self._timeout()
            await self._wait_before_next_poll()
            return {
                "status": "success",
                "message": f"Poll interval elapsed; response_check on {self.endpoint} runs on the worker",
                "endpoint": self.endpoint,
                "check": "worker",
            }
        try:
            client = await self._get_client()
            while True:
                try:
                    body = await self._poll_by_deadline(lambda: client.request("GET", self.endpoint, params=self.query))
                except _PastDeadline:
                    return self._timeout()
                except TruConnectNotFoundError:
                    self.log.info("%s not found yet; next poll in %.1f s", self.endpoint, self.poll_interval)
                except TruConnectError as exc:
                    if not exc.retryable:
                        raise
                    self.log.warning("Polling %s failed after retries (%s); polling again", self.endpoint, exc)
                else:
                    found, value = extract_field(body, self.field_path)
                    if found and value in self.accepted_values:
                        # Events are stored in the metadata database: no activation code goes there, not even in
                        # the message.
                        secret = isinstance(value, str) and value in activation_codes(body)
                        event: dict[str, Any] = {
                            "status": "success",
                            "message": f"{self.endpoint}: {self.field_path} is "
                            + ("<activation code>" if secret else repr(value)[:MAX_MESSAGE_VALUE_CHARS]),
                            "endpoint": self.endpoint,
                            "check": "condition",
                            "field_path": self.field_path,
                        }
                        small = bounded_value(value)
                        if (small is not None or value is None) and not secret:
                            event["value"] = small
                        return event
                    shown = bounded_value(value) if found else "<missing>"
                    if isinstance(value, str) and value in activation_codes(body):
                        shown = "<activation code>"
                    self.log.info(
                        "%s: %s is %r, waiting for one of %r",
                        self.endpoint,
                        self.field_path,
                        shown,
                        self.accepted_values,
                    )
                if self._now() >= self.end_time:
                    return self._timeout()
                await self._wait_before_next_poll()
        except Exception as exc:
            self.log.error("Polling %s failed: %s", self.endpoint, exc)
            return {"status": "error", "message": _describe(exc), "endpoint": self.endpoint}


def _describe(exc: BaseException) -> str:
    # Our errors render without secrets; anything else is reduced to its type and a bounded message.
    text = str(exc) if isinstance(exc, TruConnectError) else f"{type(exc).__name__}: {exc}"
    return text[:1000]


__all__ = ["TruConnectOrderTrigger", "TruConnectSensorTrigger"]
