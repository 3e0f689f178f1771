"""Waiting for an order, shared by the order operator and the order sensor: one poll on the worker, the handling of
the trigger's event, and the failures that must not be retried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_truconnect.client.errors import TruConnectError, TruConnectTimeoutError
from airflow_provider_truconnect.client.models import OrderStatus, order_failed_error, order_failure

if TYPE_CHECKING:
    from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

#: Extra time Airflow's own deferral timeout allows beyond the wait, so that the trigger's timeout event (which carries
#: the order's last state) normally arrives first; each trigger poll ends by the deadline, so a minute is plenty.
DEFER_TIMEOUT_GRACE = 60.0


class Log(Protocol):
    """The logging methods the helpers use (a task's ``self.log``)."""

    def info(self, msg: Any, /, *args: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any) -> Any: ...


def fail_without_retries(exc: TruConnectError, note: str = "") -> AirflowFailException:
    """The exception that fails a task at once, without retries, for a failure that a retry cannot mend or that a
    retry would make worse (a ``FAILED`` order, an order of unknown outcome). Raise it ``from exc``: the provider's
    error, with its status, messages and correlation id, stays attached as the cause.

    :param exc: the provider's error.
    :param note: what the user should do, appended to the message.
    """
    return AirflowFailException(f"{exc}. {note}" if note else str(exc))


def order_failed(order_id: str, error_type: str | None, messages: list[str]) -> AirflowFailException:
    """A ``FAILED`` order: final for the task; a new order needs a deliberate new run."""
    error = order_failed_error(order_id, error_type, messages)
    failure = fail_without_retries(
        error,
        "The order will not change and the task is not retried, so that no second order is placed by accident; "
        "place a new order deliberately (a new DAG run, or see the provider docs on re-running an order task)",
    )
    failure.__cause__ = error
    return failure


def poll_order_once(hook: TruConnectHook, order_id: str, log: Log) -> tuple[bool, dict[str, Any] | None]:
    """Fetch an order once, for the worker-side waits.

    A retryable error that outlasted the client's retry budget is logged and counts as "not finished yet": the order
    exists and keeps being fulfilled, so an outage is not its end.

    :param hook: the hook to fetch it with.
    :param order_id: the order.
    :param log: where to log progress.
    :return: ``(done, order)``: ``(True, order)`` when ``COMPLETED``, ``(False, order)`` while it is in progress
        (or in an unknown status), ``(False, None)`` after a retryable error.
    :raises AirflowFailException: when the order ``FAILED`` (caused by a ``TruConnectOrderFailedError``).
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
        raise order_failed(order_id, error_type, messages)
    log.info("Order %s is %s", order_id, status.value)
    return False, order


def _order_timeout(message: str) -> NoReturn:
    raise TruConnectTimeoutError(f"{message}; it was placed and may still complete: check it before retrying")


def handle_order_event(
    event: Any,
    *,
    order_id: str | None = None,
    on_error: Callable[[str], NoReturn] | None = None,
    on_timeout: Callable[[str], NoReturn] = _order_timeout,
) -> dict[str, Any]:
    """Turn a :class:`~airflow_provider_truconnect.triggers.truconnect.TruConnectOrderTrigger` event into the order
    summary or an exception.

    :param event: the event payload.
    :param order_id: the order waited for, when the event does not name it.
    :param on_error: called with the message of an ``error`` event or a malformed one; must raise (default: raise
        :class:`TruConnectError`).
    :param on_timeout: called with the event's message on a ``timeout`` event; must raise.
    :return: the summary of a completed order (without activation codes: events never carry them).
    :raises AirflowFailException: on a ``failed`` event.
    """

    def error(message: str) -> NoReturn:
        if on_error is not None:
            on_error(message)
        raise TruConnectError(message)

    if not isinstance(event, Mapping):
        error(f"Unexpected trigger event: {type(event).__name__}")
    status = event.get("status")
    message = str(event.get("message") or "no message")
    order_id = str(event.get("order_id") or order_id or "")
    if status == "success":
        summary = event.get("summary")
        return dict(summary) if isinstance(summary, Mapping) else {"order_id": order_id}
    if status == "failed":
        messages = event.get("messages")
        error_type = event.get("error_type")
        raise order_failed(
            order_id,
            str(error_type) if error_type else None,
            [str(m) for m in messages] if isinstance(messages, list) else [message],
        )
    if status == "timeout":
        on_timeout(message)
    error(f"Waiting for order {order_id} failed: {message}")


def order_trigger() -> type[Any]:
    """The order trigger class, imported when deferring, not at DAG parse time (it pulls in Airflow's trigger base)."""
    from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger

    return TruConnectOrderTrigger
