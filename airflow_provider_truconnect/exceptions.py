"""Public home of the provider's exception tree (defined in the Airflow-free client core)."""

from __future__ import annotations

from airflow_provider_truconnect.client.errors import (
    TruConnectAuthError,
    TruConnectClientError,
    TruConnectConfigError,
    TruConnectConnectionError,
    TruConnectError,
    TruConnectNotFoundError,
    TruConnectOrderFailedError,
    TruConnectOrderUncertainError,
    TruConnectPaginationError,
    TruConnectRateLimitError,
    TruConnectResponseCheckError,
    TruConnectServerError,
    TruConnectTimeoutError,
    TruConnectXComTooLargeError,
)

__all__ = [
    "TruConnectAuthError",
    "TruConnectClientError",
    "TruConnectConfigError",
    "TruConnectConnectionError",
    "TruConnectError",
    "TruConnectNotFoundError",
    "TruConnectOrderFailedError",
    "TruConnectOrderUncertainError",
    "TruConnectPaginationError",
    "TruConnectRateLimitError",
    "TruConnectResponseCheckError",
    "TruConnectServerError",
    "TruConnectTimeoutError",
    "TruConnectXComTooLargeError",
]
