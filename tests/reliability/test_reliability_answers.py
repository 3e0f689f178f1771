"""The whole space of answers to ``POST /v2/orders``, not a sample: every status code 100-599, and every way an answer
can be missing or unreadable, on the sync (hook) and async (trigger) paths.

The emulator processes the request first (``after=True``: the order IS created) and then replaces the answer, which
is the case that costs money. The rule under test, written out here independently of the code: a 2xx is a success; a
4xx other than 429 with a readable error body is a definite rejection; every other answer leaves the outcome unknown.
Whatever the answer: exactly one POST reaches the API, at most one order exists, and the error class is the rule's.

The same space is then run through :class:`TruConnectCreateOrderOperator` with the task state store (a second try
after an unknown outcome must not order again), and through the GET paths of the order sensor and the order trigger,
which post nothing but must never take an unknown answer for a finished order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_truconnect.client import (
    RetryPolicy,
    TruConnectError,
    TruConnectOrderUncertainError,
)
from airflow_provider_truconnect.client.errors import TruConnectUncertainError
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.operators.truconnect import SENDING_ORDER_KEY, TruConnectCreateOrderOperator
from airflow_provider_truconnect.sensors.truconnect import TruConnectOrderSensor
from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger
from tests.reliability.support import Harness, activation_order, report
from tests.task_fixtures import first_event

ORDER_ROUTE = "POST /v2/orders"
GET_ORDER_ROUTE = "GET /v2/orders/{order_id}"
ALL_STATUSES = range(100, 600)
#: Answers that are not a status: (name, fault keyword arguments). All leave an order POST's outcome unknown.
BROKEN_ANSWERS: list[tuple[str, dict[str, Any]]] = [
    ("dropped connection", {"drop": True}),
    ("2xx body not JSON (gateway page)", {"status": 200, "body": "html"}),
    ("2xx body not JSON (plain text)", {"status": 201, "body": "text"}),
    ("2xx JSON cut short", {"status": 201, "body": "malformed"}),
    ("body shorter than Content-Length", {"status": 201, "body": "truncated"}),
    ("bytes that are not HTTP", {"raw": "not_http"}),
    ("headers never finish (read timeout)", {"raw": "headers_never_end"}),
    ("answer later than the read timeout", {"delay": 2.0}),
]
#: The connection's read timeout for this suite: the slow answers above outlast it.
READ_TIMEOUT = 0.5


def rule(status: int) -> str:
    """What an order POST answered with ``status`` means, by the provider's documented rule."""
    if 200 <= status <= 299:
        return "success"
    if 400 <= status <= 499 and status != 429:
        return "rejected"
    return "uncertain"


def outcome_of(call: Callable[[], Any]) -> tuple[str, BaseException | None]:
    try:
        call()
    except TruConnectOrderUncertainError as exc:
        return "uncertain", exc
    except TruConnectUncertainError as exc:  # the generic class where the order-specific one belongs
        return "uncertain (not order-specific)", exc
    except TruConnectError as exc:
        return ("rejected" if exc.definite_rejection else f"other {type(exc).__name__}"), exc
    return "success", None


@pytest.fixture
def fast(harness: Harness) -> Iterator[Harness]:
    """The harness with a short read timeout, so the slow answers end quickly."""
    harness.reconfigure(timeout=READ_TIMEOUT)
    yield harness


def _post_count(h: Harness) -> int:
    return sum(h.route_counts(ORDER_ROUTE).values())


@pytest.mark.parametrize("after", [True, False], ids=["after-processing", "before-processing"])
def test_every_status_code_on_an_order_post(fast: Harness, after: bool) -> None:
    h = fast
    body = activation_order(h.emu)
    mismatches: list[str] = []
    for status in ALL_STATUSES:
        posts, orders = _post_count(h), len(h.emu.control.orders())
        h.emu.control.add_fault(ORDER_ROUTE, status=status, after=after, count=1)
        outcome, exc = outcome_of(lambda: h.create_order(body))
        h.settle(ORDER_ROUTE, posts + 1)
        new_posts, new_orders = _post_count(h) - posts, len(h.emu.control.orders()) - orders
        expected = rule(status)
        if outcome != expected or new_posts != 1 or new_orders != (1 if after else 0):
            mismatches.append(f"{status}: {outcome} (want {expected}), {new_posts} POSTs, {new_orders} orders")
        if expected == "uncertain" and exc is not None and exc.correlation_id is None:
            mismatches.append(f"{status}: uncertain without a correlation id to quote")
    assert mismatches == []
    report(
        f"order POST, every status 100-599 {'after' if after else 'before'} processing [{h.mode}]",
        statuses=len(ALL_STATUSES),
        order_posts_per_status=1,
        orders_created=len(h.emu.control.orders()),
        uncertain=sum(rule(s) == "uncertain" for s in ALL_STATUSES),
        rejected=sum(rule(s) == "rejected" for s in ALL_STATUSES),
        success=sum(rule(s) == "success" for s in ALL_STATUSES),
    )


@pytest.mark.parametrize(("name", "fault"), BROKEN_ANSWERS, ids=[n for n, _ in BROKEN_ANSWERS])
def test_every_broken_answer_on_an_order_post(fast: Harness, name: str, fault: dict[str, Any]) -> None:
    h = fast
    h.emu.control.add_fault(ORDER_ROUTE, after=True, count=1, **fault)
    outcome, exc = outcome_of(lambda: h.create_order(activation_order(h.emu)))
    h.settle(ORDER_ROUTE, 1)
    assert outcome == "uncertain", (name, exc)
    assert isinstance(exc, TruConnectOrderUncertainError) and exc.correlation_id
    assert _post_count(h) == 1 and len(h.emu.control.orders()) == 1
    report(f"order POST, {name} after processing [{h.mode}]", outcome="uncertain", order_posts=1, orders_created=1)


def test_every_status_code_through_the_order_operator(
    emu: RunningEmulator,
    order_body: Callable[..., dict[str, Any]],
    make_ctx: Callable[..., dict[str, Any]],
    make_ti: Any,
) -> None:
    """Try 1 meets the answer; when the rule says unknown, try 2 (Airflow would not retry, a user may clear) refuses."""
    from tests.task_fixtures import FakeTaskStateStore

    mismatches: list[str] = []
    for status in ALL_STATUSES:
        orders_before = len(emu.control.orders())
        emu.control.add_fault(ORDER_ROUTE, status=status, after=True, count=1)
        store = FakeTaskStateStore()
        op = TruConnectCreateOrderOperator(
            task_id="place_order", order=order_body(), wait_for_completion=False, retries=2
        )
        try:
            op.execute(make_ctx(ti=make_ti(try_number=1), store=store))
            first = "success"
        except AirflowFailException as exc:
            first = "fail without retries" if isinstance(exc.__cause__, TruConnectOrderUncertainError) else "?"
        except TruConnectError as exc:
            first = "fail (retryable)" if exc.definite_rejection else f"? {type(exc).__name__}"
        # A 2xx with the order in its body is a success; a 2xx without one (204, 205) leaves the order unknown.
        want = {
            "success": {"success", "fail without retries"},
            "uncertain": {"fail without retries"},
            "rejected": {"fail (retryable)"},
        }[rule(status)]
        if first not in want:
            mismatches.append(f"{status}: {first}, want {' or '.join(sorted(want))}")
        if first == "fail without retries":
            second = TruConnectCreateOrderOperator(task_id="place_order", order=order_body(), wait_for_completion=False)
            try:
                second.execute(make_ctx(ti=make_ti(try_number=2), store=store))
                mismatches.append(f"{status}: try 2 placed an order")
            except AirflowFailException:
                pass
            if SENDING_ORDER_KEY not in store.data:
                mismatches.append(f"{status}: no sending record kept")
        if len(emu.control.orders()) - orders_before != 1:
            mismatches.append(f"{status}: {len(emu.control.orders()) - orders_before} orders")
    assert mismatches == [], "\n".join(mismatches)
    report(
        "order operator, every status 100-599 after processing, then a second try",
        statuses=len(ALL_STATUSES),
        orders_per_status=1,
        second_try_refused=sum(rule(s) != "rejected" for s in ALL_STATUSES),
    )


def _no_retry_hook(emu: RunningEmulator) -> TruConnectHook:
    return TruConnectHook(retry_policy=RetryPolicy(max_retries=0))


def test_no_status_code_finishes_the_order_sensor(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], make_ctx: Callable[..., dict[str, Any]]
) -> None:
    with TruConnectHook() as hook:
        order_id = hook.create_order(order_body())["id"]
    done_for: list[int] = []
    for status in ALL_STATUSES:
        # Every answer to the GET is the fault (a 401 is followed by one re-authenticated repeat, which meets it too).
        emu.control.add_fault(GET_ORDER_ROUTE, status=status, count=1000)
        sensor = TruConnectOrderSensor(task_id="wait", order_id=order_id, poke_interval=1, timeout=10)
        sensor.__dict__["hook"] = _no_retry_hook(emu)
        try:
            result = sensor.poke(make_ctx())
        except (TruConnectError, AirflowFailException):
            continue
        finally:
            sensor.hook.close()
            emu.control.clear_faults()
        if result.is_done:
            done_for.append(status)
    # The fault's 2xx answers carry no order status: "unknown", never "COMPLETED".
    assert done_for == []
    report("order sensor, every status 100-599 on GET", statuses=len(ALL_STATUSES), taken_for_completed=0)


def test_no_status_code_finishes_the_order_trigger(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]]
) -> None:
    with TruConnectHook() as hook:
        order_id = hook.create_order(order_body())["id"]
    TruConnectOrderTrigger.retry_policy = RetryPolicy(max_retries=0)
    try:
        events: dict[str, list[int]] = {}
        for status in ALL_STATUSES:
            emu.control.add_fault(GET_ORDER_ROUTE, status=status, count=1000)
            trigger = TruConnectOrderTrigger(order_id, "truconnect_default", poll_interval=0.01, end_time=time.time())
            event = asyncio.run(first_event(trigger))
            emu.control.clear_faults()
            events.setdefault(event["status"], []).append(status)
    finally:
        TruConnectOrderTrigger.retry_policy = None
    assert "success" not in events and "failed" not in events
    assert set(events) <= {"timeout", "error"}
    report(
        "order trigger, every status 100-599 on GET",
        statuses=len(ALL_STATUSES),
        success_events=0,
        timeout_events=len(events.get("timeout", [])),
        error_events=len(events.get("error", [])),
    )
