"""Remote states as enums, and small value normalisers shared by the hook, operators, sensors and triggers."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_truconnect.client.errors import TruConnectOrderFailedError


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


#: Fields of an order summary that are enough to install a paid eSIM: secrets, like the tokens.
ACTIVATION_CODE_FIELDS = ("lpa", "matching_id", "voucher_code", "qr_code_url")


def order_summary(order: Mapping[str, Any], *, include_activation_codes: bool = False) -> dict[str, Any]:
    """The small, JSON-safe part of an order that operators return and triggers send in events.

    :param order: an order resource from ``GET /v2/orders/{id}``.
    :param include_activation_codes: also return the activation codes (LPA string, matching id, voucher code, QR code
        URL), which are secrets: only where the user asked for them, never in a trigger event.
    :return: id, status, ICCID and subscription id where present, plus the activation codes when asked for.
    """
    raw_output = order.get("output")
    output: Mapping[str, Any] = raw_output if isinstance(raw_output, Mapping) else {}
    summary: dict[str, Any] = {
        "order_id": order.get("id"),
        "status": OrderStatus.parse(order.get("status")).value,
        "iccid": output.get("iccid"),
        "subscription_id": output.get("subscription_id"),
    }
    if include_activation_codes:
        summary.update(_activation_fields(order, output))
    return {k: v for k, v in summary.items() if v is not None}


def _activation_fields(resource: Mapping[str, Any], output: Mapping[str, Any]) -> dict[str, Any]:
    links = links_of(resource)
    raw_data = output.get("data")
    data: Mapping[str, Any] = raw_data if isinstance(raw_data, Mapping) else {}
    matching_id = output.get("matching_id", resource.get("matching_id"))
    lpa = normalise_lpa(links.get("_lpa"))
    if lpa is None and isinstance(matching_id, str) and matching_id:
        lpa = f"LPA:1$rsp.truphone.com${matching_id}"
    return {
        "matching_id": matching_id,
        "lpa": lpa,
        "qr_code_url": links.get("_qrcode"),
        "voucher_code": data.get("code"),
    }


def activation_codes(resource: Any) -> list[str]:
    """Every activation code in an order or SIM resource, or in an order summary (matching id, LPA string with and
    without its ``LPA:`` prefix, QR code URL, voucher code), to register with a secret masker.

    :param resource: a decoded order or SIM resource, or an order summary (anything else gives an empty list).
    """
    if not isinstance(resource, Mapping):
        return []
    raw_output = resource.get("output")
    output: Mapping[str, Any] = raw_output if isinstance(raw_output, Mapping) else {}
    codes = [v for v in _activation_fields(resource, output).values() if isinstance(v, str) and v]
    # An order summary (what the order operator returns with include_activation_codes=True) names them plainly.
    codes += [v for k in ACTIVATION_CODE_FIELDS if isinstance(v := resource.get(k), str) and v]
    raw_lpa = links_of(resource).get("_lpa")
    if isinstance(raw_lpa, str) and raw_lpa:
        codes.append(raw_lpa)
    codes += [code[len(LPA_PREFIX) :] for code in codes if code.upper().startswith(LPA_PREFIX)]
    return list(dict.fromkeys(codes))


#: Largest JSON encoding of a sensed value put into an event (events are stored in the metadata database).
MAX_EVENT_VALUE_BYTES = 1024
#: At most this many API error messages, each at most this long, travel in an event or an exception.
MAX_ERROR_MESSAGES = 5
MAX_ERROR_MESSAGE_CHARS = 300


def order_failure(order: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """The error type and messages of a ``FAILED`` order, bounded in size.

    The body of a failed order is undocumented [docs/connect-api.md §7.2]; the emulator puts ``error: {type, messages}``
    on it, and a ``failure_reason`` string is tolerated too.

    :param order: the order resource.
    :return: ``(error_type, messages)``; both may be empty.
    """
    error = order.get("error")
    error_type: str | None = None
    raw: list[Any] = []
    if isinstance(error, Mapping):
        error_type = str(error["type"]) if error.get("type") else None
        messages = error.get("messages")
        if isinstance(messages, list):
            raw = list(messages)
        elif isinstance(messages, str):
            raw = [messages]
    elif isinstance(error, str):
        raw = [error]
    reason = order.get("failure_reason")
    if isinstance(reason, str) and reason:
        raw.append(reason)
    return error_type, [str(m)[:MAX_ERROR_MESSAGE_CHARS] for m in raw[:MAX_ERROR_MESSAGES]]


def order_failed_message(order_id: str, error_type: str | None, messages: Sequence[str]) -> str:
    """The human-readable message of a failed order (used by the trigger, the operator and the sensor)."""
    detail = "; ".join(messages) if messages else "no reason given by the API"
    prefix = f"{error_type}: " if error_type else ""
    return f"Order {order_id} FAILED: {prefix}{detail}"


def order_failed_error(
    order_id: str,
    error_type: str | None,
    messages: Sequence[str],
    cls: type[TruConnectOrderFailedError] = TruConnectOrderFailedError,
) -> TruConnectOrderFailedError:
    """The exception for a failed order; its text carries the API's error type and messages."""
    return cls(f"Order {order_id} FAILED", order_id=order_id, error_type=error_type, messages=messages)


_MISSING = object()


def extract_field(body: Any, field_path: str) -> tuple[bool, Any]:
    """Follow a dotted path such as ``status`` or ``data.0.status`` into a decoded JSON body.

    Integer segments index lists (negative indexes count from the end); other segments are mapping keys.

    :param body: the decoded JSON body.
    :param field_path: the dotted path.
    :return: ``(found, value)``.
    """
    node: Any = body
    for part in field_path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                return False, None
        else:
            return False, None
        if node is _MISSING:
            return False, None
    return True, node


def bounded_value(value: Any) -> Any:
    """``value`` if its JSON encoding is small enough for an event, else ``None``."""
    try:
        encoded = json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value if len(encoded.encode()) <= MAX_EVENT_VALUE_BYTES else None
