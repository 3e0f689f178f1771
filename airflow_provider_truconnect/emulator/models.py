"""Entities of the emulated Connect API (products, SIMs, subscriptions, orders, tokens) and their id shapes."""

from __future__ import annotations

import base64
import json
import random
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

SMDP_ADDRESS = "rsp.truphone.com"
MAX_ACTIVE_SUBSCRIPTIONS_PER_SIM = 15  # [DOC-v1]
SIM_STATUSES = ("Released", "Downloaded", "Installed", "Unavailable")
SUBSCRIPTION_STATUSES = ("PENDING", "PENDING_USAGE", "ACTIVE", "DEPLETED", "EXPIRED")
LIVE_SUBSCRIPTION_STATUSES = frozenset({"ACTIVE", "PENDING", "PENDING_USAGE"})
DAY = 86_400.0
_UNIT_BYTES = {"KB": 2**10, "MB": 2**20, "GB": 2**30}
_MATCHING_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(slots=True)
class Product:
    """A catalogue product ([DOC PROD] fields)."""

    id: str
    name: str
    sim_type: list[str]
    duration: int
    duration_unit: str
    data: int
    data_unit: str
    price: float
    price_currency: str
    footprint_code: str

    @property
    def data_bytes(self) -> int:
        """:return: the allowance in bytes."""
        return self.data * _UNIT_BYTES[self.data_unit]

    @property
    def duration_seconds(self) -> float:
        """:return: the plan length; a month counts as 30 days ([INFERRED])."""
        return self.duration * (30 * DAY if self.duration_unit == "MONTHS" else DAY)


@dataclass(slots=True)
class Sim:
    """A SIM / eSIM profile ([DOC ESIMLC] fields plus owner, subscriber email and webhook registrations)."""

    iccid: str
    client_id: str
    matching_id: str
    sim_type: str
    status: str
    last_modified: float
    email: str | None = None
    used: bool = False
    notifications: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Subscription:
    """A subscription ([DOC SUBLC] fields); balances in bytes."""

    id: str
    client_id: str
    sim_id: str
    product_id: str
    name: str
    created: float
    activation: float | None
    expiry: float | None
    status: str
    initial_balance: int
    current_balance: int
    duration_seconds: float
    threshold_notified: bool = False

    def refresh(self, now: float) -> None:
        """Apply the time-driven transitions ([INFERRED] docs/connect-api.md §9.2): ``PENDING -> ACTIVE`` at the
        activation date, ``ACTIVE -> EXPIRED`` at the expiry date.

        :param now: the emulator's now.
        """
        if self.status == "PENDING" and self.activation is not None and self.activation <= now:
            self.status = "ACTIVE"
        if self.status == "ACTIVE" and self.expiry is not None and self.expiry <= now:
            self.status = "EXPIRED"


@dataclass(slots=True)
class Order:
    """An order; its status is derived from the clock until it settles."""

    id: str
    client_id: str
    operation_type: str
    sim_type: str
    created: float
    fulfilling_at: float
    complete_at: float
    request: dict[str, Any]
    correlation_id: str | None
    fail_reason: str | None
    settled_status: str | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def status_at(self, now: float) -> str:
        """:param now: the emulator's now. :return: the status ([DOC ORDLC] states)."""
        if self.settled_status is not None:
            return self.settled_status
        return "FULFILLING" if now >= self.fulfilling_at else "ACCEPTED"


@dataclass(slots=True)
class TokenRecord:
    """An issued access or refresh token."""

    kind: Literal["access", "refresh"]
    client_id: str
    expires_at: float
    revoked: bool = False
    used: bool = False


def b64id(rng: random.Random) -> str:
    """:param rng: the id source. :return: a product/subscription id: [DOC] base64url of 32 bytes (43 characters
    plus one ``=``)."""
    return base64.urlsafe_b64encode(rng.randbytes(32)).decode("ascii")


def matching_id(rng: random.Random) -> str:
    """:param rng: the id source. :return: an activation matching id shaped like [DOC] ``6C-DA326D-K86D``."""
    pick = rng.choices
    return "-".join("".join(pick(_MATCHING_ALPHABET, k=n)) for n in (2, 6, 4))


def jwt_like(claims_hint: str) -> str:
    """:param claims_hint: the header's ``typ``.
    :return: a random, unique token shaped like a JWT (three base64url segments); its content means nothing
        ([INFERRED])."""
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "RS256", "typ": claims_hint, "kid": "truconnect-emulator"}).encode()
    )
    return ".".join(
        part.decode("ascii").rstrip("=")
        for part in (
            header,
            base64.urlsafe_b64encode(secrets.token_bytes(96)),
            base64.urlsafe_b64encode(secrets.token_bytes(64)),
        )
    )
