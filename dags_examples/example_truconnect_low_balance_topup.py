"""
### TruConnect low-balance top-up

Every hour, finds eSIMs that are about to run out of data and buys each one a top-up of the plan it is on.

**Which SIMs are topped up.** Subscriptions are grouped by SIM (`sim_id` is the ICCID): a SIM is *low* when the data
left on its `ACTIVE` subscriptions is under `threshold_percent` % of their allowance, or under
`min_remaining_bytes`. Looking at the SIM and not at one subscription is what stops the next hourly run from buying
again: after a top-up the SIM has a fresh, full subscription and is no longer low. SIMs that already have a plan
queued (`PENDING` / `PENDING_USAGE`) are skipped, and so are physical SIMs (their top-ups need a price and an
activation date agreed with billing) and SIMs whose profile is `Unavailable` (they cannot be topped up).

**Safety cap.** At most `max_topups` orders are placed per run (default 5, at most 50); a bug or a bad threshold can
therefore not buy thousands of plans. Candidates beyond the cap are logged and picked up by the next run, lowest
balance first.

**Orders.** One `TruConnectCreateOrderOperator` per SIM through dynamic task mapping, deferrable. `POST /v2/orders`
is not idempotent; on Airflow 3.3+ the operator keeps each order id in the task state store, so a retry reattaches
to its order instead of buying again; below 3.3 a retry would buy again, so `place_topup` gets no retries there
(`safe_order_retries`). The body is the
documented eSIM top-up [docs/connect-api.md §7.1]: `product.id`, `subscriber.sim.iccid` and `subscriber.device`.
Subscriptions do not carry the device, so this example sends `params.device`; in production look it up in your CRM.

**Returns** `{"low_sims": n, "placed": m, "orders": [{iccid, order_id, status, subscription_id}, ...]}`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from airflow_provider_truconnect.operators.truconnect import TruConnectCreateOrderOperator
from airflow_provider_truconnect.version_compat import safe_order_retries

log = logging.getLogger(__name__)

#: Statuses that mean "a plan is already queued on this SIM".
_QUEUED = frozenset({"PENDING", "PENDING_USAGE"})


def find_low_balance_sims(
    subscriptions: list[dict[str, Any]] | Any, *, threshold_percent: float, min_remaining_bytes: int
) -> list[dict[str, Any]]:
    """Group subscriptions by SIM and return the SIMs whose ACTIVE data left is under the threshold.

    Pure function (no I/O) so it can be unit-tested and reused.

    :param subscriptions: subscription resources from ``GET /v2/subscriptions``.
    :param threshold_percent: low when the remaining data is under this share of the allowance.
    :param min_remaining_bytes: also low when the remaining data is under this many bytes (0 disables).
    :return: ``{iccid, remaining_bytes, initial_bytes, product_id}`` per low SIM, lowest share left first; the
        product is that of the SIM's most recently created ACTIVE subscription.
    """
    from airflow_provider_truconnect.client.models import SubscriptionStatus, to_bytes

    active: dict[str, list[dict[str, Any]]] = defaultdict(list)
    queued: set[str] = set()
    for sub in subscriptions:
        iccid = sub.get("sim_id")
        if not iccid:
            continue
        status = SubscriptionStatus.parse(sub.get("status"))
        if status is SubscriptionStatus.ACTIVE:
            active[iccid].append(sub)
        elif status.value in _QUEUED:
            queued.add(iccid)
    low: list[dict[str, Any]] = []
    for iccid, subs in active.items():
        if iccid in queued:
            continue
        initial = sum(to_bytes(s.get("initial_balance")) or 0 for s in subs)
        remaining = sum(to_bytes(s.get("current_balance")) or 0 for s in subs)
        if initial <= 0:
            continue
        if remaining * 100 < threshold_percent * initial or remaining < min_remaining_bytes:
            newest = max(subs, key=lambda s: str(s.get("created_date") or ""))
            low.append(
                {
                    "iccid": iccid,
                    "remaining_bytes": remaining,
                    "initial_bytes": initial,
                    "product_id": newest.get("product_id"),
                }
            )
    low.sort(key=lambda c: (c["remaining_bytes"] / c["initial_bytes"], c["iccid"]))
    return low


# [START truconnect_low_balance_topup]
@dag(
    dag_id="truconnect_low_balance_topup",
    schedule="@hourly",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["example", "truconnect", "topup"],
    default_args={"owner": "telecom-ops", "retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "threshold_percent": Param(10, type="number", minimum=0, maximum=100),
        "min_remaining_bytes": Param(0, type="integer", minimum=0, description="Also low under this; 0 disables."),
        "max_topups": Param(5, type="integer", minimum=0, maximum=50, description="Orders placed per run, at most."),
        "topup_product_id": Param("", type="string", description="Empty: top up with the SIM's current plan."),
        "device": Param(
            {"operating_system": "android", "model": "unknown", "id": "unknown"},
            type="object",
            description="subscriber.device sent with eSIM top-ups (look it up in your CRM in production).",
        ),
    },
    doc_md=__doc__,
)
def truconnect_low_balance_topup() -> None:
    @task
    def select_topups() -> list[dict[str, Any]]:
        """Find low-balance eSIMs and build at most ``max_topups`` top-up order bodies."""
        from airflow_provider_truconnect.client.models import SimStatus
        from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

        context = get_current_context()
        params = context["params"]
        cap = int(params["max_topups"])
        orders: list[dict[str, Any]] = []
        examined = 0
        with TruConnectHook() as hook:
            candidates = find_low_balance_sims(
                hook.list_subscriptions(page_size=100),
                threshold_percent=float(params["threshold_percent"]),
                min_remaining_bytes=int(params["min_remaining_bytes"]),
            )
            log.info("%d SIMs are under the threshold; placing at most %d top-ups", len(candidates), cap)
            esim_products = {p["id"] for p in hook.list_products() if "ESIM" in p.get("sim_type", [])}
            for candidate in candidates:
                if len(orders) >= cap:
                    break
                examined += 1
                sim = hook.get_sim(candidate["iccid"])
                if sim.get("sim_type") != "ESIM" or SimStatus.parse(sim.get("status")) is SimStatus.UNAVAILABLE:
                    log.info("Skipping SIM %s (%s, %s)", candidate["iccid"], sim.get("sim_type"), sim.get("status"))
                    continue
                product_id = params["topup_product_id"] or candidate["product_id"]
                if product_id not in esim_products:
                    log.warning("Skipping SIM %s: product %s is not sold for eSIMs", candidate["iccid"], product_id)
                    continue
                orders.append(
                    {
                        "operation_type": "TOPUP",
                        "sim_type": "ESIM",
                        "product": {"id": product_id},
                        "subscriber": {"sim": {"iccid": candidate["iccid"]}, "device": dict(params["device"])},
                    }
                )
        if examined < len(candidates):
            log.warning("Cap of %d reached: %d low SIMs are left for the next run", cap, len(candidates) - examined)
        context["ti"].xcom_push(key="low_sims", value=len(candidates))
        return orders

    # [START howto_operator_truconnect_create_order_mapped]
    topups = TruConnectCreateOrderOperator.partial(
        task_id="place_topup",
        deferrable=True,
        poll_interval=10.0,
        # A retry reattaches to its order on Airflow 3.3+; below 3.3 it would buy again, so no retries there.
        retries=safe_order_retries(2),
        map_index_template="{{ task.order['subscriber']['sim']['iccid'] }}",
    ).expand(order=select_topups())
    # [END howto_operator_truconnect_create_order_mapped]

    @task(trigger_rule="none_failed")
    def summarize(results: Any) -> dict[str, Any]:
        """Return the placed top-ups (runs also when no SIM needed one)."""
        low_sims = get_current_context()["ti"].xcom_pull(task_ids="select_topups", key="low_sims")
        orders = [
            {k: r.get(k) for k in ("iccid", "order_id", "status", "subscription_id")} for r in (results or []) if r
        ]
        log.info("Placed %d top-ups for %s low SIMs", len(orders), low_sims)
        return {"low_sims": low_sims, "placed": len(orders), "orders": orders}

    summarize(topups.output)


truconnect_low_balance_topup()
# [END truconnect_low_balance_topup]
