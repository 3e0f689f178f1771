"""Trigger rules asserted so that breaking one fails a test (issue 11).

* ``TruConnectSensorTrigger`` keeps polling through retryable errors that outlast the client's retry budget (5xx,
  429, connection errors): the condition may still be met before the deadline. Only a non-retryable error ends the
  wait with an ``error`` event.
* The same for ``TruConnectOrderTrigger`` on a 429, and both triggers never send anything but ``GET``.

Sleeping is replaced by a recorder, so the polls follow one another without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger, TruConnectSensorTrigger

ORDER_ROUTE = "GET /v2/orders/{order_id}"


async def first_event(trigger: Any) -> dict[str, Any]:
    gen = trigger.run()
    event = await anext(gen)
    await gen.aclose()
    payload: dict[str, Any] = event.payload
    return payload


@pytest.fixture
def no_retries_no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """No retries inside a poll (so a single 503 outlasts the budget) and no real sleeping between polls."""
    slept: list[float] = []

    async def record(self: Any, seconds: float) -> None:
        slept.append(seconds)

    for cls in (TruConnectOrderTrigger, TruConnectSensorTrigger):
        monkeypatch.setattr(cls, "retry_policy", RetryPolicy(max_retries=0))
        monkeypatch.setattr(cls, "_sleep", record)
    return slept


def place(body: dict[str, Any]) -> str:
    with TruConnectHook() as hook:
        order_id: str = hook.create_order(body)["id"]
    return order_id


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503},
        {"status": 500},
        {"status": 502},
        {"status": 429, "retry_after": 0},
        {"drop": True},
    ],
    ids=["503", "500", "502", "429", "dropped"],
)
async def test_sensor_trigger_polls_on_through_retryable_errors(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], no_retries_no_sleep: list[float], fault: Any
) -> None:
    order_id = place(order_body())
    emu.control.advance(10)  # the order is COMPLETED by the first successful poll
    emu.control.add_fault(route=ORDER_ROUTE, count=3, **fault)
    trigger = TruConnectSensorTrigger(
        f"/v2/orders/{order_id}", "truconnect_default", 7.0, time.time() + 600, None, "status", ["COMPLETED"]
    )
    event = await first_event(trigger)
    assert event["status"] == "success", event
    assert event["value"] == "COMPLETED"
    statuses = emu.control.stats()["requests_by_route"][ORDER_ROUTE]
    failed = sum(n for status, n in statuses.items() if status != "200")
    assert failed == 3 and statuses["200"] == 1  # three failed polls, then the one that met the condition
    assert no_retries_no_sleep == [7.0, 7.0, 7.0]


async def test_sensor_trigger_non_retryable_error_ends_the_wait(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], no_retries_no_sleep: list[float]
) -> None:
    order_id = place(order_body())
    emu.control.add_fault(route=ORDER_ROUTE, status=403, count=1)
    trigger = TruConnectSensorTrigger(
        f"/v2/orders/{order_id}", "truconnect_default", 7.0, time.time() + 600, None, "status", ["COMPLETED"]
    )
    event = await first_event(trigger)
    assert event["status"] == "error" and event["endpoint"] == f"/v2/orders/{order_id}"
    assert "403" in event["message"]
    assert emu.control.stats()["requests_by_route"][ORDER_ROUTE] == {"403": 1}
    assert no_retries_no_sleep == []


async def test_sensor_trigger_retryable_errors_until_the_deadline_time_out(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000.0]
    slept: list[float] = []

    async def sleep(self: Any, seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(TruConnectSensorTrigger, "retry_policy", RetryPolicy(max_retries=0))
    monkeypatch.setattr(TruConnectSensorTrigger, "_sleep", sleep)
    monkeypatch.setattr(TruConnectSensorTrigger, "_now", lambda self: now[0])
    order_id = place(order_body())
    emu.control.add_fault(route=ORDER_ROUTE, status=503, count=100)
    trigger = TruConnectSensorTrigger(
        f"/v2/orders/{order_id}", "truconnect_default", 10.0, 1_025.0, None, "status", ["COMPLETED"]
    )
    event = await first_event(trigger)
    assert event == {
        "status": "timeout",
        "message": f"Condition on /v2/orders/{order_id} not met by the deadline",
        "endpoint": f"/v2/orders/{order_id}",
    }
    assert slept == [10.0, 10.0, 5.0]
    assert emu.control.stats()["requests_by_route"][ORDER_ROUTE] == {"503": 4}


async def test_order_trigger_polls_on_through_a_429(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], no_retries_no_sleep: list[float]
) -> None:
    order_id = place(order_body())
    emu.control.advance(10)
    emu.control.add_fault(route=ORDER_ROUTE, status=429, retry_after=0, count=2)
    event = await first_event(TruConnectOrderTrigger(order_id, "truconnect_default", 4.0, time.time() + 600))
    assert event["status"] == "success" and event["order_id"] == order_id
    assert emu.control.stats()["requests_by_route"][ORDER_ROUTE] == {"429": 2, "200": 1}
    assert no_retries_no_sleep == [4.0, 4.0]


async def test_triggers_only_send_get(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], no_retries_no_sleep: list[float]
) -> None:
    order_id = place(order_body())
    emu.control.advance(10)
    before = emu.control.stats()["requests"]
    await first_event(TruConnectOrderTrigger(order_id, "truconnect_default", 1.0, time.time() + 600))
    await first_event(
        TruConnectSensorTrigger(
            f"/v2/orders/{order_id}", "truconnect_default", 1.0, time.time() + 600, None, "status", ["COMPLETED"]
        )
    )
    sent = emu.control.stats()["requests"][len(before) :]
    api = [r for r in sent if not r["route"].endswith("/token")]
    assert api and {r["method"] for r in api} == {"GET"}
