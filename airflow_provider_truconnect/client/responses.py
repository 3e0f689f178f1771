"""Turning HTTP answers into values or typed errors, for the sync and async clients alike.

Both documented error models are understood [DOC docs/connect-api.md §5]: the classic ``{"type", "messages"}`` and
RFC 7807 ``{"title", "status", "detail", "errors", "correlation_id"}``; a body that is not JSON (a gateway page)
becomes an error carrying the status and a short, sanitised excerpt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_truconnect.client.errors import (
    MAX_BODY_EXCERPT,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    TruConnectAuthError,
    TruConnectClientError,
    TruConnectError,
    TruConnectNotFoundError,
    TruConnectRateLimitError,
    TruConnectServerError,
)
from airflow_provider_truconnect.client.retry import RETRYABLE_STATUSES, parse_retry_after

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def excerpt(content: bytes) -> str:
    """A short, single-line, tag-free excerpt of a body, for error messages."""
    text = content[: MAX_BODY_EXCERPT * 4].decode("utf-8", "replace")
    text = _SPACE.sub(" ", _TAG.sub(" ", text)).strip()
    return text[:MAX_BODY_EXCERPT]


def decode_json(content: bytes) -> Any:
    """Decode a JSON body; raise ``ValueError`` when it is not JSON."""
    return json.loads(content)


def bounded(value: Any, limit: int = MAX_MESSAGE_CHARS) -> str | None:
    """A scalar from an error body as bounded text; ``None`` for absent, empty or non-scalar values.

    :param value: a value decoded from JSON.
    :param limit: the longest text kept; longer text ends with an ellipsis.
    """
    if value is None or isinstance(value, Mapping | list):
        return None
    text = str(value).strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _messages_of(raw: Any) -> list[str]:
    """Messages from a ``messages`` / ``errors`` field of any shape: a string, a list, or an object."""
    if isinstance(raw, list):
        items: list[Any] = raw
    elif isinstance(raw, Mapping):
        # An RFC 7807 problem with a single error object, or a field -> message(s) map.
        items = (
            [raw] if "detail" in raw or "json_path" in raw else [{"json_path": k, "detail": v} for k, v in raw.items()]
        )
    else:
        items = [raw]
    out: list[str] = []
    for item in items[: MAX_MESSAGES * 2]:
        if isinstance(item, Mapping):
            where, code = bounded(item.get("json_path"), 100), bounded(item.get("code"), 100)
            detail = item.get("detail")
            if isinstance(detail, list):
                detail = "; ".join(str(d) for d in detail[:MAX_MESSAGES])
            text = bounded(f"{where + ': ' if where else ''}{bounded(detail) or ''}{f' ({code})' if code else ''}")
        else:
            text = bounded(item)
        if text:
            out.append(text)
    return out


def error_details(body: Any) -> tuple[str | None, list[str], str | None]:
    """Extract (error type, messages, server correlation id) from either documented error model.

    Tolerant of any shape: a field of an unexpected type is ignored or turned into bounded text, never an exception.
    At most ``MAX_MESSAGES`` messages of at most ``MAX_MESSAGE_CHARS`` characters each are kept.

    :param body: the decoded JSON error body.
    """
    if not isinstance(body, Mapping):
        return None, [], None
    if "type" in body or "messages" in body:
        return bounded(body.get("type"), 200), _messages_of(body.get("messages"))[:MAX_MESSAGES], None
    if "title" in body or "detail" in body or "errors" in body:
        messages = _messages_of(body.get("detail")) + _messages_of(body.get("errors"))
        return bounded(body.get("title"), 200), messages[:MAX_MESSAGES], bounded(body.get("correlation_id"), 200)
    if "error" in body:  # OAuth shape from a gateway
        desc = bounded(body.get("error_description"))
        return bounded(body.get("error"), 200), ([desc] if desc else []), None
    return None, [], None


def error_for_response(
    status: int,
    content: bytes,
    headers: Mapping[str, str],
    *,
    method: str,
    path: str,
    correlation_id: str,
) -> TruConnectError:
    """Build the typed error for a non-2xx answer.

    A 4xx other than 429 whose body is a JSON object is marked ``definite_rejection``: the only failure after which
    a request that is not safe to repeat is known not to have been acted upon.

    :param status: HTTP status.
    :param content: raw body.
    :param headers: response headers (case-insensitive mapping preferred).
    :param method: request method, for the message.
    :param path: request path without the query string, for the message.
    :param correlation_id: the ``X-Correlation-ID`` that was sent.
    """
    try:
        body = decode_json(content) if content else None
    except ValueError:
        body = None
    error_type, messages, server_cid = error_details(body)
    if body is None and content:
        messages = [excerpt(content)] if excerpt(content) else []
    where = f"{method} {path}"
    kwargs: dict[str, Any] = {
        "status_code": status,
        "error_type": error_type,
        "messages": messages,
        "correlation_id": server_cid or correlation_id,
        "retry_after": parse_retry_after(_header(headers, "Retry-After")),
    }
    if status < 200:
        # An interim answer can never be the final one; treat it like an answer cut short.
        return TruConnectServerError(f"{where} answered with interim status {status} and nothing after it", **kwargs)
    if 300 <= status < 400:
        location = urlsplit(_header(headers, "Location") or "").path
        target = f" to {location}" if location else ""
        return TruConnectServerError(
            f"{where} answered with a redirect{target}, which the client does not follow", retryable=False, **kwargs
        )
    if 400 <= status < 500:
        # A refusal the client can read: the API did not act on the request. Anything else may come from a proxy
        # or gateway after the API did act.
        kwargs["definite_rejection"] = status != 429 and isinstance(body, Mapping)
    if status in (401, 403):
        text = "not authorised" if status == 401 else "access denied"
        return TruConnectAuthError(f"{where} {text}", **kwargs)
    if status == 404:
        return TruConnectNotFoundError(f"{where} not found", **kwargs)
    if status == 429:
        return TruConnectRateLimitError(f"{where} rate limited", **kwargs)
    if status >= 500:
        return TruConnectServerError(f"{where} failed on the server", retryable=status in RETRYABLE_STATUSES, **kwargs)
    return TruConnectClientError(f"{where} rejected", **kwargs)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def success_body(status: int, content: bytes, *, method: str, path: str, correlation_id: str) -> Any:
    """Decode a 2xx body: ``None`` for 204 or an empty body, else JSON.

    :raises TruConnectServerError: (retryable) when the body is not JSON, e.g. a proxy's HTML page.
    """
    if status == 204 or not content.strip():
        return None
    try:
        return decode_json(content)
    except ValueError:
        raise TruConnectServerError(
            f"{method} {path} answered HTTP {status} with a body that is not JSON",
            status_code=status,
            messages=[excerpt(content)],
            correlation_id=correlation_id,
            retryable=True,
        ) from None


def expect_object(value: Any, what: str) -> dict[str, Any]:
    """A decoded 2xx body that must be a JSON object (a resource), e.g. an order.

    :param value: the decoded body (``None`` for an empty one).
    :param what: the request, e.g. ``GET /v2/orders/o-1``, for the error.
    :raises TruConnectServerError: (retryable) when it is not an object: an empty answer or another JSON type.
    """
    if isinstance(value, Mapping):
        return dict(value)
    kind = "no body" if value is None else f"a JSON {type(value).__name__}"
    raise TruConnectServerError(f"{what} answered with {kind} where a resource was expected", retryable=True)
