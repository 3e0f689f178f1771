"""Operators for the Connect API: a generic request operator and an order operator that waits for fulfilment.

:class:`TruConnectCreateOrderOperator` never places an order twice on Airflow 3.3+, whatever happens to a try:

* before the ``POST /v2/orders`` leaves, a **sending record** (the request's correlation id) is written to the task
  state store, shared by all tries of the task instance; it is replaced by the order id when the answer arrives. A
  try interrupted while the request is in flight (``execution_timeout``, ``SIGTERM`` on a deploy or pod eviction, an
  OOM kill) leaves the record behind, and the next try refuses to send the order again;
* an answer that leaves the outcome unknown (see :mod:`airflow_provider_truconnect.client.core`) fails the task at once,
  without retries, and keeps the record;
* a retry after the order was placed reattaches to it (``ResumableJobMixin``); an order that ``FAILED`` fails the task
  without retries, so a new order takes a deliberate new run.

Below 3.3 there is no task state store and every try places a new order: keep ``retries=0`` on the task there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.common.compat.sdk import BaseOperator, ResumableJobMixin, conf, determine_kwargs

from airflow_provider_truconnect.arguments import (
    check_bool,
    check_conn_id,
    check_endpoint,
    check_not_order_creation,
    check_optional_dict,
    check_seconds,
    is_templated,
    require,
)
from airflow_provider_truconnect.client.errors import (
    TruConnectConfigError,
    TruConnectError,
    TruConnectOrderUncertainError,
    TruConnectResponseCheckError,
    TruConnectTimeoutError,
    TruConnectXComTooLargeError,
)
from airflow_provider_truconnect.client.models import OrderStatus, order_summary
from airflow_provider_truconnect.client.orders import validate_order
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook, TruConnectHookMixin
from airflow_provider_truconnect.order_guard import ORDER_ID_XCOM_KEY, SENDING_ORDER_KEY, OrderGuard
from airflow_provider_truconnect.order_waiting import (
    DEFER_TIMEOUT_GRACE,
    fail_without_retries,
    handle_order_event,
    order_trigger,
    poll_order_once,
)
from airflow_provider_truconnect.stopping import StopOnKill

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _check_method(method: Any) -> str:
    require(isinstance(method, str), "method", f"must be a string, got {type(method).__name__}")
    upper = str(method).strip().upper()
    require(upper in HTTP_METHODS, "method", f"must be one of {', '.join(HTTP_METHODS)}, got {method!r}")
    return upper


class TruConnectOperator(TruConnectHookMixin, StopOnKill, BaseOperator):
    """Call any Connect API endpoint and return the JSON answer (or a filtered part of it) as XCom.

    The hook adds the OAuth2 token, a correlation id, retries for idempotent requests (429, 5xx, connection errors)
    and typed errors. ``POST /v2/orders`` is refused (when constructed and again once the endpoint is rendered): place
    orders with :class:`TruConnectCreateOrderOperator`, which validates the body and never places an order twice.

    :param endpoint: path relative to the API base, e.g. ``/v2/sims/{{ params.iccid }}`` (templated).
    :param method: HTTP method: GET, POST, PUT, PATCH or DELETE (templated).
    :param query: query parameters (templated). Named ``query`` because ``params`` belongs to ``BaseOperator``.
    :param body: JSON body (templated).
    :param headers: extra headers (templated); ``Authorization`` is set by the hook and refused here.
    :param paginate: GET only: follow ``_next`` links and return the list of all items.
    :param page_size: items per page when paginating.
    :param response_check: called with the response plus any context variables it names (``ti``, ``ds`` ...);
        a false result raises :class:`TruConnectResponseCheckError`.
    :param response_filter: called the same way; its result is returned instead of the response.
    :param max_xcom_bytes: largest JSON encoding of the return value; above it the task fails instead of pushing it.
    :param truconnect_conn_id: the Airflow connection id.
    """

    template_fields: Sequence[str] = ("endpoint", "method", "query", "body", "headers")
    template_fields_renderers = {"query": "json", "body": "json", "headers": "json"}
    ui_color = "#e8f4fb"

    def __init__(
        self,
        *,
        endpoint: str,
        method: str = "GET",
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        paginate: bool = False,
        page_size: int | None = None,
        response_check: Callable[..., bool] | None = None,
        response_filter: Callable[..., Any] | None = None,
        max_xcom_bytes: int = 65536,
        truconnect_conn_id: str = TruConnectHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_conn_id(truconnect_conn_id)
        check_endpoint(endpoint)
        require(isinstance(method, str), "method", f"must be a string, got {type(method).__name__}")
        if not is_templated(method):  # a templated one is checked once rendered
            method = _check_method(method)
            check_not_order_creation(method, endpoint)
        check_optional_dict(query, "query")
        check_optional_dict(headers, "headers")
        require(isinstance(paginate, bool), "paginate", "must be True or False")
        require(not paginate or is_templated(method) or method == "GET", "paginate", "works with GET only")
        require(
            page_size is None or (isinstance(page_size, int) and not isinstance(page_size, bool) and page_size > 0),
            "page_size",
            "must be a positive integer or None",
        )
        require(page_size is None or paginate, "page_size", "only applies with paginate=True")
        require(response_check is None or callable(response_check), "response_check", "must be callable")
        require(response_filter is None or callable(response_filter), "response_filter", "must be callable")
        require(
            isinstance(max_xcom_bytes, int) and not isinstance(max_xcom_bytes, bool) and max_xcom_bytes > 0,
            "max_xcom_bytes",
            "must be a positive integer",
        )
        self.endpoint = endpoint
        self.method = method
        self.query = query
        self.body = body
        self.headers = headers
        self.paginate = paginate
        self.page_size = page_size
        self.response_check = response_check
        self.response_filter = response_filter
        self.max_xcom_bytes = max_xcom_bytes
        self.truconnect_conn_id = truconnect_conn_id

    def execute(self, context: Context) -> Any:
        """Send the request, check and filter the answer, and return it.

        :raises TruConnectResponseCheckError: when ``response_check`` returns a false value.
        :raises TruConnectXComTooLargeError: when the result is larger than ``max_xcom_bytes``.
        :raises TruConnectError: typed API errors from the hook.
        """
        # Templated fields are rendered by now; check them again.
        check_endpoint(self.endpoint)
        self.method = _check_method(self.method)
        check_not_order_creation(self.method, self.endpoint)
        require(not self.paginate or self.method == "GET", "paginate", "works with GET only")
        check_optional_dict(self.query, "query")
        check_optional_dict(self.headers, "headers")
        try:
            with self.running():
                response = self._fetch()
        finally:
            self.hook.close()
        if self.response_check is not None:
            kwargs = determine_kwargs(self.response_check, [response], context)
            if not self.response_check(response, **kwargs):
                raise TruConnectResponseCheckError(f"response_check returned a false value for {self.endpoint}")
        if self.response_filter is not None:
            kwargs = determine_kwargs(self.response_filter, [response], context)
            response = self.response_filter(response, **kwargs)
        return self._xcom_safe(response)

    def _fetch(self) -> Any:
        if self.paginate:
            items: list[Any] = []
            for item in self.hook.paginate(self.endpoint, params=self.query, page_size=self.page_size):
                items.append(item)
                if len(items) % 1000 == 0:
                    self.log.info("Collected %d items from %s so far", len(items), self.endpoint)
            self.log.info("Collected %d items from %s", len(items), self.endpoint)
            return items
        return self.hook.request(self.method, self.endpoint, params=self.query, json=self.body, headers=self.headers)

    def _xcom_safe(self, value: Any) -> Any:
        try:
            size = len(json.dumps(value).encode())
        except (TypeError, ValueError) as exc:
            raise TruConnectXComTooLargeError(
                f"The result of {self.endpoint} is not JSON-serialisable ({exc}); return plain data from "
                "response_filter"
            ) from None
        if size > self.max_xcom_bytes:
            raise TruConnectXComTooLargeError(
                f"The result of {self.endpoint} is {size} bytes as JSON, more than max_xcom_bytes="
                f"{self.max_xcom_bytes}. Keep only what downstream tasks need with response_filter (with "
                "paginate=True for lists), write the data to a file or object storage and return its path, or raise "
                "max_xcom_bytes if your XCom backend handles large values"
            )
        return value


class TruConnectCreateOrderOperator(TruConnectHookMixin, StopOnKill, ResumableJobMixin, BaseOperator):
    """Place an order (``POST /v2/orders``) and, by default, wait until it is ``COMPLETED``.

    The body is validated locally before anything is sent, and the order is placed at most once per task instance
    (Airflow 3.3+; see the module docstring for how). The task fails **without retries** when:

    * the order request was sent and its outcome is unknown (a read timeout, a dropped connection, a 5xx, a 3xx, a
      429, an unreadable answer), now or in an earlier try that was interrupted while sending it. The error says how
      to check whether the order exists;
    * the order ``FAILED``: the order will not change, and a retry must not buy a second one. Place a new order
      deliberately with a new run (or delete the task state store keys named in the message and clear the task).

    Other failures (invalid body, bad credentials, a definite rejection by the API, a wait that timed out) fail the
    task normally; retries then reattach to an order already placed.

    The order id is logged, stored for retries and pushed to XCom under ``order_id``. The return value is the order
    summary: ``order_id``, ``status``, ``iccid``, ``subscription_id`` and, only with ``include_activation_codes=True``,
    the activation codes ``lpa``, ``matching_id``, ``voucher_code`` and ``qr_code_url``.

    **Activation codes** are enough to install the paid eSIM on any phone. They are off by default because the return
    value is stored in clear in Airflow's metadata database and shown in the UI to everyone who can see the DAG; they
    are registered with the secret masker (never in task logs) and never travel in trigger events. Turn them on only
    when a downstream task hands them to the subscriber; otherwise read them when needed with
    ``GET /v2/orders/{id}``.

    **Retries below Airflow 3.3**: there is no task state store and XComs of earlier tries are deleted when a new try
    starts, so every try places a new order: keep ``retries=0`` on this task there, or set
    ``wait_for_completion=False`` and wait with a
    :class:`~airflow_provider_truconnect.sensors.truconnect.TruConnectOrderSensor` task that may retry freely.

    :param order: the order body, as a dict or a JSON string (templated).
    :param wait_for_completion: wait until the order is ``COMPLETED`` or ``FAILED``.
    :param deferrable: wait in the triggerer instead of on the worker.
    :param poll_interval: seconds between status polls.
    :param wait_timeout: seconds to wait for the order before failing.
    :param include_activation_codes: return the activation codes in the summary (see above).
    :param truconnect_conn_id: the Airflow connection id.
    :raises AirflowFailException: when the order ``FAILED`` or its placement is uncertain (no retries); the cause is
        the provider's :class:`TruConnectOrderFailedError` or :class:`TruConnectOrderUncertainError`.
    :raises TruConnectTimeoutError: when the order is not finished within ``wait_timeout``.
    """

    template_fields: Sequence[str] = ("order",)
    template_fields_renderers = {"order": "json"}
    ui_color = "#d6ecf9"
    #: Task state store key of the order id. Renaming it breaks reattachment of in-flight retries.
    external_id_key = "truconnect_order_id"

    def __init__(
        self,
        *,
        order: dict[str, Any] | str | Any,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 5.0,
        wait_timeout: float = 3600.0,
        include_activation_codes: bool = False,
        truconnect_conn_id: str = TruConnectHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_conn_id(truconnect_conn_id)
        # A task output (XComArg) is resolved before execute, like any templated field; it is validated then.
        require(
            isinstance(order, Mapping | str) or hasattr(order, "resolve"),
            "order",
            f"must be a dict, a JSON string or a task output, got {type(order).__name__}",
        )
        if isinstance(order, Mapping) and not is_templated(json.dumps(order, default=str)):
            validate_order(order)  # a literal body fails at parse time; a templated one after rendering
        check_bool(wait_for_completion, "wait_for_completion")
        check_bool(deferrable, "deferrable")
        check_bool(include_activation_codes, "include_activation_codes")
        check_seconds(poll_interval, "poll_interval")
        check_seconds(wait_timeout, "wait_timeout")
        self.order = order
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.wait_timeout = float(wait_timeout)
        self.include_activation_codes = include_activation_codes
        self.truconnect_conn_id = truconnect_conn_id
        self._latest: dict[str, Any] | None = None
        self._published_order_id: str | None = None

    def _now(self) -> float:
        return time.time()

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def order_body(self) -> dict[str, Any]:
        """The rendered order body, parsed when it is a JSON string and validated.

        :raises TruConnectConfigError: naming the first invalid field; nothing has been sent.
        """
        order: Any = self.order
        if isinstance(order, str):
            try:
                order = json.loads(order)
            except json.JSONDecodeError as exc:
                raise TruConnectConfigError("order", f"is not valid JSON ({exc.msg} at position {exc.pos})") from None
        return validate_order(order)

    def execute(self, context: Context) -> Any:
        """Place the order (or reattach to the one an earlier try placed) and wait for it if asked to.

        :return: the order summary.
        """
        self.order_body()  # validate before the resume decision makes any call
        try:
            with self.running():
                return self.execute_resumable(context)
        finally:
            self.hook.close()

    # ----------------------------------------------------------------------------- ResumableJobMixin contract
    def submit_job(self, context: Context) -> str:
        """Place the order once and log its id (the mixin stores it; XCom gets it once stored).

        :return: the order id.
        :raises AirflowFailException: when an earlier try's order FAILED, or an order request (now or by an earlier
            try) may or may not have placed the order; nothing is sent again.
        """
        body = self.order_body()
        guard = self._guard(context)
        earlier = guard.earlier_order()
        if earlier is not None:
            return earlier
        correlation_id = self.hook.client.new_correlation_id()
        guard.sending(correlation_id)
        try:
            created = self.hook.create_order(body, correlation_id=correlation_id)
        except TruConnectOrderUncertainError as exc:
            guard.unknown(correlation_id, "unknown")
            raise fail_without_retries(
                exc,
                "The task fails without retries so that the order is not placed twice. "
                + guard.how_to_check(correlation_id, check=False),
            ) from exc
        except TruConnectError:
            # Provably not placed: never sent, or definitely rejected by the API. A retry may place it.
            guard.not_placed()
            raise
        order_id = created.get("id") if isinstance(created, Mapping) else None
        if not isinstance(order_id, str) or not order_id:
            guard.unknown(correlation_id, "no order id")
            unknown = TruConnectOrderUncertainError(
                "POST /v2/orders answered without an order id; the order MAY have been created",
                correlation_id=correlation_id,
            )
            raise fail_without_retries(unknown, guard.how_to_check(correlation_id)) from unknown
        guard.placed(correlation_id, order_id)
        self._latest = dict(created)
        self.log.info(
            "Placed order %s (status %s, X-Correlation-ID %s)", order_id, created.get("status"), correlation_id
        )
        return order_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        """The order's current status, normalised (``ACCEPTED``, ``FULFILLING``, ``COMPLETED``, ``FAILED`` ...)."""
        self._latest = self.hook.get_order(str(external_id))
        return OrderStatus.parse(self._latest.get("status")).value

    def is_job_active(self, status: str) -> bool:
        """Whether an order in ``status`` is still being fulfilled (unknown statuses count as running)."""
        return not _order_status(status).is_terminal

    def is_job_succeeded(self, status: str) -> bool:
        """Whether an order in ``status`` completed."""
        return _order_status(status).is_success

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        """Wait for the order (on the worker, or by deferring), unless ``wait_for_completion`` is off.

        Returns the summary too, because ``ResumableJobMixin`` returns this method's value when it reattaches.
        """
        order_id = str(external_id)
        self._publish_order_id(order_id, context)  # the id is stored by now, so a failing push loses nothing
        if not self.wait_for_completion:
            return self.get_job_result(order_id, context)
        if self.deferrable:
            self.log.info("Deferring until order %s is finished (at most %.0f s)", order_id, self.wait_timeout)
            self.defer(
                trigger=order_trigger()(
                    order_id=order_id,
                    truconnect_conn_id=self.truconnect_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=self._now() + self.wait_timeout,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.wait_timeout + DEFER_TIMEOUT_GRACE),
            )
        self._wait_on_worker(order_id)
        return self.get_job_result(order_id, context)

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        """The summary of the order (from the latest known state of it)."""
        order_id = str(external_id)
        self._publish_order_id(order_id, context)  # an earlier try's order that already completed
        if self._latest is None or self._latest.get("id") != order_id:
            self._latest = self.hook.get_order(order_id)
        return order_summary(self._latest, include_activation_codes=self.include_activation_codes)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after :class:`TruConnectOrderTrigger` fired.

        :param context: the task context.
        :param event: the trigger's event.
        :return: the order summary on success (the activation codes, when asked for, are read here on the worker:
            trigger events never carry them).
        :raises AirflowFailException: on a ``failed`` event.
        :raises TruConnectTimeoutError: on a ``timeout`` event.
        :raises TruConnectError: on an ``error`` event or a malformed one.
        """
        summary = handle_order_event(event)
        if not self.include_activation_codes:
            return summary
        try:
            return self.get_job_result(summary["order_id"], context)
        finally:
            self.hook.close()

    # ----------------------------------------------------------------------------------------------- helpers
    def _wait_on_worker(self, order_id: str) -> None:
        deadline = self._now() + self.wait_timeout
        while True:
            done, order = poll_order_once(self.hook, order_id, self.log)
            if order is not None:
                self._latest = order
            if done:
                return
            remaining = deadline - self._now()
            if remaining <= 0:
                last = (self._latest or {}).get("status", "unknown")
                raise TruConnectTimeoutError(
                    f"Order {order_id} not finished within {self.wait_timeout:.0f} s (last status {last}); it was "
                    "placed and may still complete: check it before placing it again"
                )
            self._sleep(min(self.poll_interval, remaining))

    def _publish_order_id(self, order_id: str, context: Context) -> None:
        """Push the order id to XCom ``order_id`` once; a failure is logged, as the id is already kept elsewhere."""
        ti = context.get("ti")
        if ti is None or self._published_order_id == order_id:
            return
        self._published_order_id = order_id  # one attempt per try, failed or not
        try:
            ti.xcom_push(key=ORDER_ID_XCOM_KEY, value=order_id)
        except Exception as exc:  # the order exists and its id is stored; XCom is a convenience for other tasks
            self.log.warning("Could not push order id %s to XCom %r: %s", order_id, ORDER_ID_XCOM_KEY, exc)

    def _guard(self, context: Context) -> OrderGuard:
        return OrderGuard(
            context,
            task_id=self.task_id,
            external_id_key=self.external_id_key,
            order_status=lambda order_id: self.get_job_status(order_id, context),
            log=self.log,
        )


def _order_status(value: Any) -> OrderStatus:
    return cast(OrderStatus, OrderStatus.parse(value))


__all__ = [
    "ORDER_ID_XCOM_KEY",
    "SENDING_ORDER_KEY",
    "TruConnectCreateOrderOperator",
    "TruConnectOperator",
    "TruConnectResponseCheckError",
    "TruConnectXComTooLargeError",
]
