"""What the sync and async Connect API clients share: everything but I/O.

:class:`_ClientCore` holds URL building, header validation and correlation ids, the token manager, the retry policy,
response interpretation and the request log line; :class:`_Call` is one API call across its attempts. No Airflow,
requests or httpx imports here: :mod:`.client` adds requests, :mod:`.async_client` adds httpx.

**The rule for requests that are not safe to repeat** (``POST``, ``PATCH``; always ``POST /v2/orders``, however its
path is spelled) lives here, in :func:`outcome_unknown` and :meth:`_ClientCore.settle`: once such a request may have
reached the server, its outcome is unknown unless the answer is a readable success (a 2xx with a JSON body, or an
empty 2xx) or a definite rejection (a 4xx other than 429 with a JSON error body). Every other answer (any 1xx or 3xx,
any 5xx including codes no RFC defines, a 429, an unreadable body, a dropped connection, a read timeout) raises
:class:`~airflow_provider_truconnect.client.errors.TruConnectUncertainError`
(:class:`~airflow_provider_truconnect.client.errors.TruConnectOrderUncertainError` for orders) and the request is not
repeated. Only a request that provably never left (connection refused, DNS failure, certificate refused in the TLS
handshake, connect timeout, no token obtained) is retried; a 401 is not answered by re-sending it, and redirects are
never followed.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_truconnect import __version__
from airflow_provider_truconnect.client.auth import TokenManager
from airflow_provider_truconnect.client.bodies import json_body
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.errors import (
    TruConnectConfigError,
    TruConnectError,
    TruConnectOrderUncertainError,
    TruConnectUncertainError,
)
from airflow_provider_truconnect.client.orders import validate_order
from airflow_provider_truconnect.client.pagination import join_link
from airflow_provider_truconnect.client.paths import is_order_creation
from airflow_provider_truconnect.client.responses import decode_json, error_for_response, success_body
from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.client.tokens import GrantRequest, Token, parse_token_response, token_endpoint_error

log = logging.getLogger("airflow_provider_truconnect.client")

USER_AGENT = f"airflow-provider-truconnect/{__version__}"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Progress is logged every this many pages while paginating.
PAGE_LOG_EVERY = 10
#: An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A header value both transports can send: printable ASCII and tabs, no CR/LF or other control characters.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def outcome_unknown(exc: TruConnectError) -> bool:
    """Whether a failed request may have been acted upon: the one rule for requests that are not safe to repeat.

    Known only when the request provably never left (``exc.sent`` is false) or the API refused it in a readable way
    (``exc.definite_rejection``); unknown for everything else.

    :param exc: the failure.
    """
    return exc.sent and not exc.definite_rejection


def describe(method: str, url: str) -> str:
    """``METHOD /path`` of a request, for messages and logs (never the query string, which may carry an e-mail)."""
    return f"{method} {urlsplit(url).path}"


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
    #: ``POST /v2/orders``: the body was validated as an order, and an unknown outcome says how to check for it.
    places_order: bool = False
    #: The correlation id of every attempt, when the caller fixed it (e.g. recorded before an order is sent).
    correlation_id: str | None = None
    correlation_ids: list[str] = field(default_factory=list)
    #: An earlier attempt failed in a way that may have acted (a 5xx, a timeout, a dropped connection).
    maybe_processed: bool = False

    @property
    def describe(self) -> str:
        return describe(self.method, self.url)

    def note_failure(self, exc: TruConnectError) -> None:
        if outcome_unknown(exc):
            self.maybe_processed = True


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
                check_header(name, value)
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
        correlation_id: str | None = None,
    ) -> _Call:
        """Validate one call's arguments and build it; nothing is sent.

        ``POST /v2/orders`` (however the path is spelled) gets its body validated as an order and is never idempotent,
        whatever the caller says.

        :raises TruConnectConfigError: on an invalid method, endpoint, header, correlation id or body.
        """
        if not isinstance(method, str) or not _HEADER_NAME.fullmatch(method):
            raise TruConnectConfigError("method", f"must be an HTTP method such as 'GET', got {method!r:.40}")
        if headers is not None and not isinstance(headers, Mapping):
            raise TruConnectConfigError("headers", f"must be a mapping, got {type(headers).__name__}")
        if correlation_id is not None:
            check_header("X-Correlation-ID", correlation_id)
            if not correlation_id.strip():
                raise TruConnectConfigError("correlation_id", "must not be empty")
        method = method.upper()
        url = self.url_for(endpoint)
        places_order = is_order_creation(method, url, self.config.api_base)
        if places_order:
            json = validate_order(json)
        return _Call(
            method=method,
            url=url,
            idempotent=False if places_order else (method in IDEMPOTENT_METHODS if idempotent is None else idempotent),
            params=params,
            body=None if json is None else json_body(json),
            extra_headers=headers,
            places_order=places_order,
            correlation_id=correlation_id,
        )

    def attempt_headers(self, call: _Call) -> dict[str, str]:
        """Headers of a new attempt, with a new correlation id recorded on the call."""
        cid = call.correlation_id or self.new_correlation_id()
        call.correlation_ids.append(cid)
        return self.base_headers(cid, call.extra_headers, call.body is not None)

    def token_request_headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "User-Agent": USER_AGENT, "X-Correlation-ID": self.new_correlation_id()}

    def settle(self, call: _Call, exc: TruConnectError) -> TruConnectError:
        """The error to raise once a call has failed for good: for a request that is not safe to repeat and whose
        outcome is unknown (:func:`outcome_unknown`), a :class:`TruConnectUncertainError` saying so."""
        if call.idempotent or not outcome_unknown(exc):
            return exc
        cid = call.correlation_ids[-1] if call.correlation_ids else None
        path = urlsplit(call.url).path
        kwargs: dict[str, Any] = {
            "status_code": exc.status_code,
            "error_type": exc.error_type,
            "messages": exc.messages,
            "correlation_id": exc.correlation_id or cid,
            "retry_after": exc.retry_after,
        }
        if call.places_order:
            return TruConnectOrderUncertainError(
                f"POST {path} failed after the request was sent ({exc.message}); the order MAY have been created and "
                "was not sent again, to avoid placing it twice. Check before placing it again: for a top-up, "
                "GET /v2/subscriptions?iccid=<iccid>; for a new eSIM, ask 1GLOBAL support quoting the correlation id",
                **kwargs,
            )
        return TruConnectUncertainError(
            f"{call.method} {path} failed after the request was sent ({exc.message}); it MAY have been acted upon and "
            "was not sent again, because repeating it is not safe. Check its effect before sending it again",
            **kwargs,
        )

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
        if response.status == 404 and call.method == "DELETE" and call.maybe_processed:
            # The earlier attempt deleted it and only its answer was lost: the repeat finds nothing, which is success.
            log.info("%s: already gone after an earlier attempt failed in transit; treating as deleted", call.describe)
            return None
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


def check_header(name: Any, value: Any) -> None:
    """Validate one extra request header; the error names the header but never shows its value (it may be secret).

    :raises TruConnectConfigError: naming ``headers.<name>``.
    """
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise TruConnectConfigError(f"headers.{name!r}"[:80], "is not a valid header name (letters, digits, '-')")
    field_name = f"headers.{name}"
    if name.lower() == "authorization":
        raise TruConnectConfigError("headers.Authorization", "is set by the hook; do not pass it")
    if not isinstance(value, str):
        raise TruConnectConfigError(field_name, f"must be a string, got {type(value).__name__}")
    if not _HEADER_VALUE.fullmatch(value):
        raise TruConnectConfigError(
            field_name, "must be printable ASCII without line breaks (CR/LF) or other control characters"
        )
