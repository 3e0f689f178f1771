"""Trigger rules asserted so that breaking one fails a test (issue 11; found by ``make mutate``).

* ``TruConnectSensorTrigger`` keeps polling through retryable errors that outlast the client's retry budget (5xx,
  429, connection errors): the condition may still be met before the deadline. Only a non-retryable error ends the
  wait with an ``error`` event. The same for ``TruConnectOrderTrigger`` on a 429, and both only send ``GET``.
* No activation code goes into an event (stored in the metadata database) or a log line, not even in the message.
* A poll never runs past the deadline, the last wait ends at it, and a poll at the deadline is the last.
* Events are exact (keys, messages, bounded error text) and bad arguments are refused with their message.

Sleeping is replaced by a recorder and the clock by a fixed one wherever the test is about time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_truconnect.client.models import order_failed_message
from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger, TruConnectSensorTrigger
from tests.stub_http import JsonHandler, serving
from tests.task_fixtures import first_event

ORDER_ROUTE = "GET /v2/orders/{order_id}"


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


# ----------------------------------------------------------------------------- activation codes stay out of events
async def _completed_order(emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]) -> tuple[str, str]:
    order_id = place(order_body())
    emu.control.advance(10)
    with TruConnectHook() as hook:
        matching_id = hook.get_order(order_id)["output"]["matching_id"]
    assert isinstance(matching_id, str) and matching_id
    return order_id, matching_id


async def test_an_activation_code_that_meets_the_condition_stays_out_of_the_event(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], no_retries_no_sleep: list[float]
) -> None:
    order_id, matching_id = await _completed_order(emu, order_body)
    trigger = TruConnectSensorTrigger(
        f"/v2/orders/{order_id}", "truconnect_default", 1.0, time.time() + 60, None, "output.matching_id", [matching_id]
    )
    event = await first_event(trigger)
    assert event["status"] == "success" and event["check"] == "condition"
    assert "value" not in event  # events are stored in the metadata database
    assert event["message"] == f"/v2/orders/{order_id}: output.matching_id is <activation code>"
    assert matching_id not in json.dumps(event)


class RecordingLog:
    """Stands in for a trigger's logger (structlog on Airflow 3, logging on 2): keeps every line, formatted."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _record(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append(msg % args if args else msg)

    debug = info = warning = error = exception = _record


@pytest.fixture
def trigger_log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    log = RecordingLog()
    for cls in (TruConnectOrderTrigger, TruConnectSensorTrigger):
        monkeypatch.setattr(cls, "log", property(lambda self: log))
    return log


async def test_an_activation_code_is_never_logged_while_waiting(
    emu: RunningEmulator,
    order_body: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    trigger_log: RecordingLog,
) -> None:
    order_id, matching_id = await _completed_order(emu, order_body)
    now = [1_000.0]

    async def sleep(self: Any, seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(TruConnectSensorTrigger, "_sleep", sleep)
    monkeypatch.setattr(TruConnectSensorTrigger, "_now", lambda self: now[0])
    endpoint = f"/v2/orders/{order_id}"
    code = TruConnectSensorTrigger(endpoint, "truconnect_default", 5.0, 1_005.0, None, "output.matching_id", ["x"])
    status = TruConnectSensorTrigger(endpoint, "truconnect_default", 5.0, 1_010.0, None, "status", ["FAILED"])
    assert (await first_event(code))["status"] == "timeout"
    assert (await first_event(status))["status"] == "timeout"
    waiting = [line for line in trigger_log.lines if "waiting for one of" in line]
    assert waiting == [
        f"{endpoint}: output.matching_id is '<activation code>', waiting for one of ['x']",
        f"{endpoint}: output.matching_id is '<activation code>', waiting for one of ['x']",
        f"{endpoint}: status is 'COMPLETED', waiting for one of ['FAILED']",
        f"{endpoint}: status is 'COMPLETED', waiting for one of ['FAILED']",
    ]
    assert not any(matching_id in line for line in trigger_log.lines)


async def test_a_missing_field_is_logged_as_missing(
    emu: RunningEmulator,
    order_body: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    trigger_log: RecordingLog,
) -> None:
    order_id, _ = await _completed_order(emu, order_body)
    monkeypatch.setattr(TruConnectSensorTrigger, "_now", lambda self: 2_000.0)
    trigger = TruConnectSensorTrigger(
        f"/v2/orders/{order_id}", "truconnect_default", 5.0, 1_000.0, None, "output.nothing", ["x"]
    )
    assert (await first_event(trigger))["status"] == "timeout"
    assert f"/v2/orders/{order_id}: output.nothing is '<missing>', waiting for one of ['x']" in trigger_log.lines


class _NullAnswers(JsonHandler):
    """A token endpoint and an API whose every GET answers ``{"state": null}``."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.answer_token("null-token")

    def do_GET(self) -> None:  # noqa: N802
        self.answer_json(200, {"state": None})


async def test_a_null_value_that_meets_the_condition_is_in_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(_NullAnswers) as url:
        conn = {"conn_type": "truconnect", "host": f"{url}/api", "login": "id", "password": "secret"}
        monkeypatch.setenv("AIRFLOW_CONN_TC_NULLS", json.dumps({**conn, "extra": {"oauth_url": f"{url}/token"}}))
        trigger = TruConnectSensorTrigger("/v2/thing", "tc_nulls", 1.0, time.time() + 60, None, "state", [None])
        event = await first_event(trigger)
    assert event == {
        "status": "success",
        "message": "/v2/thing: state is None",
        "endpoint": "/v2/thing",
        "check": "condition",
        "field_path": "state",
        "value": None,
    }


# ----------------------------------------------------------------------------------------- the query is sent
async def test_the_sensor_trigger_sends_its_query(emu: RunningEmulator, no_retries_no_sleep: list[float]) -> None:
    with TruConnectHook() as hook:
        subscriptions = hook.request("GET", "/v2/subscriptions", params={"page_size": 5})["data"]
    assert len(subscriptions) >= 2
    wanted = subscriptions[-1]["sim_id"]
    assert subscriptions[0]["sim_id"] != wanted  # without the query, data.0 would be another subscription
    trigger = TruConnectSensorTrigger(
        "/v2/subscriptions", "truconnect_default", 1.0, time.time() + 60, {"iccid": wanted}, "data.0.sim_id", [wanted]
    )
    event = await first_event(trigger)
    assert event["status"] == "success" and event["value"] == wanted
    assert no_retries_no_sleep == []  # met at the first poll
    assert any(f"iccid={wanted}" in url for url in emu.control.stats()["urls"])


# ------------------------------------------------------------------------------------- exact events and bounds
async def test_worker_check_event_and_its_deadline(emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(self: Any, seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(TruConnectSensorTrigger, "_sleep", sleep)
    monkeypatch.setattr(TruConnectSensorTrigger, "_now", lambda self: 1_000.0)
    assert await first_event(TruConnectSensorTrigger("/v2/products", "truconnect_default", 3.0, 1_100.0)) == {
        "status": "success",
        "message": "Poll interval elapsed; response_check on /v2/products runs on the worker",
        "endpoint": "/v2/products",
        "check": "worker",
    }
    # At the deadline exactly, the wait is over.
    assert await first_event(TruConnectSensorTrigger("/v2/products", "truconnect_default", 3.0, 1_000.0)) == {
        "status": "timeout",
        "message": "Condition on /v2/products not met by the deadline",
        "endpoint": "/v2/products",
    }
    assert slept == [3.0]


async def test_order_timeout_event_names_the_last_status(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = place(order_body(email="jane+slow@example.com"))
    monkeypatch.setattr(TruConnectOrderTrigger, "_now", lambda self: 2_000.0)
    event = await first_event(TruConnectOrderTrigger(order_id, "truconnect_default", 1.0, 1_000.0))
    status = event["summary"]["status"]
    assert event == {
        "status": "timeout",
        "message": f"Order {order_id} not finished by the deadline (last status {status})",
        "order_id": order_id,
        "summary": event["summary"],
    }
    assert status in ("ACCEPTED", "FULFILLING") and event["summary"]["order_id"] == order_id


async def test_order_timeout_before_any_answer_says_unknown(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TruConnectOrderTrigger, "retry_policy", RetryPolicy(max_retries=0))
    monkeypatch.setattr(TruConnectOrderTrigger, "_now", lambda self: 2_000.0)
    emu.control.add_fault(route=ORDER_ROUTE, status=503, count=1)
    event = await first_event(TruConnectOrderTrigger("o-1", "truconnect_default", 1.0, 1_000.0))
    assert event == {
        "status": "timeout",
        "message": "Order o-1 not finished by the deadline (last status unknown)",
        "order_id": "o-1",
        "summary": {"order_id": "o-1"},
    }


@pytest.mark.parametrize("trigger_class", [TruConnectOrderTrigger, TruConnectSensorTrigger])
async def test_error_events_describe_the_failure_in_bounded_text(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch, trigger_class: Any
) -> None:
    async def broken(self: Any) -> Any:
        raise RuntimeError("x" * 5000)

    monkeypatch.setattr(trigger_class, "_get_client", broken)
    if trigger_class is TruConnectOrderTrigger:
        trigger: Any = TruConnectOrderTrigger("o-1", "truconnect_default", 1.0, time.time() + 60)
    else:
        trigger = TruConnectSensorTrigger("/v2/x", "truconnect_default", 1.0, time.time() + 60, None, "s", ["a"])
    event = await first_event(trigger)
    assert event["status"] == "error"
    assert event["message"] == ("RuntimeError: " + "x" * 5000)[:1000]


async def test_error_events_of_api_errors_carry_their_own_message(emu: RunningEmulator) -> None:
    event = await first_event(TruConnectOrderTrigger("no-such-order", "truconnect_default", 1.0, time.time() + 60))
    assert event["status"] == "error"
    assert event["message"].startswith("GET ") and "404" in event["message"]


# ------------------------------------------------------------------------------------------- the deadline bound
@pytest.mark.parametrize("kind", ["order", "sensor"])
async def test_a_poll_that_would_outlast_the_deadline_is_cut_short(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # The order is COMPLETED, but its answer takes 20 s: the poll gets the time left plus DEADLINE_SLACK_SECONDS (10 s)
    # and the trigger reports the timeout instead of waiting for the answer.
    order_id = place(order_body())
    emu.control.advance(10)
    emu.control.add_fault(route=ORDER_ROUTE, delay=20.0, count=1)
    for cls in (TruConnectOrderTrigger, TruConnectSensorTrigger):
        monkeypatch.setattr(cls, "_now", lambda self: 1_000.0)
    if kind == "order":
        trigger: Any = TruConnectOrderTrigger(order_id, "truconnect_default", 1.0, 1_000.2)
    else:
        trigger = TruConnectSensorTrigger(
            f"/v2/orders/{order_id}", "truconnect_default", 1.0, 1_000.2, None, "status", ["COMPLETED"]
        )
    event = await first_event(trigger)
    assert event["status"] == "timeout", event
    if kind == "order":
        assert event["summary"] == {"order_id": order_id}  # no answer arrived before the deadline


async def test_the_last_wait_ends_at_the_deadline(emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000.0]
    slept: list[float] = []

    async def sleep(self: Any, seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(TruConnectSensorTrigger, "_sleep", sleep)
    monkeypatch.setattr(TruConnectSensorTrigger, "_now", lambda self: now[0])
    trigger = TruConnectSensorTrigger(
        "/v2/orders/x", "truconnect_default", 10.0, 1_000.5, None, "status", ["COMPLETED"]
    )
    assert (await first_event(trigger))["status"] == "timeout"
    assert slept == [0.5]


async def test_an_order_poll_at_the_deadline_is_the_last(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = place(order_body(email="jane+slow@example.com"))

    async def no_more_waiting(self: Any, seconds: float) -> None:
        raise AssertionError("waited past the deadline")

    monkeypatch.setattr(TruConnectOrderTrigger, "_sleep", no_more_waiting)
    monkeypatch.setattr(TruConnectOrderTrigger, "_now", lambda self: 1_000.0)
    event = await first_event(TruConnectOrderTrigger(order_id, "truconnect_default", 5.0, 1_000.0))
    assert event["status"] == "timeout" and event["summary"]["status"] in ("ACCEPTED", "FULFILLING")
    assert emu.control.stats()["requests_by_route"][ORDER_ROUTE] == {"200": 1}


async def test_a_failed_order_event_in_full(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], no_retries_no_sleep: list[float]
) -> None:
    order_id = place(order_body(email="jane+fail@example.com"))
    emu.control.advance(10)
    event = await first_event(TruConnectOrderTrigger(order_id, "truconnect_default", 1.0, time.time() + 60))
    messages = ["Subscriber could not be provisioned"]
    assert event == {
        "status": "failed",
        "message": order_failed_message(order_id, "ORDER_FAILED", messages),
        "order_id": order_id,
        "summary": event["summary"],
        "error_type": "ORDER_FAILED",
        "messages": messages,
    }
    assert order_id in event["message"] and "ORDER_FAILED" in event["message"]
    assert event["summary"]["status"] == "FAILED"


# --------------------------------------------------------------------------------------- argument validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poll_interval": True}, "poll_interval must be a positive number of seconds, got True"),
        ({"poll_interval": "5"}, "poll_interval must be a positive number of seconds, got '5'"),
        ({"poll_interval": 0}, "poll_interval must be a positive number of seconds, got 0"),
        ({"end_time": True}, "end_time must be an epoch timestamp in seconds, got True"),
        ({"end_time": "tomorrow"}, "end_time must be an epoch timestamp in seconds, got 'tomorrow'"),
    ],
)
def test_trigger_arguments_are_checked(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"truconnect_conn_id": "c", "poll_interval": 1.0, "end_time": 1.0, **kwargs}
    with pytest.raises(ValueError) as order:
        TruConnectOrderTrigger(order_id="o", **args)
    assert str(order.value) == message
    with pytest.raises(ValueError) as sensor:
        TruConnectSensorTrigger(endpoint="/v2/x", **args)
    assert str(sensor.value) == message


@pytest.mark.parametrize("order_id", ["", "  ", None, 7])
def test_order_trigger_needs_an_order_id(order_id: Any) -> None:
    with pytest.raises(ValueError) as info:
        TruConnectOrderTrigger(order_id, "c", 1.0, 1.0)
    assert str(info.value) == "order_id must be a non-empty string"


@pytest.mark.parametrize("endpoint", ["", "  ", None, 7])
def test_sensor_trigger_needs_an_endpoint(endpoint: Any) -> None:
    with pytest.raises(ValueError) as info:
        TruConnectSensorTrigger(endpoint, "c", 1.0, 1.0)
    assert str(info.value) == "endpoint must be a non-empty string"


def test_sensor_trigger_condition_parts_go_together() -> None:
    for kwargs in ({"field_path": "status"}, {"accepted_values": ["A"]}):
        with pytest.raises(ValueError) as info:
            TruConnectSensorTrigger("/v2/x", "c", 1.0, 1.0, **kwargs)
        assert str(info.value) == "field_path and accepted_values go together"


async def test_a_large_sensed_value_is_cut_short_in_the_event_message(emu: RunningEmulator) -> None:
    with TruConnectHook() as hook:
        products = hook.request("GET", "/v2/products", params={"page_size": 50})["data"]
    assert len(repr(products)) > 1000
    trigger = TruConnectSensorTrigger(
        "/v2/products", "truconnect_default", 0.02, time.time() + 30, {"page_size": 50}, "data", [products]
    )
    event = await first_event(trigger)
    assert event["status"] == "success" and "value" not in event  # over 1 KiB: left out
    assert len(event["message"]) <= len("/v2/products: data is ") + 200
