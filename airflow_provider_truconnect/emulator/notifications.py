"""Webhook notifications ([DOC NOTIF; DOC-v1 REPO], docs/connect-api.md §8): per-SIM registrations and the events
the emulator would deliver. Events are recorded, not delivered: tests read them from ``stats()["notifications"]``."""

from __future__ import annotations

import random
import uuid
from typing import Any

from airflow_provider_truconnect.emulator.clock import iso
from airflow_provider_truconnect.emulator.errors import Problem, invalid_params, not_found
from airflow_provider_truconnect.emulator.models import Sim, Subscription

NOTIFICATION_TYPES = {
    "USAGE_THRESHOLD": "USAGE_THRESHOLD",
    "SUBSCRIPTION_END": "SUBSCRIPTION_END",
    # [DOC] the docs misspell it; we accept both spellings and store the correct one.
    "SUBSCRITPION_END": "SUBSCRIPTION_END",
    "DOWNLOAD_PROGRESS": "DOWNLOAD_PROGRESS",
}


class Notifier:
    """Records the webhook events of one data generation."""

    def __init__(self, rng: random.Random) -> None:
        """:param rng: source of the event ids (the data set's runtime RNG, so a seed reproduces them)."""
        self.rng = rng
        self.events: list[dict[str, Any]] = []

    def register(self, sim: Sim, ntype: str, webhook_url: str | None) -> dict[str, Any]:
        """[GUESS modelled on v1] register (or with None, remove) a webhook of a SIM.

        :param sim: the caller's SIM.
        :param ntype: notification type (either spelling of ``SUBSCRIPTION_END``).
        :param webhook_url: the URL, or None to remove the registration.
        :return: the registration.
        :raises ApiError: 400 on an unknown type, 404 when removing a registration that does not exist.
        """
        canonical = NOTIFICATION_TYPES.get(ntype.upper())
        if canonical is None:
            raise invalid_params(
                [Problem(f"type must be one of {', '.join(sorted(set(NOTIFICATION_TYPES.values())))}", "$.type")]
            )
        if webhook_url is None:
            if canonical not in sim.notifications:
                raise not_found("Notification", f"{canonical} of SIM {sim.iccid}")
            del sim.notifications[canonical]
            return {"type": canonical}
        sim.notifications[canonical] = webhook_url
        return {"type": canonical, "webhook_url": webhook_url}

    def _emit(self, sim: Sim, ntype: str, payload: dict[str, Any]) -> None:
        event = {"id": str(uuid.UUID(int=self.rng.getrandbits(128))), "type": ntype, **payload}
        self.events.append({"webhook_url": sim.notifications.get(ntype), "payload": event})

    def download_progress(self, sim: Sim) -> None:
        """:param sim: a SIM whose profile status just changed."""
        step = {"Downloaded": "BPP_DOWNLOAD", "Installed": "BPP_INSTALLATION"}.get(sim.status, sim.status.upper())
        self._emit(
            sim,
            "DOWNLOAD_PROGRESS",
            {
                "iccid": sim.iccid,
                "download_progress_step": step,
                "notification_point_description": step.replace("_", " ").title().replace("Bpp", "BPP"),
                "notification_status": "SUCCESS",
            },
        )

    def subscription_end(self, sim: Sim, sub: Subscription) -> None:
        """:param sim: the SIM. :param sub: its subscription that just expired or ran out."""
        self._emit(
            sim,
            "SUBSCRIPTION_END",
            {
                "iccid": sim.iccid,
                "subscription_id": sub.id,
                "expiration_date": iso(sub.expiry),
                "current_balance": sub.current_balance,
            },
        )

    def usage_threshold(self, sim: Sim, sub: Subscription) -> None:
        """:param sim: the SIM. :param sub: its subscription that just crossed 80 % use."""
        self._emit(
            sim,
            "USAGE_THRESHOLD",
            {
                "iccid": sim.iccid,
                "subscription_id": sub.id,
                "threshold": 80,
                "expiration_date": iso(sub.expiry),
                "current_balance": sub.current_balance,
            },
        )
