"""The errors the emulated services answer with, independent of HTTP: API errors in the classic or RFC 7807 model
(rendered by :mod:`~airflow_provider_truconnect.emulator.error_responses`) and OAuth token-endpoint errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem of an API error: a classic ``messages`` entry or an RFC 7807 ``errors`` item."""

    detail: str
    json_path: str | None = None
    code: str = "GENERIC_ERROR"


class ApiError(Exception):
    """An error answered by the Connect API routes in the configured error model."""

    def __init__(
        self,
        status: int,
        error_type: str,
        problems: Iterable[Problem | str],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """:param status: HTTP status.
        :param error_type: classic ``type`` (e.g. ``INVALID_REQUEST_PARAMS``).
        :param problems: problems or plain messages.
        :param headers: extra response headers.
        """
        self.status = status
        self.error_type = error_type
        self.problems = [p if isinstance(p, Problem) else Problem(p) for p in problems]
        self.headers = dict(headers or {})
        super().__init__(f"{status} {error_type}: {'; '.join(p.detail for p in self.problems)}")


class OAuthError(Exception):
    """A token-endpoint error in the OAuth ``error``/``error_description`` shape (docs/connect-api.md §1.4)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        """:param status: HTTP status.
        :param error: OAuth error code.
        :param description: ``error_description``.
        """
        self.status = status
        self.error = error
        self.description = description
        super().__init__(f"{status} {error}: {description}")


def not_found(what: str, ident: str) -> ApiError:
    """[INFERRED] 404 is undocumented; the ``NOT_FOUND`` type name is invented."""
    return ApiError(404, "NOT_FOUND", [f"{what} {ident} not found"])


def access_denied(what: str, ident: str) -> ApiError:
    """[DOC CONV] 403 ``ACCESS_DENIED`` for another client's resource."""
    return ApiError(403, "ACCESS_DENIED", [f"{what} {ident} belongs to another client"])


def invalid_params(problems: Iterable[Problem | str]) -> ApiError:
    """[DOC CONV] 400 ``INVALID_REQUEST_PARAMS``: parsed but semantically wrong."""
    return ApiError(400, "INVALID_REQUEST_PARAMS", problems)
