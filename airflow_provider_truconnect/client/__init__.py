"""The Connect API client core: configuration, tokens, retries and HTTP, with no Airflow imports.

Names are imported from their submodules on first use (:pep:`562`), so that ``from
airflow_provider_truconnect.client.errors import ...`` (operators and sensors, at every DAG parse) loads neither
requests, httpx nor tenacity.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient
    from airflow_provider_truconnect.client.auth import TokenManager
    from airflow_provider_truconnect.client.client import TruConnectClient
    from airflow_provider_truconnect.client.config import ClientConfig
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
    from airflow_provider_truconnect.client.models import OrderStatus, SimStatus, SubscriptionStatus
    from airflow_provider_truconnect.client.retry import RetryPolicy
    from airflow_provider_truconnect.client.token_cache import DEFAULT_TOKEN_CACHE, TokenCache
    from airflow_provider_truconnect.client.tokens import Token

_ERRORS = "airflow_provider_truconnect.client.errors"
#: public name -> the submodule defining it.
_SOURCES = {
    "AsyncTruConnectClient": "airflow_provider_truconnect.client.async_client",
    "DEFAULT_TOKEN_CACHE": "airflow_provider_truconnect.client.token_cache",
    "Token": "airflow_provider_truconnect.client.tokens",
    "TokenCache": "airflow_provider_truconnect.client.token_cache",
    "TokenManager": "airflow_provider_truconnect.client.auth",
    "TruConnectClient": "airflow_provider_truconnect.client.client",
    "ClientConfig": "airflow_provider_truconnect.client.config",
    "TruConnectAuthError": _ERRORS,
    "TruConnectClientError": _ERRORS,
    "TruConnectConfigError": _ERRORS,
    "TruConnectConnectionError": _ERRORS,
    "TruConnectError": _ERRORS,
    "TruConnectNotFoundError": _ERRORS,
    "TruConnectOrderFailedError": _ERRORS,
    "TruConnectOrderUncertainError": _ERRORS,
    "TruConnectPaginationError": _ERRORS,
    "TruConnectRateLimitError": _ERRORS,
    "TruConnectResponseCheckError": _ERRORS,
    "TruConnectServerError": _ERRORS,
    "TruConnectTimeoutError": _ERRORS,
    "TruConnectXComTooLargeError": _ERRORS,
    "OrderStatus": "airflow_provider_truconnect.client.models",
    "SimStatus": "airflow_provider_truconnect.client.models",
    "SubscriptionStatus": "airflow_provider_truconnect.client.models",
    "RetryPolicy": "airflow_provider_truconnect.client.retry",
}


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SOURCES))


__all__ = [
    "DEFAULT_TOKEN_CACHE",
    "AsyncTruConnectClient",
    "ClientConfig",
    "OrderStatus",
    "RetryPolicy",
    "SimStatus",
    "SubscriptionStatus",
    "Token",
    "TokenCache",
    "TokenManager",
    "TruConnectAuthError",
    "TruConnectClient",
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
