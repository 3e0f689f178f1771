"""Checks of task arguments shared by the operators and sensors: each names the argument and says what is wrong.

Run when a DAG is parsed, for literal values, and again once templated values are rendered, always before any network
call. No Airflow imports, so it costs nothing at parse time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from airflow_provider_truconnect.client.errors import TruConnectConfigError
from airflow_provider_truconnect.client.paths import is_order_creation


def require(condition: bool, field: str, problem: str) -> None:
    """Raise :class:`TruConnectConfigError` naming ``field`` unless ``condition`` holds."""
    if not condition:
        raise TruConnectConfigError(field, problem)


def check_conn_id(conn_id: Any) -> None:
    """``truconnect_conn_id`` is a non-empty string."""
    require(isinstance(conn_id, str) and bool(conn_id.strip()), "truconnect_conn_id", "must be a non-empty string")


def check_bool(value: Any, field: str) -> None:
    """``field`` is exactly ``True`` or ``False``."""
    require(isinstance(value, bool), field, f"must be True or False, got {value!r}")


def check_seconds(value: Any, field: str) -> None:
    """``field`` is a positive, finite number of seconds."""
    require(
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0,
        field,
        "must be a positive, finite number of seconds",
    )


def check_endpoint(endpoint: Any) -> None:
    """``endpoint`` is a non-empty path without a query string."""
    require(isinstance(endpoint, str) and bool(endpoint.strip()), "endpoint", "must be a non-empty string")
    require("?" not in endpoint, "endpoint", "must not contain a query string; pass query={...} instead")


def check_not_order_creation(method: str, endpoint: str) -> None:
    """Refuse ``POST /v2/orders`` (however spelled) outside the order operator."""
    require(
        not is_order_creation(method, endpoint),
        "endpoint",
        "POST /v2/orders places an order; use TruConnectCreateOrderOperator, which validates the body and never "
        "places an order twice (retries reattach to the order already placed)",
    )


def check_optional_dict(value: Any, field: str) -> None:
    """``field`` is a dict or ``None``."""
    require(value is None or isinstance(value, Mapping), field, f"must be a dict or None, got {type(value).__name__}")


def is_templated(value: Any) -> bool:
    """Whether a string still holds a Jinja expression (it is checked once rendered)."""
    return isinstance(value, str) and "{{" in value
