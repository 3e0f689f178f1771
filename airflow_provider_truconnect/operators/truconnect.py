"""Operators for the Connect API: a generic request operator and an order operator that waits for fulfilment.

:class:`TruConnectCreateOrderOperator` is retry-safe on Airflow 3.3+: it uses ``ResumableJobMixin`` to keep the
order id in the task state store, so a retry reattaches to the order placed by an earlier try instead of buying a
second one. Below 3.3 the compat stand-in places a new order on every try (see the class docstring). An order request
whose outcome is unknown fails the task without retries, on every Airflow version.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, cast
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    BaseOperator,
    ResumableJobMixin,
    conf,
    determine_kwargs,
)

from airflow_provider_truconnect.client.errors import (
    TruConnectConfigError,
    TruConnectError,
    TruConnectOrderFailedError,
    TruConnectOrderUncertainError,
    TruConnectResponseCheckError,
    TruConnectTimeoutError,
    TruConnectXComTooLargeError,
)
from airflow_provider_truconnect.client.models import OrderStatus, order_failed_error, order_failure, order_summary
from airflow_provider_truconnect.client.orders import validate_order
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook, TruConnectHookMixin

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: XCom key under which the order operator pushes the order id as soon as the order exists.
ORDER_ID_XCOM_KEY = "order_id"
#: Extra time Airflow's own deferral timeout allows beyond ``wait_timeout``, so that the trigger's timeout event
#: (which carries the order's last state) normally arrives first.
DEFER_TIMEOUT_GRACE = 60.0
#: Task state store key recording an order request whose outcome is unknown; while it is set, no try places the order.
UNCERTAIN_ORDER_KEY = "truconnect_order_uncertain"
_ORDERS_PATH = "/v2/orders"


class _Log(Protocol):
    def info(self, msg: Any, /, *args: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any) -> Any: ...


def _serialize_error(err: TruConnectError) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """Airflow's exception serialisation, keeping the keyword arguments a :class:`TruConnectError` carries."""
    cls = type(err)
    kwargs = {
        "status_code": err.status_code,
        "error_type": err.error_type,
        "messages": list(err.messages),
        "correlation_id": err.correlation_id,
        "retryable": err.retryable,
        "sent": err.sent,
    }
    return f"{cls.__module__}.{cls.__name__}", (err.message,), kwargs


class TruConnectOrderUncertainFailError(TruConnectOrderUncertainError, AirflowFailException):  # type: ignore[misc]
    """The order may or may not exist: the task fails at once without retries, so that no try places it again."""

    def serialize(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """Airflow's exception serialisation, with the keyword arguments this class needs to be re-created."""
        return _serialize_error(self)


def _require(cond: bool, field: str, problem: str) -> None:
    if not cond:
        raise TruConnectConfigError(field, problem)


def _check_conn_id(conn_id: Any) -> None:
    _require(isinstance(conn_id, str) and bool(conn_id.strip()), "truconnect_conn_id", "must be a non-empty string")


def _check_bool(value: Any, field: str) -> None:
    _require(isinstance(value, bool), field, f"must be True or False, got {value!r}")


def _check_seconds(value: Any, field: str) -> None:
    _require(
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0,
        field,
        "must be a positive, finite number of seconds",
    )


def _check_endpoint(endpoint: Any) -> None:
    _require(isinstance(endpoint, str) and bool(endpoint.strip()), "endpoint", "must be a non-empty string")
    _require("?" not in endpoint, "endpoint", "must not contain a query string; pass query={...} instead")


def _is_order_creation(method: str, endpoint: str) -> bool:
    path = "/" + urlsplit(endpoint.strip()).path.strip("/")
    return method.upper() == "POST" and path.lower().endswith(_ORDERS_PATH)


def _check_not_order_creation(method: str, endpoint: str) -> None:
    _require(
        not _is_order_creation(method, endpoint),
        "endpoint",
        "POST /v2/orders places an order; use TruConnectCreateOrderOperator, which validates the body and never "
        "places an order twice (retries reattach to the order already placed)",
    )


def _check_optional_dict(value: Any, field: str) -> None:
    _require(value is None or isinstance(value, Mapping), field, f"must be a dict or None, got {type(value).__name__}")


def _order_status(value: Any) -> OrderStatus:
    return cast(OrderStatus, OrderStatus.parse(value))


def _is_templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


class TruConnectOperator(TruConnectHookMixin, BaseOperator):
    """Call any Connect API endpoint and return the JSON answer (or a filtered part of it) as XCom.

    The hook adds the OAuth2 token, a correlation id, retries for idempotent requests (429, 5xx, connection errors)
    and typed errors. ``POST /v2/orders`` is refused (when constructed and again once the endpoint is rendered): place
    orders with :class:`TruConnectCreateOrderOperator`, which validates the body and never places an order twice.

    :param endpoint: path relative to the API base, e.g. ``/v2/sims/{{ params.iccid }}`` (templated).
    :param method: HTTP method: GET, POST, PUT, PATCH or DELETE.
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

    template_fields: Sequence[str] = ("endpoint", "query", "body", "headers")
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
        _check_conn_id(truconnect_conn_id)
        _check_endpoint(endpoint)
        _require(isinstance(method, str), "method", f"must be a string, got {type(method).__name__}")
        method = method.upper()
        _require(method in HTTP_METHODS, "method", f"must be one of {', '.join(HTTP_METHODS)}, got {method!r}")
        _check_not_order_creation(method, endpoint)
        _check_optional_dict(query, "query")
        _check_optional_dict(headers, "headers")
        _require(isinstance(paginate, bool), "paginate", "must be True or False")
        _require(not paginate or method == "GET", "paginate", "works with GET only")
        _require(
            page_size is None or (isinstance(page_size, int) and not isinstance(page_size, bool) and page_size > 0),
            "page_size",
            "must be a positive integer or None",
        )
        _require(page_size is None or paginate, "page_size", "only applies with paginate=True")
        _require(response_check is None or callable(response_check), "response_check", "must be callable")
        _require(response_filter is None or callable(response_filter), "response_filter", "must be callable")
        _require(
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
        _check_endpoint(self.endpoint)
        _check_not_order_creation(self.method, self.endpoint)
        _check_optional_dict(self.query, "query")
        _check_optional_dict(self.headers, "headers")
        try:
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


class TruConnectCreateOrderOperator(TruConnectHookMixin, ResumableJobMixin, BaseOperator):
    """Place an order (``POST /v2/orders``) and, by default, wait until it is ``COMPLETED``.

    The body is validated locally before anything is sent. The order is placed once: the client never repeats the
    POST when it may have been processed. Such an unknown outcome (or an answer without an order id) fails the task
    at once, without retries, with :class:`TruConnectOrderUncertainFailError` (a ``TruConnectOrderUncertainError``
    and an ``AirflowFailException``); on Airflow 3.3+ it is also recorded in the task state store, and any later try
    of the task instance (e.g. after a manual clear) refuses to place the order until the record is deleted. The
    order id is logged, stored for retries (Airflow 3.3+) and then pushed to XCom under ``order_id`` (a failing push
    only logs a warning). The return value is the order summary
    (``order_id``, ``status``, ``iccid``, ``matching_id``, ``subscription_id``, ``lpa``, ``qr_code_url``,
    ``voucher_code`` where present).

    **Retries.** On Airflow 3.3+ the order id is also stored in the task state store (``ResumableJobMixin``), which
    is shared by all tries of the task instance: a retry reattaches to that order (waits for it, or returns it if it
    already completed) and places a new one only if it ``FAILED``. Below 3.3 there is no such store and XComs of
    earlier tries are deleted when a new try starts, so every try places a new order; there, keep ``retries=0`` on
    this task, or set ``wait_for_completion=False`` and wait with a :class:`TruConnectOrderSensor` task that may
    retry freely.

    :param order: the order body, as a dict or a JSON string (templated).
    :param wait_for_completion: wait until the order is ``COMPLETED`` or ``FAILED``.
    :param deferrable: wait in the triggerer instead of on the worker.
    :param poll_interval: seconds between status polls.
    :param wait_timeout: seconds to wait for the order before failing.
    :param truconnect_conn_id: the Airflow connection id.
    :raises TruConnectOrderFailedError: when the order ends ``FAILED`` (with the API's messages).
    :raises TruConnectTimeoutError: when the order is not finished within ``wait_timeout``.
    :raises TruConnectOrderUncertainFailError: when the order may or may not have been placed (no retries).
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
        truconnect_conn_id: str = TruConnectHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_conn_id(truconnect_conn_id)
        # A task output (XComArg) is resolved before execute, like any templated field; it is validated then.
        _require(
            isinstance(order, Mapping | str) or hasattr(order, "resolve"),
            "order",
            f"must be a dict, a JSON string or a task output, got {type(order).__name__}",
        )
        if isinstance(order, Mapping) and not _is_templated(json.dumps(order, default=str)):
            validate_order(order)  # a literal body fails at parse time; a templated one after rendering
        _check_bool(wait_for_completion, "wait_for_completion")
        _check_bool(deferrable, "deferrable")
        _check_seconds(poll_interval, "poll_interval")
        _check_seconds(wait_timeout, "wait_timeout")
        self.order = order
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.wait_timeout = float(wait_timeout)
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
            return self.execute_resumable(context)
        finally:
            self.hook.close()

    # ----------------------------------------------------------------------------- ResumableJobMixin contract
    def submit_job(self, context: Context) -> str:
        """Place the order once and log its id (the mixin stores it; XCom gets it once stored).

        :return: the order id.
        :raises TruConnectOrderUncertainFailError: when the order may or may not have been placed, now or by an
            earlier try; nothing is sent again.
        """
        body = self.order_body()
        previous = self._order_id_from_previous_try(context)
        if previous is not None:
            return previous
        self._refuse_after_uncertain_order(context)
        try:
            created = self.hook.create_order(body)
        except TruConnectOrderUncertainError as exc:
            raise self._uncertain_order(context, exc) from exc
        order_id = created.get("id") if isinstance(created, Mapping) else None
        if not isinstance(order_id, str) or not order_id:
            raise self._uncertain_order(
                context,
                TruConnectOrderUncertainError(
                    "POST /v2/orders answered without an order id; the order MAY have been created. Check the "
                    "orders before placing it again"
                ),
            )
        self._latest = dict(created)
        self.log.info("Placed order %s (status %s)", order_id, created.get("status"))
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
                trigger=_order_trigger()(
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
        return order_summary(self._latest)

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

    def _uncertain_order(
        self, context: Context, exc: TruConnectOrderUncertainError
    ) -> TruConnectOrderUncertainFailError:
        """Record an order request of unknown outcome, and return the error that fails the task without retries."""
        store = context.get("task_state_store")
        if store is not None:
            ti = context.get("ti")
            record = {"correlation_id": exc.correlation_id, "try_number": getattr(ti, "try_number", None)}
            try:
                store.set(UNCERTAIN_ORDER_KEY, record)
            except Exception as store_exc:  # the task still fails without retries; a manual clear is then unguarded
                self.log.warning("Could not record the uncertain order request in the task state store: %s", store_exc)
        return TruConnectOrderUncertainFailError(
            f"{exc.message}. The task fails without retries so that the order is not placed twice",
            status_code=exc.status_code,
            error_type=exc.error_type,
            messages=exc.messages,
            correlation_id=exc.correlation_id,
        )

    def _refuse_after_uncertain_order(self, context: Context) -> None:
        """Fail when an earlier try of this task instance sent an order request of unknown outcome."""
        store = context.get("task_state_store")
        record = store.get(UNCERTAIN_ORDER_KEY) if store is not None else None
        if not record:
            return
        correlation_id = record.get("correlation_id") if isinstance(record, Mapping) else None
        raise TruConnectOrderUncertainFailError(
            "An earlier try of this task sent POST /v2/orders and could not tell whether the order was created, so "
            "this try does not place it again. Check whether the order exists: for a top-up, GET "
            "/v2/subscriptions?iccid=<iccid>; for a new eSIM, ask 1GLOBAL support quoting "
            f"{'the correlation id of that request' if correlation_id else 'the task and time of that try'}. If it "
            "exists, wait for it with TruConnectOrderSensor; if it does not, delete the task state store key "
            f"{UNCERTAIN_ORDER_KEY!r} of this task instance and clear the task",
            correlation_id=correlation_id if isinstance(correlation_id, str) and correlation_id else None,
        )

    def _order_id_from_previous_try(self, context: Context) -> str | None:
        """Reattach through XCom where there is no task state store (Airflow < 3.3); best effort.

        Stock Airflow 2.11 and 3.x delete a task's XComs when a new try starts (they survive only a deferral), so
        this normally finds nothing; it matters with setups that keep them.
        """
        if context.get("task_state_store") is not None:
            return None
        ti = context.get("ti")
        if ti is None or getattr(ti, "try_number", 1) <= 1:
            return None
        try:
            previous = ti.xcom_pull(task_ids=self.task_id, key=ORDER_ID_XCOM_KEY)
        except Exception as exc:  # XCom lookup failures must not stop the try; fall back to a new order
            self.log.warning("Could not look up the order id of the previous try: %s", exc)
            return None
        if not isinstance(previous, str) or not previous:
            self.log.warning(
                "Try %s of %s: no order id from an earlier try is available (Airflow < 3.3 keeps none), so a NEW "
                "order is placed; an earlier try may already have placed one",
                ti.try_number,
                self.task_id,
            )
            return None
        status = self.get_job_status(previous, context)
        if status == OrderStatus.FAILED.value:
            self.log.warning("Order %s of the previous try FAILED; placing a new order", previous)
            return None
        self.log.info("Reattaching to order %s placed by the previous try (status %s)", previous, status)
        return previous

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after :class:`TruConnectOrderTrigger` fired.

        :param context: the task context.
        :param event: the trigger's event.
        :return: the order summary on success.
        :raises TruConnectOrderFailedError: on a ``failed`` event.
        :raises TruConnectTimeoutError: on a ``timeout`` event.
        :raises TruConnectError: on an ``error`` event or a malformed one.
        """
        return handle_order_event(event)


def _order_timeout(message: str) -> NoReturn:
    raise TruConnectTimeoutError(f"{message}; it was placed and may still complete: check it before retrying")


def handle_order_event(
    event: Any,
    *,
    order_id: str | None = None,
    failed_error: type[TruConnectOrderFailedError] = TruConnectOrderFailedError,
    error: type[TruConnectError] = TruConnectError,
    on_timeout: Callable[[str], NoReturn] = _order_timeout,
) -> dict[str, Any]:
    """Turn a :class:`TruConnectOrderTrigger` event into the order summary or a typed error.

    Serves the order operator (defaults) and :class:`TruConnectOrderSensor` (its own error classes and timeout).

    :param event: the event payload.
    :param order_id: the order waited for, when the event does not name it.
    :param failed_error: the class raised on a ``failed`` event.
    :param error: the class raised on an ``error`` event or a malformed one.
    :param on_timeout: called with the event's message on a ``timeout`` event; must raise.
    :return: the summary of a completed order.
    """
    if not isinstance(event, Mapping):
        raise error(f"Unexpected trigger event: {type(event).__name__}")
    status = event.get("status")
    message = str(event.get("message") or "no message")
    order_id = str(event.get("order_id") or order_id or "")
    if status == "success":
        summary = event.get("summary")
        return dict(summary) if isinstance(summary, Mapping) else {"order_id": order_id}
    if status == "failed":
        messages = event.get("messages")
        error_type = event.get("error_type")
        raise order_failed_error(
            order_id,
            str(error_type) if error_type else None,
            [str(m) for m in messages] if isinstance(messages, list) else [message],
            cls=failed_error,
        )
    if status == "timeout":
        on_timeout(message)
    raise error(f"Waiting for order {order_id} failed: {message}")


def poll_order_once(
    hook: TruConnectHook,
    order_id: str,
    log: _Log,
    *,
    failed_error: type[TruConnectOrderFailedError] = TruConnectOrderFailedError,
) -> tuple[bool, dict[str, Any] | None]:
    """Fetch an order once, for the worker-side waits of the order operator and :class:`TruConnectOrderSensor`.

    A retryable error that outlasted the client's retry budget is logged and counts as "not finished yet": the order
    exists and keeps being fulfilled, so an outage is not its end.

    :param hook: the hook to fetch it with.
    :param order_id: the order.
    :param log: where to log progress.
    :param failed_error: the class raised when the order ``FAILED``.
    :return: ``(done, order)``: ``(True, order)`` when ``COMPLETED``, ``(False, order)`` while it is in progress
        (or in an unknown status), ``(False, None)`` after a retryable error.
    :raises TruConnectOrderFailedError: (``failed_error``) when the order ``FAILED``.
    """
    try:
        order = hook.get_order(order_id)
    except TruConnectError as exc:
        if not exc.retryable:
            raise
        log.warning("Polling order %s failed after retries (%s); polling again", order_id, exc)
        return False, None
    status = OrderStatus.parse(order.get("status"))
    if status is OrderStatus.COMPLETED:
        log.info("Order %s COMPLETED", order_id)
        return True, order
    if status is OrderStatus.FAILED:
        error_type, messages = order_failure(order)
        raise order_failed_error(order_id, error_type, messages, cls=failed_error)
    log.info("Order %s is %s", order_id, status.value)
    return False, order


__all__ = [
    "TruConnectCreateOrderOperator",
    "TruConnectOperator",
    "TruConnectOrderUncertainFailError",
    "TruConnectResponseCheckError",
    "TruConnectXComTooLargeError",
]


def _order_trigger() -> type[Any]:
    # Imported when deferring, not at DAG parse time: the trigger module pulls in Airflow's trigger base classes.
    from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger

    return TruConnectOrderTrigger
