"""The synchronous Connect API client, :class:`TruConnectClient`, on requests.

What it shares with :class:`~airflow_provider_truconnect.client.async_client.AsyncTruConnectClient` (httpx) lives in
:mod:`airflow_provider_truconnect.client.core`. No Airflow imports here, and requests is imported where it is used: the
operator and sensor modules import this one, and every DAG parse would otherwise pay for requests, urllib3 and charset
detection (about 40 ms) without sending a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.core import (
    PAGE_LOG_EVERY,
    RawResponse,
    _authorised,
    _ClientCore,
    describe,
)
from airflow_provider_truconnect.client.errors import (
    TruConnectConfigError,
    TruConnectConnectionError,
    TruConnectError,
    TruConnectPaginationError,
)
from airflow_provider_truconnect.client.pagination import join_link, next_link, page_items
from airflow_provider_truconnect.client.resources import ConnectV2Resources
from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.client.tls import TlsTrust, caused_by, tls_error
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.client.tokens import GrantRequest, Token

if TYPE_CHECKING:
    import requests

log = logging.getLogger("airflow_provider_truconnect.client")


def _requests_error(
    exc: requests.RequestException, what: str, correlation_id: str | None, trust: TlsTrust
) -> TruConnectError:
    """Map a requests exception; ``sent=False`` only when the request provably never reached the server."""
    import requests

    build_error = _request_building_error(exc, what)
    if build_error is not None:
        return build_error
    if isinstance(exc, requests.exceptions.SSLError):
        return tls_error(exc, what, trust, correlation_id)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return TruConnectConnectionError(f"{what}: connect timeout", sent=False, correlation_id=correlation_id)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return TruConnectConnectionError(f"{what}: read timeout", correlation_id=correlation_id)
    if isinstance(exc, requests.exceptions.ConnectionError) and _is_refused(exc):
        return TruConnectConnectionError(f"{what}: connection refused", sent=False, correlation_id=correlation_id)
    return TruConnectConnectionError(f"{what}: connection failed ({type(exc).__name__})", correlation_id=correlation_id)


def _request_building_error(exc: requests.RequestException, what: str) -> TruConnectConfigError | None:
    """A request that could not even be built (bad URL, header or body) is a local mistake: never sent, not retried."""
    import requests.exceptions as rex

    if isinstance(exc, rex.JSONDecodeError):  # a subclass of InvalidJSONError, but about a response
        return None
    if isinstance(exc, rex.InvalidHeader):
        field_name, problem = "headers", "a header name or value is invalid"
    elif isinstance(exc, rex.InvalidJSONError):
        field_name, problem = "json", "the body is not JSON-serialisable"
    elif isinstance(exc, rex.MissingSchema | rex.InvalidSchema | rex.InvalidURL | rex.URLRequired):
        field_name, problem = "url", "the URL cannot be requested"
    else:
        return None
    return TruConnectConfigError(field_name, f"{what}: {problem} ({type(exc).__name__})")


def _requests_exception() -> type[requests.RequestException]:
    import requests

    return requests.RequestException


def _is_refused(exc: BaseException) -> bool:
    """Connection refused, or the host name did not resolve: no byte of the request left."""
    import urllib3.exceptions

    return caused_by(exc, urllib3.exceptions.NewConnectionError, ConnectionRefusedError)


def _unchanged(request: Any) -> Any:
    """A session ``auth`` that leaves requests as they are: being set, it keeps requests from reading ~/.netrc."""
    return request


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
        # The environment still supplies proxies (HTTPS_PROXY, NO_PROXY), but never the TLS trust, which is passed on
        # every request (requests lets REQUESTS_CA_BUNDLE override a session-level setting), and never credentials:
        # a no-op session auth stops requests from reading ~/.netrc, whose entry for the API host would otherwise
        # replace the Authorization header.
        self._verify = config.trust.requests_verify
        self.session.verify = self._verify
        self.session.trust_env = True
        self.session.auth = _unchanged

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
                verify=self._verify,
            )
            content = resp.content
        except _requests_exception() as exc:
            self.log_response(method, url, type(exc).__name__, started, cid or "-")
            raise _requests_error(exc, describe(method, url), cid, self.config.trust) from None
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
        correlation_id: str | None = None,
    ) -> Any:
        """Call the API and return the decoded JSON body (``None`` for 204).

        :param method: HTTP method.
        :param endpoint: path relative to the API base, e.g. ``/v2/sims/8944...``, or a same-origin URL.
        :param params: query parameters.
        :param json: JSON body.
        :param headers: extra headers (``Authorization`` is set by the client).
        :param idempotent: whether repeating the request is safe; by default true for GET, PUT, DELETE, HEAD, and
            always false for ``POST /v2/orders``, whose body is also validated as an order before anything is sent.
        :param correlation_id: the ``X-Correlation-ID`` of every attempt (default: a new one per attempt); fix it to
            record, before sending, how the request can be traced.
        :return: the decoded body.
        :raises TruConnectUncertainError: a request that is not safe to repeat failed after it may have been acted
            upon (see :mod:`airflow_provider_truconnect.client.core`); it is not sent again.
        :raises TruConnectError: a typed error after the retry budget is spent or on a non-retryable failure.
        """
        call = self.prepare(method, endpoint, params, json, headers, idempotent, correlation_id)

        def attempt() -> Any:
            try:
                base, token = self.attempt_headers(call), self._token_for_request()
                resp = self._send(
                    call.method, call.url, headers=_authorised(base, token), params=params, data=call.body
                )
                if resp.status == 401:
                    # The token may have been revoked or expired early: the next request gets a new one.
                    self.tokens.invalidate(token)
                if resp.status == 401 and call.idempotent:
                    # One forced renewal and one repeat; a request that is not safe to repeat is never sent twice.
                    token = self._token_for_request()
                    resp = self._send(
                        call.method, call.url, headers=_authorised(base, token), params=params, data=call.body
                    )
                return self.finish(call, resp)
            except TruConnectError as exc:
                call.note_failure(exc)
                raise

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
        url = self.url_for(endpoint)
        # The first page's own address counts: a `_next` pointing back to it is a loop too.
        seen: set[str] = {_page_key(url, query)}
        pages = items = 0
        while True:
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
            key = _page_key(url, None)
            if key in seen:
                raise TruConnectPaginationError(
                    f"Pagination link repeated after {pages} pages; stopping to avoid a loop"
                )
            seen.add(key)
        log.info("Pagination of %s done: %d pages, %d items", endpoint, pages, items)


def _page_key(url: str, params: Mapping[str, Any] | None) -> str:
    """The effective address of a page (path and query, parameters in a stable order), to recognise a repeat."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if params:
        pairs += parse_qsl(urlencode(params, doseq=True), keep_blank_values=True)
    return f"{parts.path.rstrip('/')}?{urlencode(sorted(pairs))}"


def __getattr__(name: str) -> Any:
    # `from airflow_provider_truconnect.client.client import AsyncTruConnectClient` keeps working without making every
    # importer of the sync client pay for httpx.
    if name == "AsyncTruConnectClient":
        from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient

        return AsyncTruConnectClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
