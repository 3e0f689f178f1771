"""The Connect API client core: configuration, tokens, retries and HTTP, with no Airflow imports."""

from __future__ import annotations

from airflow_provider_truconnect.client.auth import DEFAULT_TOKEN_CACHE, Token, TokenCache, TokenManager
from airflow_provider_truconnect.client.client import AsyncTruConnectClient, TruConnectClient
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
