"""Operators against the emulator over real sockets, with a hand-built task context (no database)."""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_truconnect.client.errors import (
    TruConnectConfigError,
    TruConnectError,
    TruConnectNotFoundError,
    TruConnectOrderFailedError,
    TruConnectOrderUncertainError,
    TruConnectTimeoutError,
)
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.operators.truconnect import (
    ORDER_ID_XCOM_KEY,
    SENDING_ORDER_KEY,
    TruConnectCreateOrderOperator,
    TruConnectOperator,
    TruConnectResponseCheckError,
    TruConnectXComTooLargeError,
)
from airflow_provider_truconnect.sensors.truconnect import TruConnectOrderSensor, TruConnectSensor
from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger

Body = Callable[..., dict[str, Any]]
Ctx = Callable[..., dict[str, Any]]
STORE_KEY = TruConnectCreateOrderOperator.external_id_key


def created_orders(emu: RunningEmulator) -> list[dict[str, Any]]:
    return list(emu.control.stats()["orders_created"])


def order_op(body: Any, **kwargs: Any) -> TruConnectCreateOrderOperator:
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("deferrable", False)
    return TruConnectCreateOrderOperator(task_id="place_order", order=body, **kwargs)


# ======================================================================================== TruConnectOperator
class TestTruConnectOperator:
    def test_get_returns_the_json(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        op = TruConnectOperator(task_id="t", endpoint="/v2/products", query={"page_size": 3})
        result = op.execute(make_ctx())
        assert len(result["data"]) == 3
        assert op.template_fields == ("endpoint", "method", "query", "body", "headers")

    def test_paginate_collects_every_item(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        op = TruConnectOperator(
            task_id="t",
            endpoint="/v2/subscriptions",
            paginate=True,
            page_size=50,
            response_filter=lambda items: [s["id"] for s in items],
        )
        ids = op.execute(make_ctx())
        assert len(ids) == len(set(ids)) == 200  # the emulator seeds 200 subscriptions for the default client
        assert emu.control.stats()["requests_by_route"]["GET /v2/subscriptions"]["200"] == 4

    def test_response_check_and_filter_receive_context_kwargs(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        seen: dict[str, Any] = {}

        def check(response: Any, ds: str) -> bool:
            seen["ds"] = ds
            return bool(response["data"])

        def keep(response: Any, **context: Any) -> Any:
            seen["keys"] = set(context)
            return [p["id"] for p in response["data"]]

        op = TruConnectOperator(task_id="t", endpoint="/v2/products", response_check=check, response_filter=keep)
        result = op.execute(make_ctx())
        assert seen["ds"] == "2026-01-01"
        assert {"ti", "ds", "run_id"} <= seen["keys"]
        assert all(isinstance(i, str) for i in result)

    def test_failing_response_check_raises_a_typed_error(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        op = TruConnectOperator(task_id="t", endpoint="/v2/products", response_check=lambda response: False)
        with pytest.raises(TruConnectResponseCheckError, match="/v2/products"):
            op.execute(make_ctx())

    def test_oversized_result_is_refused_with_advice(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        op = TruConnectOperator(task_id="t", endpoint="/v2/subscriptions", paginate=True, max_xcom_bytes=1000)
        with pytest.raises(TruConnectXComTooLargeError, match="response_filter.*paginate=True"):
            op.execute(make_ctx())

    def test_non_json_result_is_refused(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        op = TruConnectOperator(task_id="t", endpoint="/v2/products", response_filter=lambda r: {1, 2})
        with pytest.raises(TruConnectXComTooLargeError, match="not JSON-serialisable"):
            op.execute(make_ctx())

    def test_api_errors_stay_typed(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        op = TruConnectOperator(task_id="t", endpoint="/v2/sims/0000")
        with pytest.raises(TruConnectNotFoundError):
            op.execute(make_ctx())

    def test_rendered_endpoint_is_checked_again(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        op = TruConnectOperator(task_id="t", endpoint="{{ params.path }}")
        op.endpoint = "/v2/products?page=2"  # what a template could render to
        with pytest.raises(TruConnectConfigError, match="endpoint"):
            op.execute(make_ctx())

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"endpoint": ""}, "endpoint"),
            ({"endpoint": "/v2/x?a=1"}, "endpoint"),
            ({"endpoint": "/v2/x", "method": "FETCH"}, "method"),
            ({"endpoint": "/v2/x", "method": 1}, "method"),
            ({"endpoint": "/v2/x", "query": [("a", 1)]}, "query"),
            ({"endpoint": "/v2/x", "headers": "X-A: 1"}, "headers"),
            ({"endpoint": "/v2/x", "method": "POST", "paginate": True}, "paginate"),
            ({"endpoint": "/v2/x", "paginate": True, "page_size": 0}, "page_size"),
            ({"endpoint": "/v2/x", "page_size": 10}, "page_size"),
            ({"endpoint": "/v2/x", "response_check": "yes"}, "response_check"),
            ({"endpoint": "/v2/x", "response_filter": 1}, "response_filter"),
            ({"endpoint": "/v2/x", "max_xcom_bytes": 0}, "max_xcom_bytes"),
        ],
    )
    def test_arguments_are_validated_naming_the_field(self, kwargs: dict[str, Any], field: str) -> None:
        with pytest.raises(TruConnectConfigError) as info:
            TruConnectOperator(task_id="t", **kwargs)
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("method", "endpoint"),
        [
            ("POST", "/v2/orders"),
            ("post", "/v2/orders/"),
            ("POST", "v2/orders"),
            ("POST", " /V2/Orders "),
            ("POST", "https://api.example.com/connect-api/v2/orders"),
        ],
    )
    def test_placing_an_order_is_refused_pointing_to_the_order_operator(self, method: str, endpoint: str) -> None:
        with pytest.raises(TruConnectConfigError, match="TruConnectCreateOrderOperator") as info:
            TruConnectOperator(task_id="t", method=method, endpoint=endpoint, body={})
        assert info.value.field == "endpoint"

    def test_other_order_requests_stay_allowed(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        listing = TruConnectOperator(task_id="t", endpoint="/v2/orders")  # GET: list orders
        note = TruConnectOperator(task_id="t", method="POST", endpoint="/v2/orders/o-1/notes", body={"text": "hi"})
        assert (listing.method, note.method) == ("GET", "POST")
        for op in (listing, note):
            try:
                op.execute(make_ctx())
            except TruConnectError as exc:  # whatever the API answers: the request was sent, not refused locally
                assert not isinstance(exc, TruConnectConfigError) and exc.status_code is not None
        prefix = urlsplit(emu.api_base).path
        sent = [urlsplit(url).path for url in emu.control.stats()["urls"]]
        assert sent[-2:] == [f"{prefix}/v2/orders", f"{prefix}/v2/orders/o-1/notes"]
        assert created_orders(emu) == []

    def test_rendered_order_endpoint_is_refused_before_sending(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        op = TruConnectOperator(task_id="t", method="POST", endpoint="{{ params.path }}", body={})
        op.endpoint = "/v2/orders"  # what the template rendered to
        with pytest.raises(TruConnectConfigError, match="TruConnectCreateOrderOperator"):
            op.execute(make_ctx())
        assert emu.control.stats()["requests_total"] == 0
        assert created_orders(emu) == []

    def test_no_hook_or_connection_lookup_in_init(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_CONN_TRUCONNECT_DEFAULT", raising=False)
        op = TruConnectOperator(task_id="t", endpoint="/v2/products", method="get")
        assert op.method == "GET"
        assert "hook" not in op.__dict__


# =============================================================================== TruConnectCreateOrderOperator
class TestCreateOrderOnWorker:
    def test_places_once_waits_and_returns_the_summary(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any
    ) -> None:
        ti = make_ti()
        summary = order_op(order_body()).execute(make_ctx(ti=ti))
        assert summary["status"] == "COMPLETED"
        # Activation codes are secrets: not in the return value (XCom) unless asked for.
        assert set(summary) == {"order_id", "status", "iccid", "subscription_id"}
        assert ti.xcoms[ORDER_ID_XCOM_KEY] == summary["order_id"]
        assert [o["id"] for o in created_orders(emu)] == [summary["order_id"]]

    def test_activation_codes_are_returned_only_when_asked_and_masked(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, mocker: Any
    ) -> None:
        masked: list[str] = []
        mocker.patch("airflow_provider_truconnect.hooks.truconnect.mask_secret", side_effect=masked.append)
        summary = order_op(order_body(), include_activation_codes=True).execute(make_ctx())
        assert {"lpa", "matching_id", "qr_code_url"} <= set(summary)
        assert summary["lpa"] == f"LPA:1$rsp.truphone.com${summary['matching_id']}"
        for field in ("lpa", "matching_id", "qr_code_url"):
            assert summary[field] in masked

    def test_json_string_body_is_parsed(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        summary = order_op(json.dumps(order_body())).execute(make_ctx())
        assert summary["status"] == "COMPLETED"

    def test_no_wait_returns_the_accepted_order(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        summary = order_op(order_body(), wait_for_completion=False).execute(make_ctx())
        assert summary["status"] == "ACCEPTED"
        assert emu.control.stats()["requests_by_route"].get("GET /v2/orders/{order_id}") is None

    def test_failed_order_raises_with_the_api_messages(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx
    ) -> None:
        # FAILED is final for the task: no retries (a retry must not buy a second eSIM by accident).
        with pytest.raises(AirflowFailException) as info:
            order_op(order_body(email="jane+fail@example.com"), retries=3).execute(make_ctx())
        cause = info.value.__cause__
        assert isinstance(cause, TruConnectOrderFailedError)
        assert cause.error_type == "ORDER_FAILED"
        assert cause.messages == ("Subscriber could not be provisioned",)
        assert "Subscriber could not be provisioned" in str(info.value)
        assert cause.order_id == created_orders(emu)[0]["id"]

    def test_wait_timeout(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        op = order_op(order_body(email="jane+slow@example.com"), wait_timeout=0.15)
        with pytest.raises(TruConnectTimeoutError, match="not finished within"):
            op.execute(make_ctx())
        assert len(created_orders(emu)) == 1

    def test_invalid_body_fails_before_any_request(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        with pytest.raises(TruConnectConfigError) as info:
            order_op({"operation_type": "ACTIVATION", "sim_type": "ESIM"})
        assert info.value.field == "order.product"
        op = order_op(
            '{"operation_type": "TOPUP", "sim_type": "ESIM", "country": "GB", "product": {"id": "p"}, "subscriber": {}}'
        )
        with pytest.raises(TruConnectConfigError) as info:
            op.execute(make_ctx())
        assert info.value.field == "order.subscriber.sim.iccid"
        with pytest.raises(TruConnectConfigError, match="not valid JSON"):
            order_op("{not json").execute(make_ctx())
        assert emu.control.stats()["requests_total"] == 0

    def test_templated_body_is_validated_after_rendering(self, order_body: Body) -> None:
        body = order_body()
        body["country"] = "{{ params.country }}"
        op = order_op(body)  # would fail the alpha-2 check if validated before rendering
        assert op.order["country"] == "{{ params.country }}"

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"order": 42}, "order"),
            ({"poll_interval": 0}, "poll_interval"),
            ({"wait_timeout": -1}, "wait_timeout"),
            ({"wait_timeout": math.inf}, "wait_timeout"),
            ({"wait_timeout": math.nan}, "wait_timeout"),
            ({"poll_interval": math.inf}, "poll_interval"),
            ({"poll_interval": True}, "poll_interval"),
            ({"deferrable": "false"}, "deferrable"),
            ({"deferrable": 0}, "deferrable"),
            ({"wait_for_completion": "no"}, "wait_for_completion"),
            ({"wait_for_completion": None}, "wait_for_completion"),
            ({"truconnect_conn_id": ""}, "truconnect_conn_id"),
        ],
    )
    def test_arguments_are_validated(self, order_body: Body, kwargs: dict[str, Any], field: str) -> None:
        kwargs = {"order": order_body(), **kwargs}
        with pytest.raises(TruConnectConfigError) as info:
            TruConnectCreateOrderOperator(task_id="t", **kwargs)
        assert info.value.field == field

    def test_uncertain_order_is_not_repeated(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        # The order is created, then the answer is lost: the client must not POST again.
        emu.control.add_fault(route="POST /v2/orders", status=503, after=True, count=1)
        with pytest.raises(AirflowFailException, match="MAY have been created") as info:
            order_op(order_body()).execute(make_ctx())
        assert isinstance(info.value.__cause__, TruConnectOrderUncertainError)
        assert len(created_orders(emu)) == 1

    def test_uncertain_order_fails_without_retries_where_there_is_no_state_store(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx
    ) -> None:
        # Airflow < 3.3: no store to remember the attempt, so the task must not be retried at all.
        emu.control.add_fault(route="POST /v2/orders", status=500, after=True, count=1)
        with pytest.raises(AirflowFailException) as info:
            order_op(order_body(), retries=3).execute(make_ctx())
        cause = info.value.__cause__
        assert isinstance(cause, TruConnectOrderUncertainError)
        assert cause.correlation_id and cause.correlation_id in str(info.value)
        assert "without retries" in str(info.value)
        assert len(created_orders(emu)) == 1


class FailingPushTI:
    """A task instance whose XCom push fails (a flaky XCom backend), recording what the store held at that time."""

    def __init__(self, store: Any, try_number: int = 1) -> None:
        self.task_id = "place_order"
        self.try_number = try_number
        self.stats_tags: dict[str, str] = {}
        self.store = store
        self.stored_at_push: list[Any] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.stored_at_push.append(self.store.get(STORE_KEY))
        raise RuntimeError("XCom backend unavailable")

    def xcom_pull(self, *args: Any, **kwargs: Any) -> Any:
        return None


class RecordingLog:
    """Stands in for ``self.log``: records ``(level, rendered message)``."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def record(msg: Any, *args: Any, **kwargs: Any) -> None:
            self.records.append((level, str(msg) % args if args else str(msg)))

        return record


class TestOrderIdPublication:
    @pytest.mark.af33
    def test_order_id_is_pushed_only_after_it_is_stored(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, state_store: Any
    ) -> None:
        ti = FailingPushTI(state_store)
        summary = order_op(order_body()).execute(make_ctx(ti=ti, store=state_store))
        assert summary["status"] == "COMPLETED"
        assert ti.stored_at_push == [summary["order_id"]]

    def test_a_failing_push_only_logs_a_warning(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, state_store: Any
    ) -> None:
        ti = FailingPushTI(state_store)
        log = RecordingLog()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(TruConnectCreateOrderOperator, "log", log)
            summary = order_op(order_body()).execute(make_ctx(ti=ti, store=state_store))
        assert summary["status"] == "COMPLETED"
        assert len(ti.stored_at_push) == 1  # tried once per try, not once per step
        warnings = [text for level, text in log.records if level == "warning"]
        assert len(warnings) == 1
        assert "Could not push order id" in warnings[0] and "XCom backend unavailable" in warnings[0]
        assert len(created_orders(emu)) == 1

    @pytest.mark.af33
    def test_a_retry_after_a_failing_push_reattaches(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        def lost_worker(self: Any, order_id: str) -> None:
            raise RuntimeError("worker lost")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(TruConnectCreateOrderOperator, "_wait_on_worker", lost_worker)
            with pytest.raises(RuntimeError, match="worker lost"):
                order_op(order_body()).execute(make_ctx(ti=FailingPushTI(state_store), store=state_store))
        retry_ti = make_ti(try_number=2)
        summary = order_op(order_body()).execute(make_ctx(ti=retry_ti, store=state_store))
        assert [o["id"] for o in created_orders(emu)] == [summary["order_id"]]
        assert retry_ti.xcoms[ORDER_ID_XCOM_KEY] == summary["order_id"]

    @pytest.mark.af33
    def test_an_already_completed_order_is_pushed_on_reattach(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        first = order_op(order_body()).execute(make_ctx(ti=FailingPushTI(state_store), store=state_store))
        retry_ti = make_ti(try_number=2)
        summary = order_op(order_body()).execute(make_ctx(ti=retry_ti, store=state_store))
        assert summary["order_id"] == first["order_id"] == retry_ti.xcoms[ORDER_ID_XCOM_KEY]
        assert len(created_orders(emu)) == 1

    def test_the_id_is_pushed_before_deferring(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        context = make_ctx()
        with pytest.raises(TaskDeferred):
            order_op(order_body(), deferrable=True).execute(context)
        assert context["ti"].xcoms[ORDER_ID_XCOM_KEY] == created_orders(emu)[0]["id"]

    def test_transient_poll_errors_do_not_fail_the_wait(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx
    ) -> None:
        emu.control.add_fault(route="GET /v2/orders/{order_id}", status=503, count=1)
        emu.control.add_fault(route="GET /v2/orders/{order_id}", status=429, retry_after=0, count=1)
        assert order_op(order_body()).execute(make_ctx())["status"] == "COMPLETED"


class TestCreateOrderDeferrable:
    def test_defers_to_the_order_trigger(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        op = order_op(order_body(), deferrable=True, poll_interval=2.0, wait_timeout=600, truconnect_conn_id="x")
        emu_conn = emu.connection_json()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIRFLOW_CONN_X", emu_conn)
            before = time.time()
            with pytest.raises(TaskDeferred) as info:
                op.execute(make_ctx())
        deferred = info.value
        assert deferred.method_name == "execute_complete"
        assert isinstance(deferred.trigger, TruConnectOrderTrigger)
        classpath, kwargs = deferred.trigger.serialize()
        order_id = created_orders(emu)[0]["id"]
        assert kwargs["order_id"] == order_id
        assert kwargs["truconnect_conn_id"] == "x"
        assert kwargs["poll_interval"] == 2.0
        assert before + 600 <= kwargs["end_time"] <= time.time() + 600
        assert deferred.timeout is not None and deferred.timeout.total_seconds() >= 600

    def test_deferral_round_trip(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        op = order_op(order_body(), deferrable=True)
        context = make_ctx()
        with pytest.raises(TaskDeferred) as info:
            op.execute(context)

        async def fire() -> dict[str, Any]:
            gen = info.value.trigger.run()
            event = await anext(gen)
            await gen.aclose()
            payload: dict[str, Any] = event.payload
            return payload

        event = asyncio.run(fire())
        summary = getattr(op, info.value.method_name)(context, event=event, **(info.value.kwargs or {}))
        assert summary["status"] == "COMPLETED"
        assert summary["order_id"] == context["ti"].xcoms[ORDER_ID_XCOM_KEY]

    def test_execute_complete_success(self, order_body: Body, make_ctx: Ctx) -> None:
        summary = {"order_id": "o1", "status": "COMPLETED", "iccid": "8944"}
        event = {"status": "success", "message": "ok", "order_id": "o1", "summary": summary}
        assert order_op(order_body()).execute_complete(make_ctx(), event) == summary

    def test_execute_complete_failed(self, order_body: Body, make_ctx: Ctx) -> None:
        event = {
            "status": "failed",
            "message": "Order o1 FAILED: ORDER_FAILED: nope",
            "order_id": "o1",
            "summary": {"order_id": "o1", "status": "FAILED"},
            "error_type": "ORDER_FAILED",
            "messages": ["nope"],
        }
        with pytest.raises(AirflowFailException) as info:
            order_op(order_body()).execute_complete(make_ctx(), event)
        cause = info.value.__cause__
        assert isinstance(cause, TruConnectOrderFailedError)
        assert (cause.order_id, cause.error_type, cause.messages) == ("o1", "ORDER_FAILED", ("nope",))

    def test_execute_complete_timeout(self, order_body: Body, make_ctx: Ctx) -> None:
        event = {"status": "timeout", "message": "Order o1 not finished by the deadline", "order_id": "o1"}
        with pytest.raises(TruConnectTimeoutError, match="not finished by the deadline"):
            order_op(order_body()).execute_complete(make_ctx(), event)

    @pytest.mark.parametrize("event", [{"status": "error", "message": "HTTP 401"}, None, {"status": "weird"}])
    def test_execute_complete_error(self, order_body: Body, make_ctx: Ctx, event: Any) -> None:
        with pytest.raises(TruConnectError):
            order_op(order_body()).execute_complete(make_ctx(), event)


@pytest.mark.af33
class TestCreateOrderRetrySafetyWithTaskStateStore:
    """Airflow 3.3 ``ResumableJobMixin``: the order id lives in the task state store shared by all tries."""

    def test_retry_reattaches_to_the_running_order(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        first = order_op(order_body(email="jane+slow@example.com"), wait_timeout=0.1)
        with pytest.raises(TruConnectTimeoutError):
            first.execute(make_ctx(ti=make_ti(try_number=1), store=state_store))
        order_id = state_store.data[STORE_KEY]
        emu.control.advance(60)  # the slow order completes meanwhile
        retry = order_op(order_body(email="jane+slow@example.com"))
        summary = retry.execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert summary["order_id"] == order_id and summary["status"] == "COMPLETED"
        assert [o["id"] for o in created_orders(emu)] == [order_id]

    def test_retry_of_a_still_running_order_waits_for_it(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        first = order_op(order_body(), wait_for_completion=False)
        order_id = first.execute(make_ctx(store=state_store))["order_id"]
        summary = order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert summary == {**summary, "order_id": order_id, "status": "COMPLETED"}
        assert len(created_orders(emu)) == 1

    def test_deferrable_retry_defers_on_the_same_order(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        with pytest.raises(TaskDeferred) as first:
            order_op(order_body(email="jane+slow@example.com"), deferrable=True).execute(make_ctx(store=state_store))
        with pytest.raises(TaskDeferred) as retry:
            order_op(order_body(email="jane+slow@example.com"), deferrable=True).execute(
                make_ctx(ti=make_ti(try_number=2), store=state_store)
            )
        assert first.value.trigger.order_id == retry.value.trigger.order_id == state_store.data[STORE_KEY]
        assert len(created_orders(emu)) == 1

    def test_uncertain_order_fails_without_retries_and_later_tries_refuse(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        # The order is created, then the answer is lost (500 after processing).
        emu.control.add_fault(route="POST /v2/orders", status=500, after=True, count=1)
        with pytest.raises(AirflowFailException) as first:
            order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=1), store=state_store))
        assert isinstance(first.value.__cause__, TruConnectOrderUncertainError)
        correlation_id = first.value.__cause__.correlation_id
        record = state_store.data[SENDING_ORDER_KEY]
        assert correlation_id and record["correlation_id"] == correlation_id and "order_id" not in record
        assert STORE_KEY not in state_store.data
        # The correlation id recorded is the one the API received.
        assert emu.control.stats()["requests"][-1]["correlation_id"] == correlation_id
        # A later try (a manual clear) refuses to POST and says what to check.
        with pytest.raises(AirflowFailException, match="Check whether the order exists") as again:
            order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert isinstance(again.value.__cause__, TruConnectOrderUncertainError)
        assert again.value.__cause__.correlation_id == correlation_id and correlation_id in str(again.value)
        assert SENDING_ORDER_KEY in str(again.value)
        assert len(created_orders(emu)) == 1
        assert emu.control.stats()["requests_by_route"]["POST /v2/orders"] == {"500": 1}

    def test_sending_record_is_written_before_the_request_leaves(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        seen_at_send: list[Any] = []
        original = TruConnectHook.create_order

        def create_order(hook: TruConnectHook, body: Any, *, correlation_id: str | None = None) -> Any:
            seen_at_send.append(dict(state_store.data))
            return original(hook, body, correlation_id=correlation_id)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(TruConnectHook, "create_order", create_order)
            summary = order_op(order_body(), wait_for_completion=False).execute(make_ctx(store=state_store))
        [before] = seen_at_send
        assert set(before) == {SENDING_ORDER_KEY} and "order_id" not in before[SENDING_ORDER_KEY]
        cid = before[SENDING_ORDER_KEY]["correlation_id"]
        # The answer replaced it with the order id; the request carried the recorded correlation id.
        assert state_store.data[SENDING_ORDER_KEY]["order_id"] == summary["order_id"]
        assert state_store.data[SENDING_ORDER_KEY]["correlation_id"] == cid
        posts = [r for r in emu.control.stats()["requests"] if r["route"] == "POST /v2/orders"]
        assert [r["correlation_id"] for r in posts] == [cid]

    def test_interrupted_try_leaves_a_record_and_the_next_try_refuses(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        # Stands for execution_timeout / SIGTERM arriving while the POST is in flight: a BaseException the operator
        # does not catch, after the request reached the API.
        class Interrupted(BaseException):
            pass

        original = TruConnectHook.create_order

        def create_then_die(hook: TruConnectHook, body: Any, *, correlation_id: str | None = None) -> Any:
            original(hook, body, correlation_id=correlation_id)
            raise Interrupted

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(TruConnectHook, "create_order", create_then_die)
            with pytest.raises(Interrupted):
                order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=1), store=state_store))
        assert "order_id" not in state_store.data[SENDING_ORDER_KEY]
        with pytest.raises(AirflowFailException, match="did not learn whether the order was created"):
            order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert len(created_orders(emu)) == 1

    def test_interrupted_after_the_answer_reattaches_to_the_order(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        # Killed after the answer was recorded but before the mixin stored the id: the record holds the order id.
        first = order_op(order_body(), wait_for_completion=False)
        first.submit_job(make_ctx(store=state_store))
        assert STORE_KEY not in state_store.data and state_store.data[SENDING_ORDER_KEY]["order_id"]
        summary = order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert summary["order_id"] == state_store.data[SENDING_ORDER_KEY]["order_id"]
        assert len(created_orders(emu)) == 1 and summary["status"] == "COMPLETED"

    def test_no_record_no_request(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, state_store: Any
    ) -> None:
        def refuse(key: str, value: Any, *, retention: Any = None) -> None:
            raise ConnectionError("execution API unreachable")

        state_store.set = refuse
        with pytest.raises(TruConnectError, match="nothing was sent"):
            order_op(order_body()).execute(make_ctx(store=state_store))
        assert created_orders(emu) == []
        assert emu.control.stats()["requests_by_route"].get("POST /v2/orders") is None

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
    def test_definite_rejection_clears_the_record_and_a_retry_may_place_it(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any, status: int
    ) -> None:
        emu.control.add_fault(route="POST /v2/orders", status=status, count=1)
        with pytest.raises(TruConnectError) as info:
            order_op(order_body()).execute(make_ctx(store=state_store))
        assert not isinstance(info.value, AirflowFailException) and info.value.definite_rejection
        assert SENDING_ORDER_KEY not in state_store.data
        summary = order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert [o["id"] for o in created_orders(emu)] == [summary["order_id"]]

    def test_answer_without_an_order_id_counts_as_uncertain(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(TruConnectHook, "create_order", lambda self, body, correlation_id=None: {"status": "ACCEPTED"})
            with pytest.raises(AirflowFailException, match="without an order id"):
                order_op(order_body()).execute(make_ctx(store=state_store))
        assert state_store.data[SENDING_ORDER_KEY]["correlation_id"]
        assert "order_id" not in state_store.data[SENDING_ORDER_KEY]
        with pytest.raises(AirflowFailException, match="did not learn whether the order was created"):
            order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert created_orders(emu) == []

    def test_stored_order_wins_over_a_leftover_record(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        order_id = order_op(order_body(), wait_for_completion=False).execute(make_ctx(store=state_store))["order_id"]
        state_store.data[SENDING_ORDER_KEY] = {"correlation_id": "c-1"}
        summary = order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert summary["order_id"] == order_id and len(created_orders(emu)) == 1

    def test_a_failed_order_is_final_for_the_task(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        body = order_body(email="jane+fail@example.com")
        with pytest.raises(AirflowFailException, match="Subscriber could not be provisioned"):
            order_op(body, retries=2).execute(make_ctx(store=state_store))
        first_id = state_store.data[STORE_KEY]
        # A retry anyway (e.g. a manual clear) does not buy a second eSIM: it names the failed order and how to
        # place a new one deliberately.
        with pytest.raises(AirflowFailException, match=f"Order {first_id} placed by an earlier try FAILED") as again:
            order_op(body).execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert isinstance(again.value.__cause__, TruConnectOrderFailedError)
        assert "new DAG run" in str(again.value)
        assert [o["id"] for o in created_orders(emu)] == [first_id]


class TestCreateOrderRetryWithoutTaskStateStore:
    """Airflow < 3.3 (no task state store): reattach through the ``order_id`` XCom if it survived, else re-place."""

    def test_reattaches_through_a_surviving_xcom(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any
    ) -> None:
        ti = make_ti(try_number=1)
        first = order_op(order_body(), wait_for_completion=False).execute(make_ctx(ti=ti))
        retry_ti = make_ti(try_number=2, xcoms=ti.xcoms)
        summary = order_op(order_body()).execute(make_ctx(ti=retry_ti))
        assert summary["order_id"] == first["order_id"] and summary["status"] == "COMPLETED"
        assert len(created_orders(emu)) == 1

    def test_places_a_new_order_when_the_xcom_is_gone(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any
    ) -> None:
        # What stock Airflow does: XComs of the earlier try were deleted when this try started.
        order_op(order_body(), wait_for_completion=False).execute(make_ctx(ti=make_ti(try_number=1)))
        order_op(order_body(), wait_for_completion=False).execute(make_ctx(ti=make_ti(try_number=2)))
        assert len(created_orders(emu)) == 2

    def test_a_failed_order_of_the_previous_try_is_final(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any
    ) -> None:
        ti = make_ti(try_number=1)
        with pytest.raises(AirflowFailException):
            order_op(order_body(email="jane+fail@example.com")).execute(make_ctx(ti=ti))
        retry = order_op(order_body(), wait_for_completion=False)
        with pytest.raises(AirflowFailException, match="placed by an earlier try FAILED"):
            retry.execute(make_ctx(ti=make_ti(try_number=2, xcoms=ti.xcoms)))
        assert len(created_orders(emu)) == 1


@pytest.mark.af3
def test_order_may_come_from_a_task_output() -> None:
    from airflow.sdk import DAG, task

    with DAG("tc_xcomarg", schedule=None):

        @task
        def build_order() -> dict[str, Any]:
            return {}

        op = TruConnectCreateOrderOperator(task_id="place", order=build_order())
    assert hasattr(op.order, "resolve")
    with pytest.raises(TruConnectConfigError) as info:
        TruConnectCreateOrderOperator(task_id="bad", order=42)  # type: ignore[arg-type]
    assert info.value.field == "order"


def test_failures_without_retries_survive_pickling_with_their_cause_text() -> None:
    from airflow_provider_truconnect.order_waiting import fail_without_retries

    cause = TruConnectOrderUncertainError("POST /v2/orders failed", status_code=500, correlation_id="c-1")
    err = fail_without_retries(cause, "note")
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, AirflowFailException) and str(copy) == str(err)
    assert "HTTP 500" in str(copy) and "c-1" in str(copy) and str(copy).endswith(". note")


@pytest.mark.parametrize("conn_id", ["", "  ", None, 42])
def test_every_task_class_checks_the_connection_id(conn_id: Any) -> None:
    body = {
        "operation_type": "TOPUP",
        "sim_type": "PSIM",
        "country": "GB",
        "product": {"id": "p", "sold_price": 1, "sold_currency": "GBP", "activation_date": "2026-01-01"},
        "subscriber": {"sim": {"iccid": "8944"}},
    }
    builders: list[Callable[[], Any]] = [
        lambda: TruConnectOperator(task_id="a", endpoint="/v2/products", truconnect_conn_id=conn_id),
        lambda: TruConnectCreateOrderOperator(task_id="b", order=body, truconnect_conn_id=conn_id),
        lambda: TruConnectOrderSensor(task_id="c", order_id="o-1", truconnect_conn_id=conn_id),
        lambda: TruConnectSensor(task_id="d", endpoint="/v2/x", response_check=bool, truconnect_conn_id=conn_id),
    ]
    for build in builders:
        with pytest.raises(TruConnectConfigError) as info:
            build()
        assert info.value.field == "truconnect_conn_id"


class TestStopRequests:
    """SIGTERM as Airflow 3.3's task runner delivers it: the handler calls ``on_kill()`` and returns."""

    def test_sigterm_while_the_order_request_is_in_flight_ends_the_try_and_the_next_refuses(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, make_ti: Any, state_store: Any
    ) -> None:
        import os
        import signal
        import threading

        from airflow.providers.common.compat.sdk import AirflowException

        # The order is created, then its answer is held back: the request is in flight when the signal arrives.
        emu.control.add_fault(route="POST /v2/orders", after=True, delay=30.0, count=1)
        op = order_op(order_body())
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())
        timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
        posted = threading.Event()

        def wait_for_post() -> None:
            while not emu.control.orders():
                threading.Event().wait(0.05)
            posted.set()
            timer.start()

        threading.Thread(target=wait_for_post, daemon=True).start()
        try:
            with pytest.raises(AirflowException, match="told to stop") as info:
                op.execute(make_ctx(ti=make_ti(try_number=1), store=state_store))
        finally:
            timer.cancel()
            signal.signal(signal.SIGTERM, previous)
        assert posted.is_set() and not isinstance(info.value, AirflowFailException)  # a retryable failure
        assert "order_id" not in state_store.data[SENDING_ORDER_KEY]
        with pytest.raises(AirflowFailException, match="did not learn whether the order was created"):
            order_op(order_body()).execute(make_ctx(ti=make_ti(try_number=2), store=state_store))
        assert len(created_orders(emu)) == 1

    def test_on_kill_after_the_work_ended_raises_nothing(self, order_body: Body) -> None:
        op = order_op(order_body())
        op.on_kill()  # Airflow calls it after execution_timeout too, when nothing runs any more
        with op.running():
            pass
        op.on_kill()
