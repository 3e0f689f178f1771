"""The order engine ([DOC ORDLC], docs/connect-api.md §7.1, §7.2 and §9.1): accepts orders, and settles them
lazily: an order is ``ACCEPTED``, then ``FULFILLING``, then ``COMPLETED`` or ``FAILED`` at times fixed when it was
created, evaluated against the emulator clock whenever something is read. Nothing runs in the background, so a test
that moves the clock sees a deterministic result.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from airflow_provider_truconnect.emulator.clock import iso, parse_datetime
from airflow_provider_truconnect.emulator.errors import ApiError, access_denied, invalid_params, not_found
from airflow_provider_truconnect.emulator.models import Order, Sim, Subscription, b64id, matching_id
from airflow_provider_truconnect.emulator.order_validation import validate_order
from airflow_provider_truconnect.emulator.store import DataStore


class OrderEngine:
    """Orders of one data generation, and their effects on the data store when they complete."""

    def __init__(self, store: DataStore) -> None:
        """:param store: the data the orders create SIMs and subscriptions in (its reads settle due orders)."""
        self.store = store
        self.runtime = store.runtime
        self.orders: dict[str, Order] = {}
        self.order_log: list[Order] = []
        self._pending: list[Order] = []
        self._activations: dict[str, list[float]] = {c: [] for c in self.runtime.config.clients}
        store.before_read = self.settle

    def status(self, order: Order) -> str:
        """:param order: an order. :return: its status at the emulator's now ([DOC ORDLC] states)."""
        return order.status_at(self.runtime.now())

    def get(self, client_id: str, order_id: str) -> Order:
        """:param client_id: caller. :param order_id: id. :return: the order (settled if due).
        :raises ApiError: 403/404."""
        with self.runtime.lock:
            self.settle()
            order = self.orders.get(order_id)
            if order is None:
                raise not_found("Order", order_id)
            if order.client_id != client_id:
                raise access_denied("Order", order_id)
            return order

    def settle(self) -> None:
        """Complete every order whose completion time has passed."""
        if not self._pending:
            return
        with self.runtime.lock:
            now = self.runtime.now()
            due = [o for o in self._pending if o.complete_at <= now]
            if not due:
                return
            self._pending = [o for o in self._pending if o.complete_at > now]
            for order in sorted(due, key=lambda o: o.complete_at):
                self._complete(order)

    def create(self, client_id: str, body: Any, correlation_id: str | None) -> Order:
        """Validate and accept an order ([DOC] docs/connect-api.md §7.1; validation details [INFERRED]).

        :param client_id: caller.
        :param body: the parsed JSON body.
        :param correlation_id: the request's ``X-Correlation-ID``.
        :return: the ``ACCEPTED`` order.
        :raises ApiError: 400 ``INVALID_REQUEST_PARAMS``, 403 (top-up of another client's SIM), 406 (cap).
        """
        with self.runtime.lock:
            self.settle()
            now = self.runtime.now()
            problems, sim = validate_order(self.store, client_id, body, now)
            if problems:
                raise invalid_params(problems)
            assert isinstance(body, dict)
            operation = body["operation_type"]
            if operation == "ACTIVATION":
                self._check_caps(client_id, now)
            product_id = body["product"]["id"]
            email = str((body.get("subscriber") or {}).get("email") or "")
            fail_reason = None
            if "FAIL" in product_id:
                fail_reason = f"Product {product_id} could not be provisioned"
            elif "+fail@" in email:
                fail_reason = "Subscriber could not be provisioned"
            cfg = self.runtime.config
            slow = 10.0 if "+slow@" in email else 1.0
            order = Order(
                id=str(uuid.uuid4()),
                client_id=client_id,
                operation_type=operation,
                sim_type=body["sim_type"],
                created=now,
                fulfilling_at=now + cfg.order_fulfilling_after * slow,
                complete_at=now + cfg.order_complete_after * slow,
                request=json.loads(json.dumps(body)),
                correlation_id=correlation_id,
                fail_reason=fail_reason,
            )
            if sim is not None and operation == "TOPUP":
                sim.last_modified = now
            self.orders[order.id] = order
            self.order_log.append(order)
            self._pending.append(order)
            if operation == "ACTIVATION":
                self._activations[client_id].append(now)
            return order

    def _check_caps(self, client_id: str, now: float) -> None:
        # [DOC CAP] 406 UNACCEPTABLE over the daily / monthly activation cap (UTC calendar periods [INFERRED]).
        cfg = self.runtime.config
        if cfg.daily_esim_cap is None and cfg.monthly_esim_cap is None:
            return
        today = datetime.fromtimestamp(now, UTC)
        day = month = 0
        for ts in self._activations[client_id]:
            moment = datetime.fromtimestamp(ts, UTC)
            if (moment.year, moment.month) == (today.year, today.month):
                month += 1
                if moment.day == today.day:
                    day += 1
        if cfg.daily_esim_cap is not None and day >= cfg.daily_esim_cap:
            raise ApiError(406, "UNACCEPTABLE", [f"Daily eSIM cap of {cfg.daily_esim_cap} reached"])
        if cfg.monthly_esim_cap is not None and month >= cfg.monthly_esim_cap:
            raise ApiError(406, "UNACCEPTABLE", [f"Monthly eSIM cap of {cfg.monthly_esim_cap} reached"])

    def _complete(self, order: Order) -> None:
        if order.fail_reason is not None:
            self._fail(order, order.fail_reason)
            return
        store = self.store
        at = order.complete_at
        req = order.request
        product_req = req.get("product") or {}
        product = store.products[product_req["id"]]
        subscriber = req.get("subscriber") or {}
        if order.operation_type == "ACTIVATION":
            rng = store.rng
            iccid = (subscriber.get("sim") or {}).get("iccid") or store.new_iccid(order.client_id, rng)
            if iccid in store.sims:
                self._fail(order, f"SIM {iccid} is already in use")
                return
            sim = Sim(iccid, order.client_id, matching_id(rng), order.sim_type, "Released", at)
            sim.email = subscriber.get("email")
            store.add_sim(sim)
        else:
            iccid = subscriber["sim"]["iccid"]
            existing = store.sims.get(iccid)
            if existing is None or existing.status == "Unavailable":
                self._fail(order, f"SIM {iccid} is no longer available")
                return
            sim = existing
        activation = parse_datetime(product_req["activation_date"]) if product_req.get("activation_date") else None
        expiry = parse_datetime(product_req["expiration_date"]) if product_req.get("expiration_date") else None
        if bool(product_req.get("is_first_usage_activation")) and activation is None and expiry is None:
            status = "PENDING_USAGE"
        else:
            activation = at if activation is None else activation
            expiry = activation + product.duration_seconds if expiry is None else expiry
            status = "PENDING" if activation > at else "ACTIVE"
        sub = Subscription(
            id=b64id(store.rng),
            client_id=order.client_id,
            sim_id=iccid,
            product_id=product.id,
            name=product.name,
            created=at,
            activation=activation,
            expiry=expiry,
            status=status,
            initial_balance=product.data_bytes,
            current_balance=product.data_bytes,
            duration_seconds=product.duration_seconds,
        )
        store.add_subscription(sub)
        sim.last_modified = at
        output: dict[str, Any] = {"iccid": iccid, "subscription_id": sub.id}
        if order.operation_type == "ACTIVATION":
            # [DOC-v1; INFERRED] top-up orders carry no matching id.
            output = {"matching_id": sim.matching_id, **output}
        order.output = output
        order.settled_status = "COMPLETED"

    @staticmethod
    def _fail(order: Order, reason: str) -> None:
        order.settled_status = "FAILED"
        # [INFERRED] the body of a FAILED order is undocumented; this "error" field is invented.
        order.error = {"type": "ORDER_FAILED", "messages": [reason]}

    def view(self) -> list[dict[str, Any]]:
        """:return: every created order with the correlation id that created it (control plane)."""
        with self.runtime.lock:
            self.settle()
            now = self.runtime.now()
            return [
                {
                    "id": o.id,
                    "client_id": o.client_id,
                    "correlation_id": o.correlation_id,
                    "operation_type": o.operation_type,
                    "status": o.status_at(now),
                    "created_date": iso(o.created),
                    "output": o.output,
                    "request": o.request,
                }
                for o in self.order_log
            ]
