"""Remote states as enums, and small value normalisers shared by the hook, operators, sensors and triggers."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class _TolerantStatus(enum.StrEnum):
    """A status enum that parses case-insensitively and maps unknown values to ``UNKNOWN``."""

    @classmethod
    def parse(cls, value: Any) -> _TolerantStatus:
        """Parse an API status string; unknown or missing values give ``UNKNOWN`` (treated as not terminal)."""
        if isinstance(value, str):
            key = value.strip().upper().replace(" ", "_")
            for member in cls:
                if member.name == key:
                    return member
        return cls["UNKNOWN"]


class OrderStatus(_TolerantStatus):
    """Order lifecycle [DOC ORDLC]: ``ACCEPTED`` → ``FULFILLING`` → ``COMPLETED`` | ``FAILED``."""

    ACCEPTED = "ACCEPTED"
    FULFILLING = "FULFILLING"
    # v1 once spelled it with one L [DOC-v1]; still running either way.
    FULFILING = "FULFILING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        """``COMPLETED`` and ``FAILED`` end the lifecycle; anything else, unknown values included, is running."""
        return self in (OrderStatus.COMPLETED, OrderStatus.FAILED)

    @property
    def is_success(self) -> bool:
        """Whether the order completed."""
        return self is OrderStatus.COMPLETED


class SubscriptionStatus(_TolerantStatus):
    """Subscription lifecycle [DOC SUBLC]."""

    PENDING = "PENDING"
    PENDING_USAGE = "PENDING_USAGE"
    ACTIVE = "ACTIVE"
    DEPLETED = "DEPLETED"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        """``DEPLETED`` and ``EXPIRED`` are final."""
        return self in (SubscriptionStatus.DEPLETED, SubscriptionStatus.EXPIRED)


class SimStatus(_TolerantStatus):
    """eSIM profile states, mixed case in the API [DOC ESIMLC]."""

    RELEASED = "Released"
    DOWNLOADED = "Downloaded"
    INSTALLED = "Installed"
    UNAVAILABLE = "Unavailable"
    UNKNOWN = "Unknown"

    @property
    def is_terminal(self) -> bool:
        """``Unavailable`` means deactivated: no top-ups, no further calls [DOC ESIMLC]."""
        return self is SimStatus.UNAVAILABLE


def to_bytes(value: Any) -> int | None:
    """Normalise a balance that may be a JSON number or a numeric string [DOC §4.4] to ``int`` bytes."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value.strip()))
        except ValueError:
            return None
    return None


def links_of(resource: Any) -> dict[str, Any]:
    """The ``_metadata`` links of a resource, reading both ``links`` and ``_links`` [DOC §4.1]."""
    if not isinstance(resource, Mapping):
        return {}
    meta = resource.get("_metadata")
    if not isinstance(meta, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key in ("_links", "links"):
        links = meta.get(key)
        if isinstance(links, Mapping):
            out.update(links)
    return out


LPA_PREFIX = "LPA:"


def normalise_lpa(value: Any) -> str | None:
    """Add the ``LPA:`` prefix the order resource omits and the SIM resource has [DOC §7.2]."""
    if not isinstance(value, str) or not value:
        return None
    return value if value.upper().startswith(LPA_PREFIX) else LPA_PREFIX + value


def order_summary(order: Mapping[str, Any]) -> dict[str, Any]:
    """The small, JSON-safe part of an order that operators return and triggers send in events.

    :param order: an order resource from ``GET /v2/orders/{id}``.
    :return: id, status, ICCID, matching id, subscription id, voucher code, LPA string and QR URL where present.
    """
    output = order.get("output") if isinstance(order.get("output"), Mapping) else {}
    assert isinstance(output, Mapping)
    links = links_of(order)
    data = output.get("data") if isinstance(output.get("data"), Mapping) else {}
    assert isinstance(data, Mapping)
    matching_id = output.get("matching_id")
    lpa = normalise_lpa(links.get("_lpa"))
    if lpa is None and isinstance(matching_id, str) and matching_id:
        lpa = f"LPA:1$rsp.truphone.com${matching_id}"
    summary: dict[str, Any] = {
        "order_id": order.get("id"),
        "status": OrderStatus.parse(order.get("status")).value,
        "iccid": output.get("iccid"),
        "matching_id": matching_id,
        "subscription_id": output.get("subscription_id"),
        "lpa": lpa if matching_id or links.get("_lpa") else None,
        "qr_code_url": links.get("_qrcode"),
        "voucher_code": data.get("code"),
    }
    return {k: v for k, v in summary.items() if v is not None}
