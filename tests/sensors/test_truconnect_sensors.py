"""Sensors against the emulator in poke, reschedule and deferrable mode, with a hand-built context (no database)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from airflow.exceptions import AirflowRescheduleException
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_truconnect.client.errors import (
    TruConnectConfigError,
    TruConnectOrderFailedError,
)
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.order_waiting import DEFER_TIMEOUT_GRACE
from airflow_provider_truconnect.sensors.truconnect import TruConnectOrderSensor, TruConnectSensor
from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger, TruConnectSensorTrigger
from tests.task_fixtures import first_event

Body = Callable[..., dict[str, Any]]
Ctx = Callable[..., dict[str, Any]]
FAST = {"poke_interval": 0.05, "timeout": 30}


def place(body: dict[str, Any]) -> str:
    with TruConnectHook() as hook:
        order_id: str = hook.create_order(body)["id"]
    return order_id


def fire(trigger: Any) -> dict[str, Any]:
    return asyncio.run(first_event(trigger))


def order_sensor(order_id: str, **kwargs: Any) -> TruConnectOrderSensor:
    return TruConnectOrderSensor(task_id="wait", order_id=order_id, **{"deferrable": False, **FAST, **kwargs})


# ===================================================================================== TruConnectOrderSensor
class TestOrderSensor:
    def test_poke_mode_returns_the_summary(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body())
        summary = order_sensor(order_id).execute(make_ctx())
        assert summary["order_id"] == order_id and summary["status"] == "COMPLETED" and summary["iccid"]
        assert not {"lpa", "matching_id", "qr_code_url", "voucher_code"} & set(summary)

    def test_activation_codes_only_when_asked_also_after_deferring(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx
    ) -> None:
        order_id = place(order_body(email="jane+slow@example.com"))
        sensor = order_sensor(order_id, deferrable=True, include_activation_codes=True)
        with pytest.raises(TaskDeferred) as info:
            sensor.execute(make_ctx())
        emu.control.advance(60)
        event = fire(info.value.trigger)
        assert not {"lpa", "matching_id", "qr_code_url"} & set(event["summary"])  # events never carry them
        summary = sensor.execute_complete(make_ctx(), event=event)
        assert summary["lpa"].startswith("LPA:1$") and summary["matching_id"] in summary["lpa"]

    def test_failed_order_fails_at_once_without_retries(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx
    ) -> None:
        order_id = place(order_body(product_id="X-FAIL-PRODUCT"))
        with pytest.raises(AirflowFailException) as info:
            order_sensor(order_id, retries=3).execute(make_ctx())
        err = info.value.__cause__
        assert isinstance(err, TruConnectOrderFailedError)
        assert err.order_id == order_id and err.error_type == "ORDER_FAILED"
        assert "could not be provisioned" in str(info.value)

    def test_soft_fail_skips_a_failed_order(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body(email="jane+fail@example.com"))
        emu.control.advance(10)
        for deferrable in (False, True):
            with pytest.raises(AirflowSkipException):
                order_sensor(order_id, soft_fail=True, deferrable=deferrable).execute(make_ctx())

    def test_unknown_status_keeps_waiting(self, emu: RunningEmulator, make_ctx: Ctx, monkeypatch: Any) -> None:
        sensor = order_sensor("o-1")
        answers = iter([{"id": "o-1", "status": "QUEUED_FOR_REVIEW"}, {"id": "o-1", "status": "completed"}])
        monkeypatch.setattr(TruConnectHook, "get_order", lambda self, order_id: next(answers))
        assert sensor.poke(make_ctx()).is_done is False
        assert sensor.poke(make_ctx()).is_done is True

    @pytest.mark.af3  # Airflow 2's reschedule mode reads earlier reschedules from the metadata database
    def test_reschedule_mode_reschedules_while_running(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx
    ) -> None:
        order_id = place(order_body(email="jane+slow@example.com"))
        with pytest.raises(AirflowRescheduleException):
            order_sensor(order_id, mode="reschedule", poke_interval=60).execute(make_ctx())
        emu.control.advance(60)
        summary = order_sensor(order_id, mode="reschedule", poke_interval=60).execute(make_ctx())
        assert summary["status"] == "COMPLETED"

    def test_poke_mode_timeout(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body(email="jane+slow@example.com"))
        with pytest.raises(AirflowSensorTimeout):
            order_sensor(order_id, timeout=0.1).execute(make_ctx())

    def test_order_id_is_required(self) -> None:
        with pytest.raises(TruConnectConfigError) as info:
            TruConnectOrderSensor(task_id="w", order_id="")
        assert info.value.field == "order_id"

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [({"deferrable": "false"}, "deferrable"), ({"truconnect_conn_id": None}, "truconnect_conn_id")],
    )
    def test_arguments_are_validated(self, kwargs: dict[str, Any], field: str) -> None:
        with pytest.raises(TruConnectConfigError) as info:
            TruConnectOrderSensor(task_id="w", order_id="o-1", **kwargs)
        assert info.value.field == field


class TestOrderSensorDeferrable:
    def test_done_on_the_first_poke_does_not_defer(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body())
        emu.control.advance(10)
        assert order_sensor(order_id, deferrable=True).execute(make_ctx())["status"] == "COMPLETED"

    def test_defers_with_deadline_and_timeout(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body())
        before = time.time()
        with pytest.raises(TaskDeferred) as info:
            order_sensor(order_id, deferrable=True, poke_interval=7, timeout=900).execute(make_ctx())
        deferred = info.value
        assert deferred.method_name == "execute_complete"
        assert isinstance(deferred.trigger, TruConnectOrderTrigger)
        kwargs = deferred.trigger.serialize()[1]
        assert kwargs["order_id"] == order_id and kwargs["poll_interval"] == 7.0
        assert kwargs["truconnect_conn_id"] == "truconnect_default"
        assert before + 900 <= kwargs["end_time"] <= time.time() + 900
        # Airflow's own deferral timeout leaves the trigger's timeout event (with the last status) time to arrive.
        assert deferred.timeout is not None and deferred.timeout.total_seconds() == 900 + DEFER_TIMEOUT_GRACE

    def test_round_trip_through_the_trigger(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        # A slow order is still running at the first poke however loaded the machine is; then its time passes.
        sensor = order_sensor(place(order_body(email="jane+slow@example.com")), deferrable=True)
        with pytest.raises(TaskDeferred) as info:
            sensor.execute(make_ctx())
        emu.control.advance(60)
        event = fire(info.value.trigger)
        assert sensor.execute_complete(make_ctx(), event=event)["status"] == "COMPLETED"

    def test_execute_complete_events(self, make_ctx: Ctx) -> None:
        sensor = order_sensor("o1", deferrable=True)
        summary = {"order_id": "o1", "status": "COMPLETED"}
        assert sensor.execute_complete(make_ctx(), {"status": "success", "message": "", "summary": summary}) == summary
        failed = {"status": "failed", "message": "m", "error_type": "T", "messages": ["why"]}
        with pytest.raises(AirflowFailException, match="why"):
            sensor.execute_complete(make_ctx(), failed)
        with pytest.raises(AirflowSensorTimeout, match="deadline"):
            sensor.execute_complete(make_ctx(), {"status": "timeout", "message": "not finished by the deadline"})
        with pytest.raises(AirflowException, match="HTTP 403"):
            sensor.execute_complete(make_ctx(), {"status": "error", "message": "HTTP 403"})

    def test_error_event_is_an_airflow_exception_and_soft_fail_skips_it(self, make_ctx: Ctx) -> None:
        error = {"event": {"status": "error", "message": "HTTP 403", "order_id": "o1"}}
        with pytest.raises(AirflowException, match="HTTP 403") as info:
            order_sensor("o1", deferrable=True).resume_execution("execute_complete", error, make_ctx())
        assert not isinstance(info.value, AirflowSkipException)
        with pytest.raises(AirflowSkipException):
            order_sensor("o1", deferrable=True, soft_fail=True).resume_execution("execute_complete", error, make_ctx())

    def test_soft_fail_turns_a_timeout_event_into_a_skip(self, make_ctx: Ctx) -> None:
        sensor = order_sensor("o1", deferrable=True, soft_fail=True)
        with pytest.raises(AirflowSkipException):
            sensor.execute_complete(make_ctx(), {"status": "timeout", "message": "late"})


# ========================================================================================== TruConnectSensor
def endpoint_sensor(**kwargs: Any) -> TruConnectSensor:
    return TruConnectSensor(task_id="sense", **{"deferrable": False, **FAST, **kwargs})


class TestTruConnectSensorArguments:
    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({}, "field_path"),
            ({"field_path": "status"}, "accepted_values"),
            ({"accepted_values": ["A"]}, "field_path"),
            ({"field_path": "status", "accepted_values": "ACTIVE"}, "accepted_values"),
            ({"field_path": "status", "accepted_values": []}, "accepted_values"),
            ({"field_path": "status", "accepted_values": ["A"], "response_check": bool}, "response_check"),
            ({"response_check": "yes"}, "response_check"),
            ({"endpoint": "", "response_check": bool}, "endpoint"),
            ({"endpoint": "/v2/x?a=1", "response_check": bool}, "endpoint"),
            ({"query": "a=1", "response_check": bool}, "query"),
            ({"response_check": bool, "deferrable": "false"}, "deferrable"),
            ({"response_check": bool, "truconnect_conn_id": ""}, "truconnect_conn_id"),
        ],
    )
    def test_exactly_one_condition(self, kwargs: dict[str, Any], field: str) -> None:
        kwargs = {"endpoint": "/v2/x", **kwargs}
        with pytest.raises(TruConnectConfigError) as info:
            TruConnectSensor(task_id="s", **kwargs)
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("rendered", "field"),
        [
            ({"endpoint": "/v2/sims?iccid=1"}, "endpoint"),
            ({"endpoint": " "}, "endpoint"),
            ({"field_path": ""}, "field_path"),
            ({"field_path": None}, "field_path"),
        ],
    )
    def test_templated_fields_are_checked_after_rendering(
        self, emu: RunningEmulator, make_ctx: Ctx, rendered: dict[str, Any], field: str
    ) -> None:
        sensor = endpoint_sensor(endpoint="{{ params.path }}", field_path="{{ params.field }}", accepted_values=["A"])
        sensor.endpoint, sensor.field_path = "/v2/products", "status"
        for name, value in rendered.items():  # what the templates could render to
            setattr(sensor, name, value)
        with pytest.raises(TruConnectConfigError) as info:
            sensor.execute(make_ctx())
        assert info.value.field == field
        assert emu.control.stats()["requests_total"] == 0


class TestTruConnectSensor:
    def test_declarative_condition_in_poke_mode(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body())
        sensor = endpoint_sensor(endpoint=f"/v2/orders/{order_id}", field_path="status", accepted_values=["COMPLETED"])
        assert sensor.execute(make_ctx()) == "COMPLETED"

    def test_list_path_with_query(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        with TruConnectHook() as hook:
            iccid = hook.request("GET", "/v2/subscriptions", params={"page_size": 1})["data"][0]["sim_id"]
        sensor = endpoint_sensor(
            endpoint="/v2/subscriptions", query={"iccid": iccid}, field_path="data.0.sim_id", accepted_values=[iccid]
        )
        assert sensor.execute(make_ctx()) == iccid

    def test_404_is_not_yet(self, emu: RunningEmulator, make_ctx: Ctx) -> None:
        sensor = endpoint_sensor(endpoint="/v2/orders/nope", field_path="status", accepted_values=["COMPLETED"])
        assert sensor.poke(make_ctx()).is_done is False

    def test_response_check_with_context(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body())
        seen: list[str] = []

        def done(response: dict[str, Any], run_id: str) -> bool:
            seen.append(run_id)
            return response["status"] == "COMPLETED"

        sensor = endpoint_sensor(endpoint=f"/v2/orders/{order_id}", response_check=done)
        assert sensor.execute(make_ctx()) is None
        assert seen and set(seen) == {"manual__test"}

    def test_deferrable_declarative_defers_with_the_condition(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx
    ) -> None:
        order_id = place(order_body())
        sensor = endpoint_sensor(
            endpoint=f"/v2/orders/{order_id}",
            field_path="status",
            accepted_values=["COMPLETED"],
            deferrable=True,
            timeout=300,
        )
        with pytest.raises(TaskDeferred) as info:
            sensor.execute(make_ctx())
        deferred = info.value
        assert deferred.method_name == "execute_complete"
        assert isinstance(deferred.trigger, TruConnectSensorTrigger)
        kwargs = deferred.trigger.serialize()[1]
        assert kwargs["field_path"] == "status" and kwargs["accepted_values"] == ["COMPLETED"]
        assert deferred.kwargs == {"end_time": kwargs["end_time"]}
        assert deferred.timeout is not None
        assert DEFER_TIMEOUT_GRACE < deferred.timeout.total_seconds() <= 300 + DEFER_TIMEOUT_GRACE
        event = fire(deferred.trigger)
        assert sensor.execute_complete(make_ctx(), event=event, **deferred.kwargs) == "COMPLETED"

    def test_deferrable_response_check_is_evaluated_on_the_worker_and_defers_again(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def no_sleep(self: Any, seconds: float) -> None:
            return None

        monkeypatch.setattr(TruConnectSensorTrigger, "_sleep", no_sleep)
        order_id = place(order_body(email="jane+slow@example.com"))
        sensor = endpoint_sensor(
            endpoint=f"/v2/orders/{order_id}",
            response_check=lambda response: response["status"] == "COMPLETED",
            deferrable=True,
            timeout=300,
        )
        with pytest.raises(TaskDeferred) as first:
            sensor.execute(make_ctx())
        trigger_kwargs = first.value.trigger.serialize()[1]
        assert trigger_kwargs["field_path"] is None and trigger_kwargs["accepted_values"] is None
        event = fire(first.value.trigger)
        assert event["check"] == "worker"
        # Still running: the worker checks a fresh response and defers again, keeping the original deadline.
        with pytest.raises(TaskDeferred) as again:
            sensor.execute_complete(make_ctx(), event=event, **first.value.kwargs)
        assert again.value.trigger.serialize()[1]["end_time"] == trigger_kwargs["end_time"]
        assert again.value.kwargs == first.value.kwargs
        emu.control.advance(60)
        event = fire(again.value.trigger)
        assert sensor.execute_complete(make_ctx(), event=event, **again.value.kwargs) is None

    def test_deferrable_response_check_past_the_deadline_times_out(
        self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx
    ) -> None:
        order_id = place(order_body(email="jane+slow@example.com"))
        sensor = endpoint_sensor(endpoint=f"/v2/orders/{order_id}", response_check=lambda response: False)
        worker_event = {"status": "success", "message": "", "endpoint": "x", "check": "worker"}
        with pytest.raises(AirflowSensorTimeout):
            sensor.execute_complete(make_ctx(), event=worker_event, end_time=time.time() - 1)

    def test_execute_complete_other_events(self, make_ctx: Ctx) -> None:
        sensor = endpoint_sensor(endpoint="/v2/x", field_path="status", accepted_values=["A"], deferrable=True)
        with pytest.raises(AirflowSensorTimeout):
            sensor.execute_complete(make_ctx(), {"status": "timeout", "message": "late"})
        with pytest.raises(AirflowException, match="boom"):
            sensor.execute_complete(make_ctx(), {"status": "error", "message": "boom"})
        with pytest.raises(AirflowException, match="unexpected trigger event"):
            sensor.execute_complete(make_ctx(), None)

    def test_soft_fail_skips_an_error_event(self, make_ctx: Ctx) -> None:
        error = {"event": {"status": "error", "message": "boom", "endpoint": "/v2/x"}}
        sensor = endpoint_sensor(endpoint="/v2/x", field_path="status", accepted_values=["A"], deferrable=True)
        with pytest.raises(AirflowException, match="boom") as info:
            sensor.resume_execution("execute_complete", error, make_ctx())
        assert not isinstance(info.value, AirflowSkipException)
        sensor = endpoint_sensor(
            endpoint="/v2/x", field_path="status", accepted_values=["A"], deferrable=True, soft_fail=True
        )
        with pytest.raises(AirflowSkipException):
            sensor.resume_execution("execute_complete", error, make_ctx())

    @pytest.mark.af3  # Airflow 2's reschedule mode reads earlier reschedules from the metadata database
    def test_reschedule_mode(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body(email="jane+slow@example.com"))
        sensor = endpoint_sensor(
            endpoint=f"/v2/orders/{order_id}", field_path="status", accepted_values=["COMPLETED"], mode="reschedule"
        )
        with pytest.raises(AirflowRescheduleException):
            sensor.execute(make_ctx())


def _client_is_open(sensor: Any) -> bool:
    return "client" in sensor.hook.__dict__


class TestTheHookIsClosed:
    def test_after_poke_mode(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body())
        sensor = order_sensor(order_id)
        sensor.execute(make_ctx())
        assert not _client_is_open(sensor)
        with pytest.raises(AirflowFailException):
            failed = order_sensor(place(order_body(email="jane+fail@example.com")))
            emu.control.advance(10)
            failed.execute(make_ctx())
        assert not _client_is_open(failed)

    def test_before_deferring(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body(email="jane+slow@example.com"))
        sensors = [
            order_sensor(order_id, deferrable=True),
            endpoint_sensor(
                endpoint=f"/v2/orders/{order_id}", field_path="status", accepted_values=["COMPLETED"], deferrable=True
            ),
            endpoint_sensor(endpoint=f"/v2/orders/{order_id}", response_check=lambda r: False, deferrable=True),
        ]
        for sensor in sensors:
            with pytest.raises(TaskDeferred):
                sensor.execute(make_ctx())
            assert not _client_is_open(sensor)

    def test_after_a_worker_side_check(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        order_id = place(order_body())
        emu.control.advance(10)
        sensor = endpoint_sensor(
            endpoint=f"/v2/orders/{order_id}", response_check=lambda r: r["status"] == "COMPLETED", deferrable=True
        )
        worker_event = {"status": "success", "message": "", "endpoint": "x", "check": "worker"}
        assert sensor.execute_complete(make_ctx(), event=worker_event, end_time=time.time() + 60) is None
        assert not _client_is_open(sensor)

    @pytest.mark.af3  # Airflow 2's reschedule mode reads earlier reschedules from the metadata database
    def test_before_rescheduling(self, emu: RunningEmulator, order_body: Body, make_ctx: Ctx) -> None:
        sensor = order_sensor(place(order_body(email="jane+slow@example.com")), mode="reschedule", poke_interval=60)
        with pytest.raises(AirflowRescheduleException):
            sensor.execute(make_ctx())
        assert not _client_is_open(sensor)
