"""The asynchronous Connect API client, :class:`AsyncTruConnectClient`, on httpx, for triggers.

Kept apart from the sync client so that importing operators, sensors or the hook (every DAG parse) never imports
httpx (about 150 ms); only the triggerer, which runs the triggers, pays for it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from airflow_provider_truconnect.client.async_pool import new_http_client, request_slot
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.core import RawResponse, _authorised, _ClientCore, describe
from airflow_provider_truconnect.client.errors import (
    TruConnectConfigError,
    TruConnectConnectionError,
    TruConnectError,
)
from airflow_provider_truconnect.client.paths import order_path
from airflow_provider_truconnect.client.responses import expect_object
from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.client.tls import TlsTrust, caused_by, tls_error
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.client.tokens import GrantRequest, Token


class AsyncTruConnectClient(_ClientCore):
    """Asynchronous Connect API client over one ``httpx.AsyncClient``, for triggers.

    Same parameters as :class:`TruConnectClient`, plus ``on_new_token_async``, awaited with each new token value
    (e.g. Airflow's ``amask_secret``, which does not block the event loop).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        http_client: httpx.AsyncClient | None = None,
        token_cache: TokenCache | None = None,
        clock: Callable[[], float] | None = None,
        retry_policy: RetryPolicy | None = None,
        on_new_token_async: Callable[[str], Awaitable[None]] | None = None,
        correlation_prefix: str | None = None,
    ) -> None:
        super().__init__(
            config,
            token_cache=token_cache,
            clock=clock,
            retry_policy=retry_policy,
            on_new_token=None,
            correlation_prefix=correlation_prefix,
        )
        self._owns_client = http_client is None
        self.http = http_client or new_http_client(config)
        self._on_new_token_async = on_new_token_async

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._owns_client:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncTruConnectClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Any = None,
        data: Any = None,
        auth: tuple[str, str] | None = None,
    ) -> RawResponse:
        cid = headers.get("X-Correlation-ID") or "-"
        started = time.perf_counter()
        self.requests_sent += 1
        try:
            async with request_slot(self.http):
                if isinstance(data, dict):
                    resp = await self.http.request(
                        method, url, params=params, data=data, headers=dict(headers), auth=auth
                    )
                else:
                    resp = await self.http.request(
                        method, url, params=params, content=data, headers=dict(headers), auth=auth
                    )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self.log_response(method, url, type(exc).__name__, started, cid)
            raise _httpx_error(exc, describe(method, url), cid, self.config.trust) from None
        self.log_response(method, url, resp.status_code, started, cid)
        return RawResponse(resp.status_code, resp.headers, resp.content)

    async def _fetch_token(self, grant: GrantRequest, previous: Token | None) -> Token:
        async def attempt() -> Token:
            sent_at, headers = self.clock(), self.token_request_headers()
            resp = await self._send(
                "POST", self.config.oauth_url, headers=headers, data=grant.form, auth=grant.basic_auth
            )
            return self.token_from_response(grant, resp, previous, sent_at, headers["X-Correlation-ID"])

        return await self.retry_policy.acall(attempt, idempotent=True, describe=f"token request ({grant.grant_type})")

    async def token(self) -> Token:
        """Return a fresh access token, obtaining or renewing it if needed (single flight per event loop)."""
        return await self.tokens.aget_token(self._fetch_token, self._mask)

    async def _mask(self, value: str) -> None:
        if self._on_new_token_async is not None:
            await self._on_new_token_async(value)

    async def _token_for_request(self) -> Token:
        try:
            return await self.token()
        except TruConnectError as exc:
            raise self.before_sending(exc) from None

    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        correlation_id: str | None = None,
    ) -> Any:
        """Async twin of :meth:`TruConnectClient.request`."""
        call = self.prepare(method, endpoint, params, json, headers, idempotent, correlation_id)

        async def attempt() -> Any:
            try:
                base, token = self.attempt_headers(call), await self._token_for_request()
                resp = await self._send(
                    call.method, call.url, headers=_authorised(base, token), params=params, data=call.body
                )
                if resp.status == 401:
                    self.tokens.invalidate(token)
                if resp.status == 401 and call.idempotent:
                    token = await self._token_for_request()
                    resp = await self._send(
                        call.method, call.url, headers=_authorised(base, token), params=params, data=call.body
                    )
                return self.finish(call, resp)
            except TruConnectError as exc:
                call.note_failure(exc)
                raise

        try:
            return await self.retry_policy.acall(attempt, idempotent=call.idempotent, describe=call.describe)
        except TruConnectError as exc:
            raise self.settle(call, exc) from None

    async def get_order(self, order_id: str) -> dict[str, Any]:
        """Fetch an order (``GET /v2/orders/{id}``).

        :param order_id: the order id.
        :return: the order resource.
        """
        path = order_path(order_id)
        return expect_object(await self.request("GET", path), f"GET {path}")


def _httpx_error(exc: Exception, what: str, correlation_id: str, trust: TlsTrust) -> TruConnectError:
    """Map an httpx exception like the sync client maps requests': local mistakes and TLS failures are not retried,
    ``sent=False`` only when the request provably never reached the server."""
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return TruConnectConfigError("url", f"{what}: the URL cannot be requested ({type(exc).__name__})")
    if isinstance(exc, httpx.LocalProtocolError):
        return TruConnectConfigError("headers", f"{what}: the request cannot be sent as built ({type(exc).__name__})")
    if caused_by(exc, ssl.SSLError):
        return tls_error(exc, what, trust, correlation_id)
    if isinstance(exc, httpx.ConnectTimeout):
        return TruConnectConnectionError(f"{what}: connect timeout", sent=False, correlation_id=correlation_id)
    if isinstance(exc, httpx.ConnectError):
        return TruConnectConnectionError(f"{what}: connection refused", sent=False, correlation_id=correlation_id)
    if isinstance(exc, httpx.TimeoutException):
        return TruConnectConnectionError(f"{what}: read timeout", correlation_id=correlation_id)
    return TruConnectConnectionError(f"{what}: connection failed ({type(exc).__name__})", correlation_id=correlation_id)
