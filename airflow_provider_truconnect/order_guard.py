"""What the tries of one order task instance know about its order, so that no try ever places it a second time.

On Airflow 3.3+ it lives in the task state store, shared by all tries of a task instance: before ``POST /v2/orders``
leaves, a **sending record** (:data:`SENDING_ORDER_KEY`) holds the request's correlation id; the answer adds the order
id, or marks the outcome unknown, or (a request that provably placed nothing) deletes the record. A later try reads
it: an order id means "reattach", a record without one means "an earlier try may have placed it: refuse", and the
order id the resumable-job mixin stores (:attr:`TruConnectCreateOrderOperator.external_id_key`) of an order that
``FAILED`` means "final: a new order takes a deliberate new run". Below 3.3 only a surviving ``order_id`` XCom can
help, best effort.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from airflow_provider_truconnect.client.errors import (
    TruConnectError,
    TruConnectOrderFailedError,
    TruConnectOrderUncertainError,
)
from airflow_provider_truconnect.client.models import OrderStatus
from airflow_provider_truconnect.order_waiting import fail_without_retries

#: XCom key under which the order operator pushes the order id as soon as the order exists.
ORDER_ID_XCOM_KEY = "order_id"
#: Task state store key of the sending record: written before ``POST /v2/orders`` leaves, holding its correlation id;
#: the order id is added when the answer arrives. Without an order id it means "sent, outcome unknown".
SENDING_ORDER_KEY = "truconnect_order_sending"


class _Log(Protocol):
    def info(self, msg: Any, /, *args: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any) -> Any: ...


class OrderGuard:
    """The order records of one try of an order task.

    :param context: the task context (its ``task_state_store`` and ``ti``).
    :param task_id: the task's id, for the guidance in messages.
    :param external_id_key: the state store key where the order id of a placed order is kept.
    :param order_status: fetches an order's normalised status (e.g. ``FAILED``).
    :param log: the task's logger.
    """

    def __init__(
        self,
        context: Mapping[str, Any],
        *,
        task_id: str,
        external_id_key: str,
        order_status: Callable[[str], str],
        log: _Log,
    ) -> None:
        self.store = context.get("task_state_store")
        self.ti = context.get("ti")
        self.task_id = task_id
        self.external_id_key = external_id_key
        self.order_status = order_status
        self.log = log

    # ------------------------------------------------------------------------------------- before sending
    def earlier_order(self) -> str | None:
        """What an earlier try left: an order to reattach to, or a reason to refuse.

        :return: the id of an order an earlier try placed and that did not fail, or ``None`` when no earlier try
            sent an order request.
        :raises AirflowFailException: when the earlier order FAILED or the earlier request's outcome is unknown.
        """
        if self.store is None:
            return self._order_id_from_xcom()
        failed_id = self.store.get(self.external_id_key)
        if failed_id:
            # The mixin asks for a new order after finding a stored one only when that order is terminal and not
            # completed: it FAILED.
            raise _final(
                TruConnectOrderFailedError(
                    f"Order {failed_id} placed by an earlier try FAILED", order_id=str(failed_id)
                ),
                "A new order is not placed automatically: to place one, start a new DAG run, or delete the task "
                f"state store keys {self.external_id_key!r} and {SENDING_ORDER_KEY!r} of this task instance and "
                "clear the task",
            )
        record = self.store.get(SENDING_ORDER_KEY)
        if not record:
            return None
        record = record if isinstance(record, Mapping) else {}
        order_id = record.get("order_id")
        if isinstance(order_id, str) and order_id:
            return self._reattach(order_id)
        correlation_id = record.get("correlation_id")
        cid = correlation_id if isinstance(correlation_id, str) and correlation_id else None
        raise _final(
            TruConnectOrderUncertainError(
                f"An earlier try (try {record.get('try_number', '?')}, at {record.get('sent_at', '?')}) sent "
                "POST /v2/orders and did not learn whether the order was created (it was interrupted, or the answer "
                "left the outcome unknown), so this try does not send it again",
                correlation_id=cid,
            ),
            self.how_to_check(cid),
        )

    def sending(self, correlation_id: str) -> None:
        """Write the sending record before the order request leaves; no record, no request.

        :raises TruConnectError: when the record cannot be written (nothing was sent; the task may be retried).
        """
        if self.store is None:
            return
        try:
            self.store.set(SENDING_ORDER_KEY, self._record(correlation_id))
        except Exception as exc:
            # Without the record, an interruption while sending could be followed by a second order.
            raise TruConnectError(
                f"Could not record the order request in the task state store ({type(exc).__name__}: {exc}); "
                "nothing was sent, and the task may be retried"
            ) from exc

    # ----------------------------------------------------------------------------------------- after sending
    def placed(self, correlation_id: str, order_id: str) -> None:
        """The answer named the order: a try interrupted from here on reattaches to it."""
        self._update({**self._record(correlation_id), "order_id": order_id})

    def unknown(self, correlation_id: str, outcome: str) -> None:
        """The outcome is unknown: the record stays, and later tries refuse."""
        self._update({**self._record(correlation_id), "outcome": outcome})

    def not_placed(self) -> None:
        """The request provably placed nothing (never sent, or definitely rejected): a later try may place it."""
        if self.store is None:
            return
        try:
            self.store.delete(SENDING_ORDER_KEY)
        except Exception as exc:  # the next try then refuses to place the order, which is safe
            self.log.warning("Could not delete the order record from the task state store: %s", exc)

    def how_to_check(self, correlation_id: str | None, *, check: bool = True) -> str:
        """What to do about an order of unknown outcome (``check``: including how to find out whether it exists)."""
        quote = f"the correlation id {correlation_id}" if correlation_id else "the task and time of that try"
        how = (
            "Check whether the order exists: for a top-up, GET /v2/subscriptions?iccid=<iccid> (a new subscription "
            f"appears); for a new eSIM, ask 1GLOBAL support quoting {quote}. "
            if check
            else ""
        )
        return (
            f"{how}If it exists, wait for it with TruConnectOrderSensor; if it does not, start a new DAG run, or "
            f"delete the task state store key {SENDING_ORDER_KEY!r} of task {self.task_id!r} in this run (REST API: "
            "DELETE /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/state-store/"
            f"{SENDING_ORDER_KEY}) and clear the task"
        )

    # ----------------------------------------------------------------------------------------------- helpers
    def _record(self, correlation_id: str) -> dict[str, Any]:
        return {
            "correlation_id": correlation_id,
            "try_number": getattr(self.ti, "try_number", None),
            "sent_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _update(self, record: dict[str, Any]) -> None:
        if self.store is None:
            return
        try:
            self.store.set(SENDING_ORDER_KEY, record)
        except Exception as exc:  # the sending record already guards the next try
            self.log.warning("Could not update the order record in the task state store: %s", exc)

    def _reattach(self, order_id: str) -> str:
        status = self.order_status(order_id)
        if status == OrderStatus.FAILED.value:
            raise _final(
                TruConnectOrderFailedError(f"Order {order_id} placed by an earlier try FAILED", order_id=order_id),
                "A new order is not placed automatically: to place one, start a new DAG run, or delete the task "
                f"state store key {SENDING_ORDER_KEY!r} of this task instance and clear the task",
            )
        self.log.info("Reattaching to order %s placed by an earlier try (status %s)", order_id, status)
        return order_id

    def _order_id_from_xcom(self) -> str | None:
        """Reattach through XCom where there is no task state store (Airflow < 3.3); best effort.

        Stock Airflow 2.11 and 3.x delete a task's XComs when a new try starts (they survive only a deferral), so
        this normally finds nothing; it matters with setups that keep them.
        """
        ti = self.ti
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
        return self._reattach(previous)


def _final(exc: TruConnectError, note: str) -> BaseException:
    failure = fail_without_retries(exc, note)
    failure.__cause__ = exc
    return failure
