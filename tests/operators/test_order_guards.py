"""Order-path rules asserted so that breaking one fails a test (issue 11; found by ``make mutate``).

* the trigger event of an order becomes the summary or the right exception, whatever the event lacks;
* a failure that must not be retried says so, with the provider's error as its message and cause;
* after a deferral, activation codes (asked for with ``include_activation_codes``) are read on the worker, for the
  order of the event, and the order id is pushed to XCom;
* a wait on the worker that runs out names the order's last status;
* the sending record: kept with the outcome when the answer leaves it unknown (or names no order), replaced by the
  order id when it does.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_truconnect.client.errors import (
    TruConnectConfigError,
    TruConnectError,
    TruConnectOrderFailedError,
    TruConnectOrderUncertainError,
    TruConnectTimeoutError,
)
from airflow_provider_truconnect.client.models import (
    ACTIVATION_CODE_FIELDS,
    order_failed_error,
    order_summary,
)
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.operators.truconnect import ORDER_ID_XCOM_KEY, TruConnectCreateOrderOperator
from airflow_provider_truconnect.order_guard import SENDING_ORDER_KEY, OrderGuard
from airflow_provider_truconnect.order_waiting import fail_without_retries, handle_order_event, order_failed

Body = Callable[..., dict[str, Any]]
STORE_KEY = TruConnectCreateOrderOperator.external_id_key
Ctx = Callable[..., dict[str, Any]]
FAILED_NOTE = (
    "The order will not change and the task is not retried, so that no second order is placed by accident; "
    "place a new order deliberately (a new DAG run, or see the provider docs on re-running an order task)"
)


# ------------------------------------------------------------------------------------------- handle_order_event
def test_a_success_event_gives_its_summary() -> None:
    summary = {"order_id": "o-1", "status": "COMPLETED", "iccid": "8944"}
    assert handle_order_event({"status": "success", "order_id": "o-1", "summary": summary}) == summary


@pytest.mark.parametrize(
    ("event", "order_id", "expected"),
    [
        ({"status": "success", "order_id": "o-1"}, None, "o-1"),
        ({"status": "success", "order_id": "o-1", "summary": "not a mapping"}, "o-2", "o-1"),
        ({"status": "success"}, "o-2", "o-2"),
        ({"status": "success", "order_id": ""}, "o-2", "o-2"),
        ({"status": "success"}, None, ""),
    ],
)
def test_a_success_event_without_a_summary_names_the_order(
    event: dict[str, Any], order_id: str | None, expected: str
) -> None:
    assert handle_order_event(event, order_id=order_id) == {"order_id": expected}


def test_a_failed_event_fails_without_retries_with_the_api_messages() -> None:
    event = {"status": "failed", "order_id": "o-1", "error_type": "ORDER_FAILED", "messages": ["No stock", 7]}
    with pytest.raises(AirflowFailException) as info:
        handle_order_event(event)
    cause = info.value.__cause__
    assert isinstance(cause, TruConnectOrderFailedError)
    assert cause.order_id == "o-1" and cause.error_type == "ORDER_FAILED" and cause.messages == ("No stock", "7")
    assert str(info.value) == f"{cause}. {FAILED_NOTE}"
    assert str(cause) == str(order_failed_error("o-1", "ORDER_FAILED", ["No stock", "7"]))
    assert str(cause).startswith("Order o-1 FAILED")


def test_a_failed_event_without_details_uses_its_message() -> None:
    with pytest.raises(AirflowFailException) as info:
        handle_order_event({"status": "failed", "message": "gone wrong"}, order_id="o-2")
    cause = info.value.__cause__
    assert isinstance(cause, TruConnectOrderFailedError)
    assert cause.order_id == "o-2" and cause.error_type is None and cause.messages == ("gone wrong",)


def test_a_timeout_event_raises_the_timeout_with_its_message() -> None:
    with pytest.raises(TruConnectTimeoutError) as info:
        handle_order_event({"status": "timeout", "message": "Order o-1 not finished by the deadline"})
    assert str(info.value).startswith("Order o-1 not finished by the deadline; it was placed and may still complete")


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"status": "error", "order_id": "o-1", "message": "HTTP 404"}, "Waiting for order o-1 failed: HTTP 404"),
        ({"status": "error", "order_id": "o-1"}, "Waiting for order o-1 failed: no message"),
        ({"status": "surprise", "order_id": "o-1", "message": "?"}, "Waiting for order o-1 failed: ?"),
        (["not", "a", "mapping"], "Unexpected trigger event: list"),
        (None, "Unexpected trigger event: NoneType"),
    ],
)
def test_error_and_malformed_events_raise_with_their_message(event: Any, message: str) -> None:
    with pytest.raises(TruConnectError) as info:
        handle_order_event(event)
    assert type(info.value) is TruConnectError and str(info.value) == message
    seen: list[str] = []

    def on_error(text: str) -> Any:
        seen.append(text)
        raise ValueError(text)

    with pytest.raises(ValueError, match="^" + message.replace("?", r"\?") + "$"):
        handle_order_event(event, on_error=on_error)
    assert seen == [message]


# ------------------------------------------------------------------------------------------ failing for good
def test_fail_without_retries_keeps_the_message_and_adds_the_note() -> None:
    exc = TruConnectOrderUncertainError("POST /v2/orders failed", correlation_id="cid-1")
    assert str(fail_without_retries(exc)) == str(exc)
    assert str(fail_without_retries(exc, "Check it first")) == f"{exc}. Check it first"
    assert isinstance(fail_without_retries(exc), AirflowFailException)


def test_order_failed_is_final_and_says_why() -> None:
    failure = order_failed("o-1", "ORDER_FAILED", ["No stock"])
    assert isinstance(failure, AirflowFailException)
    assert isinstance(failure.__cause__, TruConnectOrderFailedError) and failure.__cause__.order_id == "o-1"
    assert str(failure) == f"{order_failed_error('o-1', 'ORDER_FAILED', ['No stock'])}. {FAILED_NOTE}"


# ------------------------------------------------------------------------------- activation codes after deferral
def order_op(body: Any, **kwargs: Any) -> TruConnectCreateOrderOperator:
    kwargs.setdefault("poll_interval", 0.05)
    return TruConnectCreateOrderOperator(task_id="place_order", order=body, **kwargs)


def test_activation_codes_asked_for_are_read_on_the_worker_after_the_trigger(
    emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any
) -> None:
    with TruConnectHook() as hook:
        order_id = hook.create_order(order_body())["id"]
        emu.control.advance(10)
        order = hook.get_order(order_id)
    expected = order_summary(order, include_activation_codes=True)
    assert set(ACTIVATION_CODE_FIELDS) & set(expected)
    event = {"status": "success", "order_id": order_id, "summary": order_summary(order)}
    ti = make_ti()
    # A new operator object, as after a deferral: nothing of the order is known on it yet.
    op = order_op(order_body(), deferrable=True, include_activation_codes=True)
    assert op.execute_complete(make_ctx(ti=ti), event) == expected
    assert ti.xcoms[ORDER_ID_XCOM_KEY] == order_id
    assert emu.control.stats()["requests_by_route"]["GET /v2/orders/{order_id}"] == {"200": 2}


def test_without_activation_codes_the_event_summary_is_returned_as_is(
    emu: RunningEmulator, order_body: Body, make_ctx: Ctx
) -> None:
    summary = {"order_id": "o-1", "status": "COMPLETED", "iccid": "8944"}
    op = order_op(order_body(), deferrable=True)
    assert op.execute_complete(make_ctx(), {"status": "success", "order_id": "o-1", "summary": summary}) == summary
    assert emu.control.stats()["requests_total"] == 0


def test_the_result_is_read_again_for_another_order(emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
    with TruConnectHook() as hook:
        first = hook.create_order(order_body())["id"]
        second = hook.create_order(order_body())["id"]
        emu.control.advance(10)
        op = order_op(order_body(), include_activation_codes=True)
        op._latest = hook.get_order(first)
        expected = order_summary(hook.get_order(second), include_activation_codes=True)
    assert op.get_job_result(second, make_ctx()) == expected
    assert expected["order_id"] == second


# ------------------------------------------------------------------------------------------ waiting on the worker
def test_a_wait_on_the_worker_that_runs_out_names_the_last_status(
    emu: RunningEmulator, order_body: Body, make_ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000.0]
    slept: list[float] = []

    def sleep(self: Any, seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(TruConnectCreateOrderOperator, "_now", lambda self: now[0])
    monkeypatch.setattr(TruConnectCreateOrderOperator, "_sleep", sleep)
    op = order_op(order_body(email="jane+slow@example.com"), poll_interval=4.0, wait_timeout=9.0, deferrable=False)
    with pytest.raises(TruConnectTimeoutError) as info:
        op.execute(make_ctx())
    order_id = emu.control.orders()[0]["id"]
    assert info.value.message == (
        f"Order {order_id} not finished within 9 s (last status ACCEPTED); it was placed and may still complete: "
        "check it before placing it again"
    )
    assert slept == [4.0, 4.0, 1.0]  # the last second is waited for too


# --------------------------------------------------------------------------------------------- the sending record
def _sent_orders(emu: RunningEmulator) -> list[dict[str, Any]]:
    return [r for r in emu.control.stats()["requests"] if r["route"] == "POST /v2/orders"]


def test_an_uncertain_order_keeps_its_record_and_fails_for_good(
    emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
) -> None:
    emu.control.add_fault("POST /v2/orders", status=503, after=True, count=1)
    op = order_op(order_body(), deferrable=False, retries=3)
    with pytest.raises(AirflowFailException) as info:
        op.execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
    [sent] = _sent_orders(emu)
    cid = sent["correlation_id"]
    record = state_store.data[SENDING_ORDER_KEY]
    assert record == {"correlation_id": cid, "try_number": 2, "sent_at": record["sent_at"], "outcome": "unknown"}
    assert isinstance(info.value.__cause__, TruConnectOrderUncertainError)
    text = str(info.value)
    note = "The task fails without retries so that the order is not placed twice. If it exists, wait for it with"
    assert note in text and cid in text
    # The error itself says how to check; the note does not say it twice.
    assert "Check whether the order exists" not in text
    assert [o["correlation_id"] for o in emu.control.orders()] == [cid]


@pytest.mark.parametrize("answer", [None, {"status": "ACCEPTED"}, {"id": ""}, {"id": 7}, ["o-1"]])
def test_an_answer_without_an_order_id_keeps_the_record_and_fails_for_good(
    emu: RunningEmulator,
    order_body: Body,
    make_ctx: Ctx,
    make_ti: Any,
    state_store: Any,
    mocker: Any,
    answer: Any,
) -> None:
    op = order_op(order_body(), deferrable=False)
    create = mocker.patch.object(TruConnectHook, "create_order", return_value=answer)
    with pytest.raises(AirflowFailException) as info:
        op.execute(make_ctx(ti=make_ti(try_number=1), store=state_store))
    cid = create.call_args.kwargs["correlation_id"]
    record = state_store.data[SENDING_ORDER_KEY]
    assert record == {"correlation_id": cid, "try_number": 1, "sent_at": record["sent_at"], "outcome": "no order id"}
    cause = info.value.__cause__
    assert isinstance(cause, TruConnectOrderUncertainError) and cause.correlation_id == cid
    assert cause.message == "POST /v2/orders answered without an order id; the order MAY have been created"
    text = str(info.value)
    assert f"ask 1GLOBAL support quoting the correlation id {cid}" in text
    assert STORE_KEY not in state_store.data


def test_a_placed_order_replaces_the_record_with_its_id(
    emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
) -> None:
    summary = order_op(order_body(), deferrable=False, wait_for_completion=False).execute(
        make_ctx(ti=make_ti(try_number=1), store=state_store)
    )
    [sent] = _sent_orders(emu)
    record = state_store.data[SENDING_ORDER_KEY]
    assert record == {
        "correlation_id": sent["correlation_id"],
        "try_number": 1,
        "sent_at": record["sent_at"],
        "order_id": summary["order_id"],
    }


# ------------------------------------------------------------------------------------------------ the order guard
class RecordingTI:
    """A task instance whose XCom lookups are recorded (Airflow < 3.3 reattaches through XCom)."""

    def __init__(self, try_number: int | None, previous: Any = None) -> None:
        if try_number is not None:
            self.try_number = try_number
        self.previous = previous
        self.pulls: list[dict[str, Any]] = []

    def xcom_pull(self, **kwargs: Any) -> Any:
        self.pulls.append(kwargs)
        return self.previous


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: Any, *args: Any) -> None:
        self.lines.append(msg % args)

    warning = info


def guard(context: dict[str, Any], statuses: dict[str, str] | None = None) -> OrderGuard:
    return OrderGuard(
        context,
        task_id="place_order",
        external_id_key=STORE_KEY,
        order_status=lambda order_id: (statuses or {})[order_id],
        log=Lines(),
    )


def test_how_to_check_in_full() -> None:
    tail = (
        "If it exists, wait for it with TruConnectOrderSensor; if it does not, start a new DAG run, or delete the task "
        f"state store key {SENDING_ORDER_KEY!r} of task 'place_order' in this run (REST API: DELETE "
        "/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/state-store/"
        f"{SENDING_ORDER_KEY}) and clear the task"
    )
    check = (
        "Check whether the order exists: for a top-up, GET /v2/subscriptions?iccid=<iccid> (a new subscription "
        "appears); for a new eSIM, ask 1GLOBAL support quoting {quote}. "
    )
    g = guard({})
    assert g.how_to_check("cid-1") == check.format(quote="the correlation id cid-1") + tail
    assert g.how_to_check(None) == check.format(quote="the task and time of that try") + tail
    assert g.how_to_check("cid-1", check=False) == tail


def test_a_failed_order_of_an_earlier_try_is_final(state_store: Any) -> None:
    state_store.set(STORE_KEY, "o-failed")
    with pytest.raises(AirflowFailException) as info:
        guard({"task_state_store": state_store}).earlier_order()
    cause = info.value.__cause__
    assert isinstance(cause, TruConnectOrderFailedError) and cause.order_id == "o-failed"
    assert str(info.value).startswith("Order o-failed placed by an earlier try FAILED")
    assert f"delete the task state store keys {STORE_KEY!r} and {SENDING_ORDER_KEY!r}" in str(info.value)


def test_a_sending_record_without_a_correlation_id_says_how_to_find_the_order(state_store: Any) -> None:
    state_store.set(SENDING_ORDER_KEY, {"try_number": 1, "sent_at": "2026-01-01T00:00:00+00:00"})
    with pytest.raises(AirflowFailException) as info:
        guard({"task_state_store": state_store}).earlier_order()
    assert isinstance(info.value.__cause__, TruConnectOrderUncertainError)
    text = str(info.value)
    assert text.startswith("An earlier try (try 1, at 2026-01-01T00:00:00+00:00) sent POST /v2/orders")
    assert "quoting the task and time of that try" in text and "of task 'place_order'" in text


def test_reattaching_to_an_order_that_failed_is_final(state_store: Any) -> None:
    state_store.set(SENDING_ORDER_KEY, {"correlation_id": "cid-1", "order_id": "o-2"})
    with pytest.raises(AirflowFailException) as info:
        guard({"task_state_store": state_store}, {"o-2": "FAILED"}).earlier_order()
    cause = info.value.__cause__
    assert isinstance(cause, TruConnectOrderFailedError) and cause.order_id == "o-2"
    assert f"or delete the task state store key {SENDING_ORDER_KEY!r} of this task instance" in str(info.value)
    assert guard({"task_state_store": state_store}, {"o-2": "FULFILLING"}).earlier_order() == "o-2"


@pytest.mark.parametrize("try_number", [1, None])
def test_a_first_try_does_not_look_for_an_earlier_order(try_number: int | None) -> None:
    ti = RecordingTI(try_number, previous="o-3")
    assert guard({"ti": ti}).earlier_order() is None
    assert ti.pulls == []


def test_a_later_try_without_a_state_store_reattaches_through_xcom() -> None:
    ti = RecordingTI(2, previous="o-4")
    g = guard({"ti": ti}, {"o-4": "ACCEPTED"})
    assert g.earlier_order() == "o-4"
    assert ti.pulls == [{"task_ids": "place_order", "key": ORDER_ID_XCOM_KEY}]
    assert g.log.lines == ["Reattaching to order o-4 placed by an earlier try (status ACCEPTED)"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("previous", [None, "", 7])
def test_a_later_try_without_an_order_id_in_xcom_places_a_new_order(previous: Any) -> None:
    ti = RecordingTI(2, previous=previous)
    g = guard({"ti": ti})
    assert g.earlier_order() is None
    assert len(ti.pulls) == 1
    assert g.log.lines == [  # type: ignore[attr-defined]
        "Try 2 of place_order: no order id from an earlier try is available (Airflow < 3.3 keeps none), so a NEW "
        "order is placed; an earlier try may already have placed one"
    ]


class BrokenStore:
    """A task state store that fails every write."""

    def get(self, key: str, default: Any = None) -> Any:
        return default

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        raise OSError("store down")

    def delete(self, key: str) -> None:
        raise OSError("store down")


def test_failing_record_updates_are_logged_not_raised() -> None:
    g = guard({"task_state_store": BrokenStore()})
    g.placed("cid-1", "o-6")
    g.unknown("cid-1", "unknown")
    g.not_placed()
    assert g.log.lines == [  # type: ignore[attr-defined]
        "Could not update the order record in the task state store: store down",
        "Could not update the order record in the task state store: store down",
        "Could not delete the order record from the task state store: store down",
    ]
    with pytest.raises(TruConnectError) as info:
        g.sending("cid-2")  # no record, no request
    assert info.value.message == (
        "Could not record the order request in the task state store (OSError: store down); nothing was sent, and "
        "the task may be retried"
    )


def test_a_failed_xcom_lookup_places_a_new_order() -> None:
    class FailingTI(RecordingTI):
        def xcom_pull(self, **kwargs: Any) -> Any:
            raise RuntimeError("xcom down")

    g = guard({"ti": FailingTI(3)})
    assert g.earlier_order() is None
    assert g.log.lines == ["Could not look up the order id of the previous try: xcom down"]  # type: ignore[attr-defined]


def test_a_worker_wait_without_any_answer_names_the_status_unknown(
    emu: RunningEmulator, add_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000.0]

    def sleep(self: Any, seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(TruConnectCreateOrderOperator, "_now", lambda self: now[0])
    monkeypatch.setattr(TruConnectCreateOrderOperator, "_sleep", sleep)
    emu.control.add_fault("GET /v2/orders/{order_id}", status=503, count=100)
    op = TruConnectCreateOrderOperator(
        task_id="place_order",
        order="{}",
        poll_interval=5.0,
        wait_timeout=10.0,
        truconnect_conn_id=add_conn("nr", max_retries=0),
    )
    with pytest.raises(TruConnectTimeoutError) as info:
        op._wait_on_worker("o-5")
    assert info.value.message.startswith("Order o-5 not finished within 10 s (last status unknown); it was placed")


# ------------------------------------------------------------------------------------ the operator's own checks
def test_order_operator_defaults() -> None:
    op = TruConnectCreateOrderOperator(task_id="place_order", order="{}")
    assert (op.poll_interval, op.wait_timeout, op.include_activation_codes) == (5.0, 3600.0, False)


@pytest.mark.parametrize(
    ("kwargs", "field", "problem"),
    [
        ({"order": 7}, "order", "must be a dict, a JSON string or a task output, got int"),
        ({"order": "{}", "include_activation_codes": "yes"}, "include_activation_codes", "must be True or False"),
        (
            {"order": {"operation_type": "ACTIVATION", "when": datetime.datetime(2026, 1, 1)}},
            None,
            None,
        ),
    ],
)
def test_order_operator_arguments_are_checked_naming_the_field(
    kwargs: dict[str, Any], field: str | None, problem: str | None
) -> None:
    with pytest.raises(TruConnectConfigError) as info:
        TruConnectCreateOrderOperator(task_id="place_order", **kwargs)
    if field is not None:
        assert info.value.field == field and problem is not None
        assert info.value.message.startswith(f"Invalid {field}: {problem}")
    else:  # a body that is not JSON is refused as such, not with a TypeError
        assert info.value.field.startswith("order")


def test_an_order_string_that_is_not_json_is_named() -> None:
    op = TruConnectCreateOrderOperator(task_id="place_order", order="{not json")
    with pytest.raises(TruConnectConfigError) as info:
        op.order_body()
    assert info.value.field == "order" and "is not valid JSON" in info.value.message


def test_a_failed_order_of_an_earlier_try_stops_the_operator(
    emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
) -> None:
    state_store.set(STORE_KEY, "o-failed")
    op = order_op(order_body(), deferrable=False)
    with pytest.raises(AirflowFailException) as info:
        op.submit_job(make_ctx(ti=make_ti(try_number=2), store=state_store))
    assert isinstance(info.value.__cause__, TruConnectOrderFailedError)
    assert info.value.__cause__.order_id == "o-failed"
    assert emu.control.orders() == []


def test_the_guard_of_the_operator_names_its_task(state_store: Any, make_ctx: Ctx, make_ti: Any) -> None:
    op = TruConnectCreateOrderOperator(task_id="my_order_task", order="{}")
    g = op._guard(make_ctx(ti=make_ti(try_number=1), store=state_store))
    assert "of task 'my_order_task'" in g.how_to_check("cid")
    assert g.external_id_key == STORE_KEY


def test_a_sending_record_without_a_task_instance(state_store: Any) -> None:
    g = guard({"task_state_store": state_store})
    g.sending("cid-7")
    record = state_store.data[SENDING_ORDER_KEY]
    assert record["correlation_id"] == "cid-7" and record["try_number"] is None
    assert record["sent_at"].endswith("+00:00")  # UTC, whatever the worker's time zone


# --------------------------------------------------------------------------- a worker wait through an outage
def test_a_worker_wait_polls_on_through_an_outage_longer_than_the_retry_budget(
    emu: RunningEmulator, order_body: Body, make_ctx: Ctx, add_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TruConnectCreateOrderOperator, "_sleep", lambda self, seconds: emu.control.advance(seconds))
    emu.control.add_fault("GET /v2/orders/{order_id}", status=503, count=2)
    op = TruConnectCreateOrderOperator(
        task_id="place_order", order=order_body(), poll_interval=5.0, truconnect_conn_id=add_conn("nr2", max_retries=0)
    )
    summary = op.execute(make_ctx())
    assert summary["status"] == "COMPLETED"
    assert emu.control.stats()["requests_by_route"]["GET /v2/orders/{order_id}"] == {"503": 2, "200": 1}


def test_a_worker_wait_stops_at_a_non_retryable_error(
    emu: RunningEmulator, order_body: Body, make_ctx: Ctx, add_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TruConnectCreateOrderOperator, "_sleep", lambda self, seconds: emu.control.advance(seconds))
    emu.control.add_fault("GET /v2/orders/{order_id}", status=403, count=1)
    op = TruConnectCreateOrderOperator(
        task_id="place_order", order=order_body(), poll_interval=5.0, truconnect_conn_id=add_conn("nr3", max_retries=0)
    )
    with pytest.raises(TruConnectError) as info:
        op.execute(make_ctx())
    assert info.value.status_code == 403


# ------------------------------------------------------------------------------- refusals, word for word
def test_the_refusals_in_full(state_store: Any) -> None:
    state_store.set(STORE_KEY, "o-failed")
    with pytest.raises(AirflowFailException) as failed:
        guard({"task_state_store": state_store}).earlier_order()
    assert str(failed.value) == (
        "Order o-failed placed by an earlier try FAILED. A new order is not placed automatically: to place one, start "
        f"a new DAG run, or delete the task state store keys {STORE_KEY!r} and {SENDING_ORDER_KEY!r} of this task "
        "instance and clear the task"
    )
    state_store.delete(STORE_KEY)
    state_store.set(SENDING_ORDER_KEY, {"correlation_id": "cid-9", "order_id": "o-9"})
    with pytest.raises(AirflowFailException) as reattach:
        guard({"task_state_store": state_store}, {"o-9": "FAILED"}).earlier_order()
    assert str(reattach.value) == (
        "Order o-9 placed by an earlier try FAILED. A new order is not placed automatically: to place one, start a new "
        f"DAG run, or delete the task state store key {SENDING_ORDER_KEY!r} of this task instance and clear the task"
    )
    g = guard({"task_state_store": state_store})
    state_store.set(SENDING_ORDER_KEY, {"correlation_id": "cid-9"})
    with pytest.raises(AirflowFailException) as unknown:
        g.earlier_order()
    assert str(unknown.value) == (
        "An earlier try (try ?, at ?) sent POST /v2/orders and did not learn whether the order was created (it was "
        "interrupted, or the answer left the outcome unknown), so this try does not send it again | correlation id "
        f"cid-9. {g.how_to_check('cid-9')}"
    )


@pytest.mark.parametrize(
    "record",
    ["garbage", ["x"], {"order_id": 7}, {"order_id": ""}, {"correlation_id": 123}, {"correlation_id": ""}],
)
def test_an_odd_sending_record_is_an_unknown_outcome(state_store: Any, record: Any) -> None:
    state_store.set(SENDING_ORDER_KEY, record)
    g = guard({"task_state_store": state_store})
    with pytest.raises(AirflowFailException) as info:
        g.earlier_order()
    cause = info.value.__cause__
    assert isinstance(cause, TruConnectOrderUncertainError) and cause.correlation_id is None
    assert str(info.value).endswith(g.how_to_check(None))
