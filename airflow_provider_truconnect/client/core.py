"""What the sync and async Connect API clients share: everything but I/O.

:class:`_ClientCore` holds URL building, header validation and correlation ids, the token manager, the retry policy,
response interpretation and the request log line; :class:`_Call` is one API call across its attempts. No Airflow,
requests or httpx imports here: :mod:`.client` adds requests, :mod:`.async_client` adds httpx.
"""

from __future__ import annotations

import json as jsonlib
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
    TruConnectError,
    TruConnectOrderUncertainError,
)
from airflow_provider_truconnect.client.pagination import join_link
from airflow_provider_truconnect.client.resources import ORDERS
from airflow_provider_truconnect.client.responses import decode_json, error_for_response, success_body
from airflow_provider_truconnect.client.retry import RetryPolicy

log = logging.getLogger("airflow_provider_truconnect.client")

USER_AGENT = f"airflow-provider-truconnect/{__version__}"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Progress is logged every this many pages while paginating.
PAGE_LOG_EVERY = 10
#: An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A header value both transports can send: printable ASCII and tabs, no CR/LF or other control characters.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def describe(method: str, url: str) -> str:
    """``METHOD /path`` of a request, for messages and logs (never the query string, which may carry an e-mail)."""
    return f"{method} {urlsplit(url).path}"


def json_body(value: Any, field_name: str = "json") -> bytes:
    """Serialise a request body, rejecting what JSON cannot carry before anything is sent.

    :param value: the body.
    :param field_name: the argument's name, for the error.
    :raises TruConnectConfigError: naming the first value that is not JSON-serialisable (or a NaN/infinity).
    """
    try:
        return jsonlib.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError):
        where, problem = find_unserialisable(value, field_name)
        raise TruConnectConfigError(where or field_name, problem or "is not JSON-serialisable") from None


def find_unserialisable(value: Any, path: str, depth: int = 0) -> tuple[str, str]:
    """The path of the first value JSON cannot carry inside ``value``, and what is wrong with it.

    :param value: the value to search.
    :param path: the name of ``value``, e.g. ``json`` or ``order``; nested fields are appended with dots.
    """
    if depth > 100:
        return path, "is nested too deeply (or contains itself)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path}.{key!r}", f"has a key of type {type(key).__name__}; JSON keys must be strings"
            found = find_unserialisable(item, f"{path}.{key}", depth + 1)
            if found[0]:
                return found
        return "", ""
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_unserialisable(item, f"{path}[{index}]", depth + 1)
            if found[0]:
                return found
        return "", ""
    if isinstance(value, float) and not math.isfinite(value):
        return path, f"is {value!r}, which JSON cannot carry"
    if value is None or isinstance(value, str | int | float | bool):
        return "", ""
    return path, f"is not JSON-serialisable ({type(value).__name__}); convert it to a string or number first"


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
    #: An earlier attempt failed after reaching the API (a 5xx, a timeout, a dropped connection): it may have acted.
    maybe_processed: bool = False

    @property
    def describe(self) -> str:
        return describe(self.method, self.url)

    def note_failure(self, exc: TruConnectError) -> None:
        if exc.sent and exc.retryable:
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
    ) -> _Call:
        """Validate one call's arguments and build it; nothing is sent.

        :raises TruConnectConfigError: on an invalid method, endpoint, header or body.
        """
        if not isinstance(method, str) or not _HEADER_NAME.fullmatch(method):
            raise TruConnectConfigError("method", f"must be an HTTP method such as 'GET', got {method!r:.40}")
        if headers is not None and not isinstance(headers, Mapping):
            raise TruConnectConfigError("headers", f"must be a mapping, got {type(headers).__name__}")
        method = method.upper()
        return _Call(
            method=method,
            url=self.url_for(endpoint),
            idempotent=method in IDEMPOTENT_METHODS if idempotent is None else idempotent,
            params=params,
            body=None if json is None else json_body(json),
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
