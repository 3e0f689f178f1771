"""Triggers against the emulator over real sockets: events, deadlines, faults, and one token for 200 triggers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_truconnect.client.models import (
    MAX_EVENT_VALUE_BYTES,
    bounded_value,
    extract_field,
    order_failure,
)
from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger, TruConnectSensorTrigger
from tests.task_fixtures import first_event

ORDER_ROUTE = "GET /v2/orders/{order_id}"


def order_trigger(
    order_id: str, conn_id: str = "truconnect_default", *, poll_interval: float, end_time: float
) -> TruConnectOrderTrigger:
    return TruConnectOrderTrigger(order_id, conn_id, poll_interval, end_time)


def sensor_trigger(
    endpoint: str, *, poll_interval: float = 0.02, end_time: float, **kwargs: Any
) -> TruConnectSensorTrigger:
    return TruConnectSensorTrigger(endpoint, "truconnect_default", poll_interval, end_time, **kwargs)


def place(emu: RunningEmulator, body: dict[str, Any]) -> str:
    with TruConnectHook() as hook:
        order_id: str = hook.create_order(body)["id"]
    return order_id


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        TruConnectOrderTrigger, "retry_policy", RetryPolicy(backoff_base=0.01, backoff_max=0.02, max_retry_after=0.05)
    )
    monkeypatch.setattr(
        TruConnectSensorTrigger, "retry_policy", RetryPolicy(backoff_base=0.01, backoff_max=0.02, max_retry_after=0.05)
    )


# ------------------------------------------------------------------------------------------------ serialisation
def test_order_trigger_serialize_round_trips() -> None:
    trigger = TruConnectOrderTrigger("o-1", "my_conn", 2.5, 1_800_000_000.0)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_truconnect.triggers.truconnect.TruConnectOrderTrigger"
    assert kwargs == {"order_id": "o-1", "truconnect_conn_id": "my_conn", "poll_interval": 2.5, "end_time": 1.8e9}
    assert TruConnectOrderTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_sensor_trigger_serialize_round_trips() -> None:
    trigger = TruConnectSensorTrigger("/v2/sims/1", "my_conn", 3, 1_800_000_000, {"a": "b"}, "status", ("Installed",))
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_truconnect.triggers.truconnect.TruConnectSensorTrigger"
    assert kwargs == {
        "endpoint": "/v2/sims/1",
        "truconnect_conn_id": "my_conn",
        "poll_interval": 3.0,
        "end_time": 1.8e9,
        "query": {"a": "b"},
        "field_path": "status",
        "accepted_values": ["Installed"],
    }
    assert TruConnectSensorTrigger(**kwargs).serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"order_id": "", "truconnect_conn_id": "c", "poll_interval": 1, "end_time": 1.0},
        {"order_id": "o", "truconnect_conn_id": "c", "poll_interval": 0, "end_time": 1.0},
        {"order_id": "o", "truconnect_conn_id": "c", "poll_interval": 1, "end_time": "tomorrow"},
    ],
)
def test_order_trigger_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TruConnectOrderTrigger(**kwargs)


def test_sensor_trigger_needs_both_condition_parts() -> None:
    with pytest.raises(ValueError, match="go together"):
        sensor_trigger("/v2/x", field_path="status", end_time=1.0)


# -------------------------------------------------------------------------------------------------- helpers
def test_extract_field_follows_dotted_paths() -> None:
    body = {"data": [{"status": "ACTIVE"}, {"status": "EXPIRED"}], "n": None}
    assert extract_field(body, "data.0.status") == (True, "ACTIVE")
    assert extract_field(body, "data.-1.status") == (True, "EXPIRED")
    assert extract_field(body, "n") == (True, None)
    assert extract_field(body, "data.5.status") == (False, None)
    assert extract_field(body, "data.x") == (False, None)
    assert extract_field(body, "missing.deeper") == (False, None)


def test_bounded_value_drops_large_values() -> None:
    assert bounded_value("ok") == "ok"
    assert bounded_value("x" * (MAX_EVENT_VALUE_BYTES + 1)) is None
    assert bounded_value({1, 2}) is None


def test_order_failure_reads_the_error_without_mutating_the_order() -> None:
    order = {"error": {"type": "ORDER_FAILED", "messages": ["a", "b"]}, "failure_reason": "c"}
    assert order_failure(order) == ("ORDER_FAILED", ["a", "b", "c"])
    assert order["error"]["messages"] == ["a", "b"]
    assert order_failure({}) == (None, [])


# ---------------------------------------------------------------------------------------------- order trigger
def activation_codes_of(emu: RunningEmulator, order_id: str) -> list[str]:
    from airflow_provider_truconnect.client.models import activation_codes

    with TruConnectHook() as hook:
        codes = activation_codes(hook.get_order(order_id))
    assert codes
    return codes


async def test_order_trigger_success(emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]) -> None:
    order_id = place(emu, order_body())
    event = await first_event(order_trigger(order_id, poll_interval=0.05, end_time=time.time() + 30))
    assert event["status"] == "success"
    assert event["order_id"] == order_id
    summary = event["summary"]
    assert summary["status"] == "COMPLETED"
    assert summary["iccid"] and summary["subscription_id"]
    # Events are stored in the metadata database: never an activation code in them.
    order = emu.control.orders()[0]
    assert not set(activation_codes_of(emu, order_id)) & set(json.dumps(event).split('"'))
    assert set(summary) == {"order_id", "status", "iccid", "subscription_id"} and order["id"] == order_id
    assert set(event) == {"status", "message", "order_id", "summary"}


async def test_order_trigger_failed_carries_the_api_messages(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]
) -> None:
    order_id = place(emu, order_body(email="jane+fail@example.com"))
    event = await first_event(order_trigger(order_id, poll_interval=0.05, end_time=time.time() + 30))
    assert event["status"] == "failed"
    assert event["error_type"] == "ORDER_FAILED"
    assert event["messages"] == ["Subscriber could not be provisioned"]
    assert "Subscriber could not be provisioned" in event["message"]
    assert event["summary"]["status"] == "FAILED"


async def test_order_trigger_times_out_at_the_absolute_deadline(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]
) -> None:
    order_id = place(emu, order_body(email="jane+slow@example.com"))
    event = await first_event(order_trigger(order_id, poll_interval=0.05, end_time=time.time() + 0.1))
    assert event["status"] == "timeout"
    assert event["summary"]["status"] in ("ACCEPTED", "FULFILLING")
    assert "deadline" in event["message"]


async def test_order_trigger_past_deadline_still_polls_once(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]
) -> None:
    # After a triggerer restart past the deadline, one poll still reports a finished order as finished.
    order_id = place(emu, order_body())
    emu.control.advance(10)
    event = await first_event(order_trigger(order_id, poll_interval=0.05, end_time=time.time() - 1))
    assert event["status"] == "success"


async def test_order_trigger_unknown_order_is_an_error_event(emu: RunningEmulator) -> None:
    event = await first_event(order_trigger("no-such-order", poll_interval=0.05, end_time=time.time() + 5))
    assert event["status"] == "error"
    assert "404" in event["message"]
    assert event["order_id"] == "no-such-order"


async def test_order_trigger_missing_connection_is_an_error_event(emu: RunningEmulator) -> None:
    trigger = order_trigger("o", "no_such_conn", poll_interval=0.05, end_time=time.time() + 5)
    event = await first_event(trigger)
    assert event["status"] == "error"
    assert "no_such_conn" in event["message"]


async def test_order_trigger_survives_5xx_and_429(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], fast_retries: None
) -> None:
    order_id = place(emu, order_body())
    emu.control.add_fault(route="token", status=503, count=1)
    emu.control.add_fault(route=ORDER_ROUTE, status=503, count=2)
    emu.control.add_fault(route=ORDER_ROUTE, status=429, retry_after=0, count=2)
    emu.control.add_fault(route=ORDER_ROUTE, status=502, count=1)
    event = await first_event(order_trigger(order_id, poll_interval=0.05, end_time=time.time() + 30))
    assert event["status"] == "success"
    statuses = emu.control.stats()["requests_by_route"][ORDER_ROUTE]
    assert statuses.get("503") == 2 and statuses.get("429") == 2 and statuses.get("502") == 1
    assert statuses.get("200", 0) >= 1


async def test_order_trigger_keeps_polling_through_an_outage_longer_than_the_retry_budget(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TruConnectOrderTrigger, "retry_policy", RetryPolicy(max_retries=0))
    order_id = place(emu, order_body())
    emu.control.add_fault(route=ORDER_ROUTE, status=503, count=3)
    event = await first_event(order_trigger(order_id, poll_interval=0.02, end_time=time.time() + 30))
    assert event["status"] == "success"
    assert emu.control.stats()["requests_by_route"][ORDER_ROUTE]["503"] == 3


async def test_200_order_triggers_share_one_token(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.control.set_config(rate_limit_per_minute=None, order_fulfilling_after=0.2, order_complete_after=0.6)
    with TruConnectHook() as hook:
        order_ids = [hook.create_order(order_body())["id"] for _ in range(200)]
    grants_before = sum(emu.control.stats()["token_grants_total"].values())
    # A cache of their own, so the token the sync hook obtained above is not reused by the triggers.
    monkeypatch.setattr(TruConnectOrderTrigger, "token_cache", TokenCache())
    triggers = [order_trigger(oid, poll_interval=0.1, end_time=time.time() + 60) for oid in order_ids]
    events = await asyncio.gather(*(first_event(t) for t in triggers))
    stats = emu.control.stats()
    assert sum(stats["token_grants_total"].values()) - grants_before == 1
    assert [e["status"] for e in events] == ["success"] * 200
    assert {e["order_id"] for e in events} == set(order_ids)
    assert stats["requests_by_route"][ORDER_ROUTE]["200"] >= 200


async def test_cleanup_releases_the_client(emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]) -> None:
    trigger = order_trigger(place(emu, order_body()), poll_interval=0.05, end_time=time.time() + 30)
    client = await trigger._get_client()
    await trigger.cleanup()
    assert not client.http.is_closed  # the event loop's shared pool: closed when the loop ends
    assert trigger._client is None
    await trigger.cleanup()  # idempotent


async def test_cancelled_run_releases_the_client(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]
) -> None:
    trigger = order_trigger(
        place(emu, order_body(email="jane+slow@example.com")), poll_interval=0.05, end_time=time.time() + 30
    )
    task = asyncio.ensure_future(first_event(trigger))
    while trigger._client is None:
        await asyncio.sleep(0.01)
    client = trigger._client
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trigger._client is None and not client.http.is_closed


# --------------------------------------------------------------------------------------------- sensor trigger
async def test_sensor_trigger_condition_met(emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]) -> None:
    order_id = place(emu, order_body())
    trigger = sensor_trigger(
        f"/v2/orders/{order_id}", field_path="status", accepted_values=["COMPLETED"], end_time=time.time() + 30
    )
    event = await first_event(trigger)
    assert event == {
        "status": "success",
        "message": f"/v2/orders/{order_id}: status is 'COMPLETED'",
        "endpoint": f"/v2/orders/{order_id}",
        "check": "condition",
        "field_path": "status",
        "value": "COMPLETED",
    }


async def test_sensor_trigger_list_path_and_query(emu: RunningEmulator) -> None:
    with TruConnectHook() as hook:
        iccid = hook.request("GET", "/v2/subscriptions", params={"page_size": 1})["data"][0]["sim_id"]
    trigger = sensor_trigger(
        "/v2/subscriptions",
        query={"iccid": iccid},
        field_path="data.0.sim_id",
        accepted_values=[iccid],
        end_time=time.time() + 10,
    )
    event = await first_event(trigger)
    assert event["status"] == "success", event
    assert event["value"] == iccid


async def test_sensor_trigger_404_means_not_yet_then_timeout(emu: RunningEmulator) -> None:
    trigger = sensor_trigger(
        "/v2/orders/not-there", field_path="status", accepted_values=["COMPLETED"], end_time=time.time() + 0.1
    )
    event = await first_event(trigger)
    assert event["status"] == "timeout"
    assert emu.control.stats()["requests_by_route"][ORDER_ROUTE]["404"] >= 1


async def test_sensor_trigger_client_error_is_an_error_event(emu: RunningEmulator) -> None:
    trigger = sensor_trigger(
        "/v2/subscriptions", query={"iccid": ""}, field_path="status", accepted_values=["x"], end_time=time.time() + 5
    )
    emu.control.add_fault(route="GET /v2/subscriptions", status=400, count=1)
    event = await first_event(trigger)
    assert event["status"] == "error"
    assert "400" in event["message"]


async def test_sensor_trigger_worker_check_mode_only_waits(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def fake_sleep(self: Any, seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(TruConnectSensorTrigger, "_sleep", fake_sleep)
    trigger = sensor_trigger("/v2/products", poll_interval=30, end_time=time.time() + 600)
    event = await first_event(trigger)
    assert event["status"] == "success" and event["check"] == "worker"
    assert slept == [30.0]
    assert emu.control.stats()["requests_total"] == 0  # nothing sent: the worker fetches a fresh response

    late = sensor_trigger("/v2/products", poll_interval=30, end_time=time.time() - 1)
    assert (await first_event(late))["status"] == "timeout"


async def test_sensor_trigger_never_sleeps_past_the_deadline(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000.0]
    slept: list[float] = []

    async def fake_sleep(self: Any, seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(TruConnectSensorTrigger, "_sleep", fake_sleep)
    monkeypatch.setattr(TruConnectSensorTrigger, "_now", lambda self: now[0])
    trigger = sensor_trigger(
        "/v2/orders/x", field_path="status", accepted_values=["COMPLETED"], poll_interval=10, end_time=1_025.0
    )
    event = await first_event(trigger)
    assert event["status"] == "timeout"
    assert slept == [10.0, 10.0, 5.0]
