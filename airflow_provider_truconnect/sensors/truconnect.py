"""Sensors for the Connect API: wait for an order to finish, or for a condition on any endpoint.

Both sensors work in ``poke``, ``reschedule`` and deferrable mode. In deferrable mode they poke once on the worker
and defer only when the condition does not hold yet, with an absolute deadline in the trigger. Retryable errors that
outlast the client's retry budget count as "not yet" in every mode, like in the triggers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
    determine_kwargs,
)

from airflow_provider_truconnect.arguments import check_bool, check_conn_id, check_endpoint, is_templated
from airflow_provider_truconnect.client.errors import TruConnectConfigError, TruConnectError, TruConnectNotFoundError
from airflow_provider_truconnect.client.models import extract_field, order_summary
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook, TruConnectHookMixin
from airflow_provider_truconnect.order_waiting import DEFER_TIMEOUT_GRACE, handle_order_event, poll_order_once

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class _DeferrableSensor(TruConnectHookMixin, BaseSensorOperator):
    """Poke once on the worker; defer only when not done. Skips on failure with ``soft_fail`` / ``never_fail``."""

    def __init__(self, *, deferrable: bool, truconnect_conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_conn_id(truconnect_conn_id)
        check_bool(deferrable, "deferrable")
        self.deferrable = deferrable
        self.truconnect_conn_id = truconnect_conn_id

    def _poke_once(self, context: Context) -> PokeReturnValue:
        # BaseSensorOperator.execute applies soft_fail / never_fail to pokes; this first poke runs outside it.
        never_fail = getattr(self, "never_fail", False)  # not on every supported Airflow version
        try:
            result = self.poke(context)
        except (AirflowFailException, AirflowSensorTimeout) as exc:
            if self.soft_fail or never_fail:
                raise AirflowSkipException(
                    f"Skipping ({'soft_fail' if self.soft_fail else 'never_fail'}): {exc}"
                ) from exc
            raise
        except AirflowSkipException:
            raise
        except Exception as exc:
            if never_fail:
                raise AirflowSkipException(f"Skipping (never_fail): {exc}") from exc
            raise
        return result if isinstance(result, PokeReturnValue) else PokeReturnValue(bool(result))

    def _end_time(self) -> float:
        return time.time() + float(self.timeout)

    def _timed_out(self, message: str) -> NoReturn:
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)

    def _wait_failed(self, message: str) -> NoReturn:
        # An AirflowException, so that Airflow's resume path applies soft_fail / never_fail to it.
        raise AirflowException(f"Waiting in the triggerer failed: {message}")


class TruConnectOrderSensor(_DeferrableSensor):
    """Wait until an order is ``COMPLETED``; fail at once when it is ``FAILED``.

    Unknown or in-progress statuses (``ACCEPTED``, ``FULFILLING``, anything new) keep the sensor waiting. On success
    the order summary is returned (XCom ``return_value``): ``order_id``, ``status``, ``iccid``, ``subscription_id``
    and, only with ``include_activation_codes=True``, the activation codes (``lpa``, ``matching_id``,
    ``voucher_code``, ``qr_code_url``; secrets, off by default: see
    :class:`~airflow_provider_truconnect.operators.truconnect.TruConnectCreateOrderOperator`). A ``FAILED`` order
    raises ``AirflowFailException`` caused by a :class:`TruConnectOrderFailedError` with the API's messages: no
    retries, since the order will not change (skipped with ``soft_fail=True``).

    An ``error`` event of the trigger raises ``AirflowException`` (skipped with ``soft_fail=True``).

    :param order_id: the order to wait for (templated), e.g. ``{{ ti.xcom_pull('create', key='order_id') }}``.
    :param deferrable: wait in the triggerer instead of on the worker.
    :param include_activation_codes: return the activation codes in the summary.
    :param truconnect_conn_id: the Airflow connection id.
    """

    template_fields: Sequence[str] = ("order_id",)
    ui_color = "#c5e3f6"

    def __init__(
        self,
        *,
        order_id: str,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        include_activation_codes: bool = False,
        truconnect_conn_id: str = TruConnectHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(deferrable=deferrable, truconnect_conn_id=truconnect_conn_id, **kwargs)
        if not isinstance(order_id, str) or not order_id.strip():
            raise TruConnectConfigError("order_id", "must be a non-empty string")
        check_bool(include_activation_codes, "include_activation_codes")
        self.order_id = order_id
        self.include_activation_codes = include_activation_codes

    def poke(self, context: Context) -> PokeReturnValue:
        """Fetch the order once.

        :return: done with the summary when ``COMPLETED``, not done otherwise (also after a retryable error that
            outlasted the client's retries).
        :raises AirflowFailException: when the order is ``FAILED``.
        """
        done, order = poll_order_once(self.hook, self.order_id, self.log)
        if done and order is not None:
            summary = order_summary(order, include_activation_codes=self.include_activation_codes)
            return PokeReturnValue(is_done=True, xcom_value=summary)
        return PokeReturnValue(is_done=False)

    def execute(self, context: Context) -> Any:
        """Poke (poke / reschedule mode), or poke once and defer to :class:`TruConnectOrderTrigger`."""
        try:
            if not self.deferrable:
                return super().execute(context)
            result = self._poke_once(context)
            if result.is_done:
                return result.xcom_value
            end_time = self._end_time()
            self.defer(
                trigger=_triggers().TruConnectOrderTrigger(
                    order_id=self.order_id,
                    truconnect_conn_id=self.truconnect_conn_id,
                    poll_interval=self.poke_interval,
                    end_time=end_time,
                ),
                method_name="execute_complete",
                # Later than the trigger's own deadline, so that its timeout event (with the last status) wins.
                timeout=timedelta(seconds=float(self.timeout) + DEFER_TIMEOUT_GRACE),
            )
        finally:
            self.hook.close()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired.

        :return: the order summary on success (activation codes, when asked for, are read here: events never carry
            them).
        :raises AirflowFailException: on a ``failed`` event.
        :raises AirflowSensorTimeout: on a ``timeout`` event (skipped with ``soft_fail``).
        :raises AirflowException: on an ``error`` event or a malformed one (skipped with ``soft_fail``).
        """
        summary = handle_order_event(
            event, order_id=self.order_id, on_error=self._wait_failed, on_timeout=self._timed_out
        )
        if not self.include_activation_codes:
            return summary
        try:
            order = self.hook.get_order(str(summary.get("order_id") or self.order_id))
        finally:
            self.hook.close()
        return order_summary(order, include_activation_codes=True)


class TruConnectSensor(_DeferrableSensor):
    """Poll an endpoint until a condition holds.

    Give exactly one condition:

    * declarative: ``field_path`` (dotted, e.g. ``status`` or ``data.0.status``) and ``accepted_values``; evaluated
      in the triggerer in deferrable mode, so no worker is used while waiting. Returns the field's value.
    * ``response_check``: a callable receiving the decoded response plus any context variables it names. In
      deferrable mode the trigger only waits ``poke_interval``; the worker then evaluates the callable on a fresh
      response and defers again when it is false (a short worker slot per interval). Returns ``None``.

    A 404 counts as "not yet" (waiting for a resource to appear), and so does a retryable error (5xx, 429, connection
    problems) that outlasted the client's retries; other errors fail the poke. An ``error`` event of the trigger
    raises ``AirflowException`` (skipped with ``soft_fail=True``).

    :param endpoint: path relative to the API base (templated).
    :param query: query parameters (templated).
    :param field_path: dotted path of the field to test (templated).
    :param accepted_values: values of the field that end the wait (compared with ``==``; case matters).
    :param response_check: a callable returning true when the wait is over.
    :param deferrable: wait in the triggerer instead of on the worker.
    :param truconnect_conn_id: the Airflow connection id.
    """

    template_fields: Sequence[str] = ("endpoint", "query", "field_path")
    template_fields_renderers = {"query": "json"}
    ui_color = "#c5e3f6"

    def __init__(
        self,
        *,
        endpoint: str,
        query: dict[str, Any] | None = None,
        field_path: str | None = None,
        accepted_values: Sequence[Any] | None = None,
        response_check: Callable[..., bool] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        truconnect_conn_id: str = TruConnectHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(deferrable=deferrable, truconnect_conn_id=truconnect_conn_id, **kwargs)
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise TruConnectConfigError("endpoint", "must be a non-empty string")
        if not is_templated(endpoint):
            check_endpoint(endpoint)  # a templated one is checked once rendered
        if query is not None and not isinstance(query, Mapping):
            raise TruConnectConfigError("query", f"must be a dict or None, got {type(query).__name__}")
        declarative = field_path is not None or accepted_values is not None
        if declarative and response_check is not None:
            raise TruConnectConfigError(
                "response_check", "cannot be combined with field_path/accepted_values; give one condition"
            )
        if not declarative and response_check is None:
            raise TruConnectConfigError(
                "field_path", "a condition is required: field_path with accepted_values, or response_check"
            )
        if declarative:
            if not isinstance(field_path, str) or not field_path.strip():
                raise TruConnectConfigError("field_path", "must be a non-empty dotted path such as 'data.0.status'")
            if (
                accepted_values is None
                or isinstance(accepted_values, str | bytes | Mapping)
                or not isinstance(accepted_values, Sequence)
                or not accepted_values
            ):
                raise TruConnectConfigError(
                    "accepted_values", "must be a non-empty list of values, e.g. ['ACTIVE'], given with field_path"
                )
        elif not callable(response_check):
            raise TruConnectConfigError("response_check", "must be callable")
        self.endpoint = endpoint
        self.query = query
        self.field_path = field_path
        self.accepted_values = list(accepted_values) if accepted_values is not None else None
        self.response_check = response_check

    def _check_rendered(self) -> None:
        # Templated fields are rendered by now; check them again.
        check_endpoint(self.endpoint)
        if self.query is not None and not isinstance(self.query, Mapping):
            raise TruConnectConfigError("query", f"must be a dict or None, got {type(self.query).__name__}")
        if self.response_check is None and (not isinstance(self.field_path, str) or not self.field_path.strip()):
            raise TruConnectConfigError("field_path", "must be a non-empty dotted path such as 'data.0.status'")

    def poke(self, context: Context) -> PokeReturnValue:
        """Fetch the endpoint once and evaluate the condition.

        :return: done (with the field's value for a declarative condition) or not done.
        """
        try:
            body = self.hook.request("GET", self.endpoint, params=self.query)
        except TruConnectNotFoundError:
            self.log.info("%s not found yet", self.endpoint)
            return PokeReturnValue(is_done=False)
        except TruConnectError as exc:
            if not exc.retryable:
                raise
            self.log.warning("Polling %s failed after retries (%s); polling again", self.endpoint, exc)
            return PokeReturnValue(is_done=False)
        if self.response_check is not None:
            kwargs = determine_kwargs(self.response_check, [body], context)
            return PokeReturnValue(is_done=bool(self.response_check(body, **kwargs)))
        assert self.field_path is not None and self.accepted_values is not None
        found, value = extract_field(body, self.field_path)
        if found and value in self.accepted_values:
            self.log.info("%s: %s is %r", self.endpoint, self.field_path, value)
            return PokeReturnValue(is_done=True, xcom_value=value)
        self.log.info("%s: %s is %s", self.endpoint, self.field_path, repr(value) if found else "missing")
        return PokeReturnValue(is_done=False)

    def execute(self, context: Context) -> Any:
        """Poke (poke / reschedule mode), or poke once and defer to :class:`TruConnectSensorTrigger`."""
        self._check_rendered()
        try:
            if not self.deferrable:
                return super().execute(context)
            result = self._poke_once(context)
            if result.is_done:
                return result.xcom_value
            self._defer(self._end_time())
        finally:
            self.hook.close()

    def _defer(self, end_time: float) -> NoReturn:
        self.defer(
            trigger=_triggers().TruConnectSensorTrigger(
                endpoint=self.endpoint,
                query=dict(self.query) if self.query else None,
                field_path=self.field_path,
                accepted_values=self.accepted_values,
                truconnect_conn_id=self.truconnect_conn_id,
                poll_interval=self.poke_interval,
                end_time=end_time,
            ),
            method_name="execute_complete",
            kwargs={"end_time": end_time},
            # Later than the trigger's own deadline, so that its timeout event normally arrives first.
            timeout=timedelta(seconds=max(0.0, end_time - time.time()) + DEFER_TIMEOUT_GRACE),
        )

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, end_time: float | None = None
    ) -> Any:
        """Resume after the trigger fired; with ``response_check``, evaluate it and defer again when false.

        :param context: the task context.
        :param event: the trigger's event.
        :param end_time: the absolute deadline set when the sensor first deferred.
        :return: the field's value (declarative condition) or ``None`` (``response_check``).
        :raises AirflowSensorTimeout: on a ``timeout`` event or when the deadline passed (skipped with ``soft_fail``).
        :raises AirflowException: on an ``error`` event or a malformed one (skipped with ``soft_fail``).
        """
        if not isinstance(event, Mapping):
            self._wait_failed(f"unexpected trigger event: {type(event).__name__}")
        status = event.get("status")
        message = str(event.get("message") or "no message")
        if status == "timeout":
            self._timed_out(message)
        if status != "success":
            self._wait_failed(f"polling {self.endpoint} failed: {message}")
        if event.get("check") != "worker":
            return event.get("value")
        try:
            result = self.poke(context)
        finally:
            self.hook.close()
        if result.is_done:
            return result.xcom_value
        deadline = end_time if end_time is not None else self._end_time()
        if time.time() >= deadline:
            self._timed_out(f"Condition on {self.endpoint} not met within {self.timeout:.0f} s")
        self._defer(deadline)


__all__ = ["TruConnectOrderSensor", "TruConnectSensor"]


def _triggers() -> Any:
    # Imported when deferring, not at DAG parse time: the trigger module pulls in Airflow's trigger base classes.
    from airflow_provider_truconnect.triggers import truconnect

    return truconnect
