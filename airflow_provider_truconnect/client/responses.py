"""Turning HTTP answers into values or typed errors, for the sync and async clients alike.

Both documented error models are understood [DOC connect-api.md §5]: the classic ``{"type", "messages"}`` and RFC 7807
``{"title", "status", "detail", "errors", "correlation_id"}``; a body that is not JSON (a gateway page) becomes an
error carrying the status and a short, sanitised excerpt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_truconnect.client.errors import (
    MAX_BODY_EXCERPT,
    TruConnectAuthError,
    TruConnectClientError,
    TruConnectError,
    TruConnectNotFoundError,
    TruConnectRateLimitError,
    TruConnectServerError,
)
from airflow_provider_truconnect.client.retry import RETRYABLE_STATUSES, parse_retry_after

_MAX_MESSAGES = 10
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


def error_details(body: Any) -> tuple[str | None, list[str], str | None]:
    """Extract (error type, messages, server correlation id) from either documented error model.

    :param body: the decoded JSON error body.
    """
    if not isinstance(body, Mapping):
        return None, [], None
    messages: list[str] = []
    if "type" in body or "messages" in body:
        raw = body.get("messages")
        if isinstance(raw, list):
            messages = [str(m) for m in raw[:_MAX_MESSAGES]]
        elif isinstance(raw, str):
            messages = [raw]
        return (str(body["type"]) if body.get("type") else None), messages, None
    if "title" in body or "detail" in body or "errors" in body:
        if body.get("detail"):
            messages.append(str(body["detail"]))
        for item in (body.get("errors") or [])[:_MAX_MESSAGES]:
            if isinstance(item, Mapping):
                where = f"{item['json_path']}: " if item.get("json_path") else ""
                code = f" ({item['code']})" if item.get("code") else ""
                messages.append(f"{where}{item.get('detail', '')}{code}".strip())
        server_cid = body.get("correlation_id")
        return (str(body["title"]) if body.get("title") else None), messages, (str(server_cid) if server_cid else None)
    if "error" in body:  # OAuth shape from a gateway
        desc = body.get("error_description")
        return str(body["error"]), ([str(desc)] if desc else []), None
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
    }
    if status in (401, 403):
        text = "not authorised" if status == 401 else "access denied"
        return TruConnectAuthError(f"{where} {text}", **kwargs)
    if status == 404:
        return TruConnectNotFoundError(f"{where} not found", **kwargs)
    if status == 429:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        return TruConnectRateLimitError(f"{where} rate limited", retry_after=retry_after, **kwargs)
    if status >= 500:
        err = TruConnectServerError(f"{where} failed on the server", retryable=status in RETRYABLE_STATUSES, **kwargs)
        hint = parse_retry_after(_header(headers, "Retry-After"))
        if hint is not None:
            err.retry_after = hint  # type: ignore[attr-defined]
        return err
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
