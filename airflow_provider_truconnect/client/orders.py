"""Order body validation, before anything is sent [DOC docs/connect-api.md §7.1].

Catching a missing field locally costs nothing; letting the API reject it costs a round trip and, for a body that
the API would half-accept, a wrong order. Only what the recipes document as required is checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_truconnect.client.bodies import find_unserialisable
from airflow_provider_truconnect.client.errors import TruConnectConfigError

OPERATION_TYPES = ("ACTIVATION", "TOPUP")
SIM_TYPES = ("ESIM", "PSIM")


def _get(body: Mapping[str, Any], path: str) -> Any:
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _require_str(body: Mapping[str, Any], path: str) -> None:
    value = _get(body, path)
    if value is None or value == "":
        raise TruConnectConfigError(f"order.{path}", "is required")
    if not isinstance(value, str):
        raise TruConnectConfigError(f"order.{path}", f"must be a string, got {type(value).__name__}")


def _is_alpha2(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha()


def validate_order(order: Any) -> dict[str, Any]:
    """Check an order body and return it as a plain dict.

    :param order: the order body.
    :return: the same body.
    :raises TruConnectConfigError: naming the first missing or mistyped field.
    """
    if not isinstance(order, Mapping):
        raise TruConnectConfigError("order", f"must be a JSON object, got {type(order).__name__}")
    op = order.get("operation_type")
    if op not in OPERATION_TYPES:
        raise TruConnectConfigError("order.operation_type", f"must be one of {', '.join(OPERATION_TYPES)}, got {op!r}")
    sim_type = order.get("sim_type")
    if sim_type not in SIM_TYPES:
        raise TruConnectConfigError("order.sim_type", f"must be one of {', '.join(SIM_TYPES)}, got {sim_type!r}")
    if not isinstance(order.get("product"), Mapping):
        raise TruConnectConfigError("order.product", "is required (an object with an id)")
    _require_str(order, "product.id")
    if not isinstance(order.get("subscriber"), Mapping):
        raise TruConnectConfigError("order.subscriber", "is required")
    if op == "ACTIVATION" and sim_type == "ESIM":
        for path in (
            "subscriber.email",
            "subscriber.first_name",
            "subscriber.last_name",
            "subscriber.country_of_residence",
        ):
            _require_str(order, path)
        if not isinstance(_get(order, "subscriber.device"), Mapping):
            raise TruConnectConfigError("order.subscriber.device", "is required for a new eSIM")
    else:
        _require_str(order, "subscriber.sim.iccid")
    if op == "TOPUP" and sim_type == "ESIM" and not isinstance(_get(order, "subscriber.device"), Mapping):
        raise TruConnectConfigError("order.subscriber.device", "is required for an eSIM top-up")
    country = order.get("country")
    # Every activation recipe sends it; the top-up recipes do not [docs/connect-api.md §7.1], so it is optional there.
    if (country is None or country == "") and op == "ACTIVATION":
        raise TruConnectConfigError("order.country", "is required: the ISO-3166 alpha-2 code of where it is placed")
    if country not in (None, "") and not _is_alpha2(country):
        raise TruConnectConfigError("order.country", "must be an ISO-3166 alpha-2 code such as 'GB'")
    if op == "TOPUP" and sim_type == "PSIM":
        for path in ("product.sold_price", "product.sold_currency", "product.activation_date"):
            if _get(order, path) in (None, ""):
                raise TruConnectConfigError(f"order.{path}", "is required for a physical SIM top-up")
    price, currency = _get(order, "product.sold_price"), _get(order, "product.sold_currency")
    if (price is None) != (currency is None):
        raise TruConnectConfigError("order.product.sold_price", "and sold_currency go together")
    body = dict(order)
    where, problem = find_unserialisable(body, "order")
    if where:
        raise TruConnectConfigError(where, problem)
    return body
