"""Error answers: API errors in the configured model ([DOC CONV] classic ``type``/``messages`` or [DOC NEWERR]
RFC 7807, docs/connect-api.md §5) and token-endpoint errors in the OAuth shape (§1.4)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from starlette.responses import Response

from airflow_provider_truconnect.emulator.config import EmulatorConfig
from airflow_provider_truconnect.emulator.errors import ApiError, OAuthError
from airflow_provider_truconnect.emulator.render import json_bytes, json_response

_ERROR_TITLES = {
    "INVALID_HTTP_MESSAGE": "Invalid HTTP message",
    "INVALID_REQUEST_PARAMS": "Invalid request parameters",
    "UNAUTHORISED": "Unauthorised",
    "ACCESS_DENIED": "Access denied",
    "NOT_FOUND": "Not found",
    "METHOD_NOT_ALLOWED": "Method not allowed",
    "UNACCEPTABLE": "Unacceptable",
    "TOO MANY REQUESTS": "Too many requests",
    "INTERNAL_ERROR": "Internal error",
}
#: The classic error ``type`` an injected status answers with; any other status answers ``INTERNAL_ERROR``.
STATUS_TYPES = {
    400: "INVALID_REQUEST_PARAMS",
    401: "UNAUTHORISED",
    403: "ACCESS_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "UNACCEPTABLE",
    429: "TOO MANY REQUESTS",
}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def error_response(config: EmulatorConfig, exc: ApiError, correlation_id: str | None) -> Response:
    """Render an API error in the configured model.

    :param config: configuration (for the model switch).
    :param exc: the error.
    :param correlation_id: the request's correlation id (RFC 7807 ``correlation_id``; generated when absent).
    :return: the response.
    """
    if config.error_model == "rfc7807":
        title = _ERROR_TITLES.get(exc.error_type, exc.error_type.title())
        body = {
            "title": title,
            "status": exc.status,
            "detail": exc.problems[0].detail if len(exc.problems) == 1 else title,
            "errors": [
                {"code": p.code, "json_path": p.json_path, "detail": p.detail}
                if p.json_path
                else {"code": p.code, "detail": p.detail}
                for p in exc.problems
            ],
            "correlation_id": correlation_id or str(uuid.uuid4()),
        }
        return Response(json_bytes(body), exc.status, exc.headers, media_type="application/problem+json")
    return json_response(
        {"type": exc.error_type, "messages": [p.detail for p in exc.problems]}, exc.status, exc.headers
    )


def oauth_error_response(exc: OAuthError) -> Response:
    """:param exc: a token-endpoint error.
    :return: its Keycloak-shaped answer (``no-store``; a 401 challenges Basic)."""
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="tru-staff"'
    return json_response({"error": exc.error, "error_description": exc.description}, exc.status, headers)


def token_response(body: Mapping[str, object]) -> Response:
    """:param body: a token grant. :return: its answer (``no-store``, as Keycloak sends)."""
    return json_response(dict(body), 200, dict(_NO_STORE))


def injected_error(
    config: EmulatorConfig, status: int, is_token: bool, headers: dict[str, str], correlation_id: str | None
) -> Response:
    """The error body of an injected 4xx/5xx status.

    :param config: configuration (error model).
    :param status: the status.
    :param is_token: whether the token endpoint answers (OAuth shape) rather than the API.
    :param headers: extra headers (``Retry-After``).
    :param correlation_id: the request's correlation id.
    :return: the response.
    """
    if is_token:
        error = "invalid_client" if status == 401 else ("invalid_grant" if status == 400 else "temporarily_unavailable")
        return json_response({"error": error, "error_description": "Injected fault"}, status, headers)
    error_type = STATUS_TYPES.get(status, "INTERNAL_ERROR")
    return error_response(config, ApiError(status, error_type, ["Injected fault"], headers), correlation_id)
