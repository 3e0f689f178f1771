"""The Connect API clients: :class:`TruConnectClient` (requests) and :class:`AsyncTruConnectClient` (httpx).

Both share everything but I/O through :class:`_ClientCore`: URL building, headers and correlation ids, the token
manager, the retry policy, response interpretation and the request log line. No Airflow imports here.
"""

from __future__ import annotations

import functools
import json as jsonlib
import logging
import os.path
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from airflow_provider_truconnect import __version__
from airflow_provider_truconnect.client.auth import (
    GrantRequest,
    Token,
    TokenCache,
    TokenManager,
    parse_token_response,
    token_endpoint_error,
)
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.errors import (
    TruConnectConfigError,
    TruConnectConnectionError,
    TruConnectError,
    TruConnectOrderUncertainError,
    TruConnectPaginationError,
)
from airflow_provider_truconnect.client.pagination import join_link, next_link, page_items
from airflow_provider_truconnect.client.resources import ORDERS, ConnectV2Resources
from airflow_provider_truconnect.client.responses import decode_json, error_for_response, success_body
from airflow_provider_truconnect.client.retry import RetryPolicy

if TYPE_CHECKING:
    import requests

# requests is imported where it is used: the operator and sensor modules import this one, and every DAG parse would
# otherwise pay for requests, urllib3 and charset detection (about 40 ms) without sending a request.

log = logging.getLogger("airflow_provider_truconnect.client")

USER_AGENT = f"airflow-provider-truconnect/{__version__}"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Progress is logged every this many pages while paginating.
PAGE_LOG_EVERY = 10


@dataclass(frozen=True)
class RawResponse:
    """What a transport hands back: status, headers and the body bytes."""

    status: int
    headers: Mapping[str, str]
    content: bytes


@dataclass
class _Call:
    """One API call across its attempts: what to send, and the correlation id of each attempt."""

    method: str
    url: str
    idempotent: bool
    params: Mapping[str, Any] | None
    body: bytes | None
    extra_headers: Mapping[str, str] | None
    correlation_ids: list[str] = field(default_factory=list)

    @property
    def describe(self) -> str:
        return f"{self.method} {urlsplit(self.url).path}"


def _authorised(headers: Mapping[str, str], token: Token) -> dict[str, str]:
    return {**headers, "Authorization": token.authorization}


class _ClientCore:
    def __init__(
        self,
        config: ClientConfig,
        *,
        token_cache: TokenCache | None,
        clock: Callable[[], float] | None,
        retry_policy: RetryPolicy | None,
        on_new_token: Callable[[str], None] | None,
        correlation_prefix: str | None,
    ) -> None:
        self.config = config
        self.clock = clock or time.time
        self.retry_policy = retry_policy or RetryPolicy(max_retries=config.max_retries)
        self.tokens = TokenManager(config, cache=token_cache, clock=self.clock, on_new_token=on_new_token)
        self.correlation_prefix = correlation_prefix
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_base={self.config.api_base!r}, client_id={self.config.client_id!r})"

    def url_for(self, endpoint: str) -> str:
        """Absolute URL of an endpoint given relative to the API base (``/v2/...``) or as a same-origin URL."""
        if not isinstance(endpoint, str) or not endpoint.strip():
            raise TruConnectConfigError("endpoint", "must be a non-empty string such as '/v2/subscriptions'")
        if "?" in endpoint and "://" not in endpoint:
            raise TruConnectConfigError("endpoint", "must not contain a query string; pass params instead")
        return join_link(self.config.api_base, endpoint)

    def new_correlation_id(self) -> str:
        cid = str(uuid.uuid4())
        return f"{self.correlation_prefix}-{cid}" if self.correlation_prefix else cid

    def base_headers(self, correlation_id: str, extra: Mapping[str, str] | None, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, "X-Correlation-ID": correlation_id}
        if has_body:
            headers["Content-Type"] = "application/json"
        if extra:
            for name, value in extra.items():
                if name.lower() == "authorization":
                    raise TruConnectConfigError("headers.Authorization", "is set by the hook; do not pass it")
                headers[name] = value
        return headers

    def prepare(
        self,
        method: str,
        endpoint: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        idempotent: bool | None,
    ) -> _Call:
        method = method.upper()
        return _Call(
            method=method,
            url=self.url_for(endpoint),
            idempotent=method in IDEMPOTENT_METHODS if idempotent is None else idempotent,
            params=params,
            body=None if json is None else jsonlib.dumps(json).encode(),
            extra_headers=headers,
        )

    def attempt_headers(self, call: _Call) -> dict[str, str]:
        """Headers of a new attempt, with a new correlation id recorded on the call."""
        cid = self.new_correlation_id()
        call.correlation_ids.append(cid)
        return self.base_headers(cid, call.extra_headers, call.body is not None)

    def token_request_headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "User-Agent": USER_AGENT, "X-Correlation-ID": self.new_correlation_id()}

    def settle(self, call: _Call, exc: TruConnectError) -> TruConnectError:
        """The error to raise once a call has failed for good."""
        if not call.idempotent and self.may_have_been_processed(exc):
            return self.uncertain(call.method, call.url, exc, call.correlation_ids[-1] if call.correlation_ids else "-")
        return exc

    def log_response(self, method: str, url: str, status: int | str, started: float, correlation_id: str) -> None:
        # Successful reads go to DEBUG: a 100,000-item pagination would otherwise write thousands of lines, and the
        # line costs more CPU than the rest of the call; writes and failures always show in the task log.
        quiet = method in ("GET", "HEAD") and isinstance(status, int) and status < 400
        level = logging.DEBUG if quiet else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s -> %s in %.1f ms (X-Correlation-ID %s)",
                method,
                urlsplit(url).path,
                status,
                (time.perf_counter() - started) * 1000,
                correlation_id,
            )

    def finish(self, call: _Call, response: RawResponse) -> Any:
        path, cid = urlsplit(call.url).path, call.correlation_ids[-1]
        if 200 <= response.status < 300:
            return success_body(response.status, response.content, method=call.method, path=path, correlation_id=cid)
        raise error_for_response(
            response.status, response.content, response.headers, method=call.method, path=path, correlation_id=cid
        )

    def token_from_response(
        self, grant: GrantRequest, response: RawResponse, previous: Token | None, sent_at: float, correlation_id: str
    ) -> Token:
        try:
            body = decode_json(response.content) if response.content else None
        except ValueError:
            body = None
        if response.status != 200:
            raise token_endpoint_error(response.status, body, correlation_id)
        try:
            token = parse_token_response(body, sent_at, previous)
        except TruConnectError as exc:
            exc.correlation_id = correlation_id
            exc.args = (exc._render(),)
            raise
        log.info("Obtained a new access token (%s grant)", grant.grant_type)
        return token

    @staticmethod
    def before_sending(exc: TruConnectError) -> TruConnectError:
        """Mark a failure to obtain the token for an API request: that request never left, so it may be repeated."""
        exc.sent = False
        return exc

    def uncertain(self, method: str, url: str, exc: TruConnectError, correlation_id: str) -> TruConnectError:
        """Wrap a failure of a non-idempotent order request that may have been processed."""
        path = urlsplit(url).path
        if method != "POST" or not path.endswith(ORDERS):
            return exc
        return TruConnectOrderUncertainError(
            f"POST {path} failed after the request was sent ({exc.message}); the order MAY have been created and was "
            "not retried, to avoid placing it twice. Check before placing it again: for a top-up, "
            "GET /v2/subscriptions?iccid=<iccid>; for a new eSIM, ask 1GLOBAL support quoting the correlation id",
            status_code=exc.status_code,
            error_type=exc.error_type,
            messages=exc.messages,
            correlation_id=correlation_id,
        )

    def may_have_been_processed(self, exc: TruConnectError) -> bool:
        return not self.retry_policy.should_retry(exc, idempotent=False) and exc.retryable

    def describe(self, method: str, url: str) -> str:
        return f"{method} {urlsplit(url).path}"


def _requests_error(exc: requests.RequestException, what: str, correlation_id: str | None) -> TruConnectError:
    """Map a requests exception; ``sent=False`` only when the request provably never reached the server."""
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return TruConnectConnectionError(
            f"{what}: TLS error ({type(exc).__name__})", correlation_id=correlation_id, retryable=False
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return TruConnectConnectionError(f"{what}: connect timeout", sent=False, correlation_id=correlation_id)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return TruConnectConnectionError(f"{what}: read timeout", correlation_id=correlation_id)
    if isinstance(exc, requests.exceptions.ConnectionError) and _is_refused(exc):
        return TruConnectConnectionError(f"{what}: connection refused", sent=False, correlation_id=correlation_id)
    return TruConnectConnectionError(f"{what}: connection failed ({type(exc).__name__})", correlation_id=correlation_id)


def _requests_exception() -> type[requests.RequestException]:
    import requests

    return requests.RequestException


def _is_refused(exc: BaseException) -> bool:
    import urllib3.exceptions

    seen: BaseException | None = exc
    depth = 0
    while seen is not None and depth < 8:
        if isinstance(seen, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
            return True
        if isinstance(seen, urllib3.exceptions.MaxRetryError) and seen.reason is not None:
            seen = seen.reason
        else:
            seen = (
                seen.__cause__
                or seen.__context__
                or (seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None)
            )
        depth += 1
    return False


class TruConnectClient(_ClientCore, ConnectV2Resources):
    """Synchronous Connect API client over one ``requests.Session`` (connection reuse).

    :param config: the validated configuration.
    :param session: a session to use (default: a new one, closed by :meth:`close`).
    :param token_cache: the token cache (default: the process-wide one).
    :param clock: the clock used for token expiry (injectable for tests).
    :param retry_policy: the retry policy (default: from ``config.max_retries``).
    :param on_new_token: called with each new token value, e.g. to register it with a secret masker.
    :param correlation_prefix: prefix for ``X-Correlation-ID`` values, e.g. the DAG and task ids.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: requests.Session | None = None,
        token_cache: TokenCache | None = None,
        clock: Callable[[], float] | None = None,
        retry_policy: RetryPolicy | None = None,
        on_new_token: Callable[[str], None] | None = None,
        correlation_prefix: str | None = None,
    ) -> None:
        super().__init__(
            config,
            token_cache=token_cache,
            clock=clock,
            retry_policy=retry_policy,
            on_new_token=on_new_token,
            correlation_prefix=correlation_prefix,
        )
        import requests
        import requests.adapters

        self._owns_session = session is None
        self.session = session or requests.Session()
        # Enough pooled connections for a thread pool sharing one hook.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.verify = config.verify_ssl
        self.session.trust_env = True

    def close(self) -> None:
        """Close the session's pooled connections."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> TruConnectClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Any = None,
        data: Any = None,
        auth: tuple[str, str] | None = None,
    ) -> RawResponse:
        cid = headers.get("X-Correlation-ID")
        started = time.perf_counter()
        self.requests_sent += 1
        try:
            resp = self.session.request(
                method,
                url,
                params=params,
                data=data,
                headers=dict(headers),
                auth=auth,
                timeout=(self.config.connect_timeout, self.config.timeout),
                allow_redirects=False,
            )
            content = resp.content
        except _requests_exception() as exc:
            self.log_response(method, url, type(exc).__name__, started, cid or "-")
            raise _requests_error(exc, self.describe(method, url), cid) from None
        self.log_response(method, url, resp.status_code, started, cid or "-")
        return RawResponse(resp.status_code, resp.headers, content)

    def _fetch_token(self, grant: GrantRequest, previous: Token | None) -> Token:
        def attempt() -> Token:
            sent_at, headers = self.clock(), self.token_request_headers()
            resp = self._send("POST", self.config.oauth_url, headers=headers, data=grant.form, auth=grant.basic_auth)
            return self.token_from_response(grant, resp, previous, sent_at, headers["X-Correlation-ID"])

        return self.retry_policy.call(attempt, idempotent=True, describe=f"token request ({grant.grant_type})")

    def token(self) -> Token:
        """Return a fresh access token, obtaining or renewing it if needed."""
        return self.tokens.get_token(self._fetch_token)

    def _token_for_request(self) -> Token:
        try:
            return self.token()
        except TruConnectError as exc:
            raise self.before_sending(exc) from None

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Call the API and return the decoded JSON body (``None`` for 204).

        :param method: HTTP method.
        :param endpoint: path relative to the API base, e.g. ``/v2/sims/8944...``, or a same-origin URL.
        :param params: query parameters.
        :param json: JSON body.
        :param headers: extra headers (``Authorization`` is set by the client).
        :param idempotent: whether repeating the request is safe; by default true for GET, PUT, DELETE, HEAD.
        :return: the decoded body.
        :raises TruConnectError: a typed error after the retry budget is spent or on a non-retryable failure.
        """
        call = self.prepare(method, endpoint, params, json, headers, idempotent)

        def attempt() -> Any:
            base, token = self.attempt_headers(call), self._token_for_request()
            resp = self._send(call.method, call.url, headers=_authorised(base, token), params=params, data=call.body)
            if resp.status == 401:
                # One forced renewal: the token may have been revoked or expired early.
                self.tokens.invalidate(token)
                token = self._token_for_request()
                resp = self._send(
                    call.method, call.url, headers=_authorised(base, token), params=params, data=call.body
                )
            return self.finish(call, resp)

        try:
            return self.retry_policy.call(attempt, idempotent=call.idempotent, describe=call.describe)
        except TruConnectError as exc:
            raise self.settle(call, exc) from None

    def paginate(
        self,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        page_size: int | None = None,
        max_pages: int | None = None,
    ) -> Iterator[Any]:
        """Iterate over the items of a list endpoint, following ``_next`` links until there are none.

        :param endpoint: the list endpoint, e.g. ``/v2/subscriptions``.
        :param params: query parameters of the first page.
        :param page_size: items per page.
        :param max_pages: stop after this many pages (default: no limit).
        :return: an iterator over items; pages are fetched lazily, so memory stays flat.
        :raises TruConnectPaginationError: when a ``_next`` link repeats (the API would loop forever).
        """
        query: dict[str, Any] = dict(params or {})
        if page_size is not None:
            if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
                raise TruConnectConfigError("page_size", "must be a positive integer")
            query["page_size"] = page_size
        url: str | None = self.url_for(endpoint)
        seen: set[str] = set()
        pages = items = 0
        while url is not None:
            body = self.request("GET", url, params=query or None)
            query = {}  # later pages: the link carries the query
            data = page_items(body)
            pages += 1
            items += len(data)
            if pages == 1 or pages % PAGE_LOG_EVERY == 0:
                log.info("Fetched page %d of %s (%d items so far)", pages, urlsplit(url).path, items)
            yield from data
            link = next_link(body)
            if not data or link is None or (max_pages is not None and pages >= max_pages):
                break
            url = join_link(self.config.api_base, link)
            if url in seen:
                raise TruConnectPaginationError(
                    f"Pagination link repeated after {pages} pages; stopping to avoid a loop"
                )
            seen.add(url)
        log.info("Pagination of %s done: %d pages, %d items", endpoint, pages, items)


@functools.lru_cache(maxsize=8)
def _shared_ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    """One SSL context per ``verify_ssl`` value for all async clients of the process.

    Building one loads the CA bundle (about 0.1 s of CPU) and would block the triggerer's event loop for every trigger
    that starts; a context can be shared by any number of clients.
    """
    if verify is False:
        return False
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context()


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
        self.http = http_client or httpx.AsyncClient(
            verify=_shared_ssl_context(config.verify_ssl),
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            follow_redirects=False,
        )
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
        what = self.describe(method, url)
        try:
            if isinstance(data, dict):
                resp = await self.http.request(method, url, params=params, data=data, headers=dict(headers), auth=auth)
            else:
                resp = await self.http.request(
                    method, url, params=params, content=data, headers=dict(headers), auth=auth
                )
        except httpx.ConnectTimeout:
            err: TruConnectError = TruConnectConnectionError(f"{what}: connect timeout", sent=False, correlation_id=cid)
        except httpx.ConnectError:
            err = TruConnectConnectionError(f"{what}: connection refused", sent=False, correlation_id=cid)
        except httpx.TimeoutException:
            err = TruConnectConnectionError(f"{what}: read timeout", correlation_id=cid)
        except httpx.HTTPError as exc:
            err = TruConnectConnectionError(f"{what}: connection failed ({type(exc).__name__})", correlation_id=cid)
        else:
            self.log_response(method, url, resp.status_code, started, cid)
            return RawResponse(resp.status_code, resp.headers, resp.content)
        self.log_response(method, url, "error", started, cid)
        raise err

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
    ) -> Any:
        """Async twin of :meth:`TruConnectClient.request`."""
        call = self.prepare(method, endpoint, params, json, headers, idempotent)

        async def attempt() -> Any:
            base, token = self.attempt_headers(call), await self._token_for_request()
            resp = await self._send(
                call.method, call.url, headers=_authorised(base, token), params=params, data=call.body
            )
            if resp.status == 401:
                self.tokens.invalidate(token)
                token = await self._token_for_request()
                resp = await self._send(
                    call.method, call.url, headers=_authorised(base, token), params=params, data=call.body
                )
            return self.finish(call, resp)

        try:
            return await self.retry_policy.acall(attempt, idempotent=call.idempotent, describe=call.describe)
        except TruConnectError as exc:
            raise self.settle(call, exc) from None

    async def get_order(self, order_id: str) -> dict[str, Any]:
        """Fetch an order (``GET /v2/orders/{id}``).

        :param order_id: the order id.
        :return: the order resource.
        """
        from airflow_provider_truconnect.client.resources import path_id

        result: dict[str, Any] = await self.request("GET", f"{ORDERS}/{path_id('order_id', order_id)}")
        return result
