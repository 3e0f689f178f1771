"""Limits that keep a task honest about time: a ``Retry-After`` beyond the cap ends the retries at once, and a
trigger's poll never runs past the trigger's deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_truconnect.client import RetryPolicy, TruConnectRateLimitError, TruConnectServerError
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger
from tests.reliability.support import Harness, report
from tests.task_fixtures import first_event

PRODUCTS = "GET /v2/products"


@pytest.mark.parametrize(("status", "error"), [(429, TruConnectRateLimitError), (503, TruConnectServerError)])
def test_retry_after_beyond_the_cap_fails_fast_with_the_hint(
    harness: Harness, status: int, error: type[Exception]
) -> None:
    cap = harness.policy.max_retry_after
    harness.emu.control.add_fault(PRODUCTS, status=status, retry_after=3600, count=5)
    with pytest.raises(error) as info:
        harness.call("GET", "/v2/products")
    assert info.value.retry_after == 3600.0  # type: ignore[attr-defined]
    assert harness.route_counts(PRODUCTS) == {str(status): 1}  # one attempt: no retry before the hour is up
    assert harness.waits == []
    report(f"Retry-After 3600 s (cap {cap:.0f} s) on {status} [{harness.mode}]", outcome="failed at once", requests=1)


def test_retry_after_within_the_cap_is_waited_for(harness: Harness) -> None:
    harness.emu.control.add_fault(PRODUCTS, status=429, retry_after=3, count=1)
    assert harness.call("GET", "/v2/products")["data"]
    assert harness.waits == [3.0]
    assert harness.route_counts(PRODUCTS) == {"429": 1, "200": 1}


def test_a_trigger_poll_ends_at_the_deadline(emu: RunningEmulator, order_body: Any) -> None:
    """The order is COMPLETED, but its answer takes longer than the time left: the trigger reports a timeout at its
    deadline instead of waiting (a read timeout of 30 s and four retries would otherwise hold it for minutes, past
    Airflow's own deferral timeout)."""
    with TruConnectHook() as hook:
        order_id = hook.create_order(order_body())["id"]
        emu.control.advance(60)
        assert hook.get_order(order_id)["status"] == "COMPLETED"
    # Slower than the time left plus the trigger's slack (10 s), faster than the client's 30 s read timeout.
    emu.control.add_fault("GET /v2/orders/{order_id}", delay=25.0, count=1)
    TruConnectOrderTrigger.retry_policy = RetryPolicy(max_retries=4)
    try:
        trigger = TruConnectOrderTrigger(order_id, "truconnect_default", poll_interval=5.0, end_time=time.time() + 0.2)
        event = asyncio.run(first_event(trigger))
    finally:
        TruConnectOrderTrigger.retry_policy = None
        emu.control.clear_faults()
    # Had the poll waited for the slow answer, the event would be a success.
    assert event["status"] == "timeout", event
    assert "not finished by the deadline" in event["message"]
    report("trigger poll slower than the time left", outcome="timeout event at the deadline")
