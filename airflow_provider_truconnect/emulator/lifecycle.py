"""Subscription lifecycle driven by the API and the control plane: activation, forced expiry and data use
([INFERRED] dynamics of docs/connect-api.md §9.2 and §9.3). Time-driven transitions live on
:meth:`~airflow_provider_truconnect.emulator.models.Subscription.refresh`."""

from __future__ import annotations

from typing import Any

from airflow_provider_truconnect.emulator.errors import Problem, invalid_params
from airflow_provider_truconnect.emulator.models import Subscription
from airflow_provider_truconnect.emulator.store import DataStore


def activate_subscription(store: DataStore, client_id: str, sub_id: str) -> Subscription:
    """[DOC link, DOC-v1 behaviour] replace a future activation date with now (+ ``activate_delay``).

    :param store: the data.
    :param client_id: caller.
    :param sub_id: id.
    :return: the subscription.
    :raises ApiError: 403/404; 400 if not ``PENDING``/``PENDING_USAGE`` ([INFERRED]).
    """
    with store.runtime.lock:
        store.before_read()
        sub = store.own_subscription(client_id, sub_id)
        if sub.status not in ("PENDING", "PENDING_USAGE"):
            raise invalid_params([Problem(f"subscription {sub_id} is {sub.status}, not PENDING", "$.status")])
        now = store.runtime.now()
        sub.activation = now + store.runtime.config.activate_delay
        sub.expiry = sub.activation + sub.duration_seconds
        sub.status = "PENDING"
        sub.refresh(now)
        return sub


def expire_subscription(store: DataStore, client_id: str, sub_id: str) -> Subscription:
    """[GUESS] force-expire a subscription (path and method undocumented).

    :param store: the data.
    :param client_id: caller.
    :param sub_id: id.
    :return: the subscription.
    :raises ApiError: 403/404; 400 if already terminal.
    """
    with store.runtime.lock:
        store.before_read()
        sub = store.own_subscription(client_id, sub_id)
        if sub.status in ("EXPIRED", "DEPLETED"):
            raise invalid_params([Problem(f"subscription {sub_id} is already {sub.status}", "$.status")])
        sub.status = "EXPIRED"
        sub.expiry = store.runtime.now()
        sim = store.sims.get(sub.sim_id)
        if sim is not None:
            store.notifier.subscription_end(sim, sub)
        return sub


def use_data(store: DataStore, iccid: str, used_bytes: int) -> dict[str, Any]:
    """Control plane: simulate data use on a SIM.

    First use installs the profile and starts a ``PENDING_USAGE`` plan; usage drains ``ACTIVE`` plans oldest first; a
    plan at 0 becomes ``DEPLETED``; crossing 80 % records a ``USAGE_THRESHOLD`` notification.

    :param store: the data.
    :param iccid: the SIM.
    :param used_bytes: bytes consumed.
    :return: a summary ``{"iccid", "consumed", "unconsumed", "subscriptions": [...]}``.
    :raises KeyError: unknown SIM.
    :raises ValueError: negative bytes.
    """
    if used_bytes < 0:
        raise ValueError("bytes must be >= 0")
    with store.runtime.lock:
        store.before_read()
        sim = store.sims[iccid]
        now = store.runtime.now()
        subs = store.subs_by_iccid.get(iccid, [])
        for sub in subs:
            sub.refresh(now)
        active = [s for s in subs if s.status == "ACTIVE"]
        if not active:
            first_usage = next((s for s in subs if s.status == "PENDING_USAGE"), None)
            if first_usage is not None:
                first_usage.activation = now
                first_usage.expiry = now + first_usage.duration_seconds
                first_usage.status = "ACTIVE"
                active = [first_usage]
        if not sim.used or sim.status in ("Released", "Downloaded"):
            sim.used = True
            if sim.status in ("Released", "Downloaded"):
                store.change_sim_status(sim, "Installed")
        remaining = used_bytes
        for sub in active:
            if remaining <= 0:
                break
            take = min(remaining, sub.current_balance)
            sub.current_balance -= take
            remaining -= take
            if not sub.threshold_notified and sub.current_balance <= sub.initial_balance * 0.2:
                sub.threshold_notified = True
                store.notifier.usage_threshold(sim, sub)
            if sub.current_balance == 0:
                sub.status = "DEPLETED"
                store.notifier.subscription_end(sim, sub)
        return {
            "iccid": iccid,
            "consumed": used_bytes - remaining,
            "unconsumed": remaining,
            "subscriptions": [{"id": s.id, "status": s.status, "current_balance": s.current_balance} for s in subs],
        }
