"""OAuth2 tokens: the token model, token-endpoint requests and answers [DOC docs/connect-api.md §1.3-1.4].

Connect API access tokens live 5 minutes and, when a refresh token is issued, it lives 30. A :class:`Token` carries
absolute expiry times; :func:`renew_skew` says how early it is renewed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.errors import TruConnectAuthError, TruConnectServerError

log = logging.getLogger(__name__)

#: Renew this many seconds before expiry, so that a token never expires between the check and the API's own check
#: (clock drift, a slow request, a retry wait). Bounded to a fraction of very short lifetimes by :func:`renew_skew`.
REFRESH_SKEW_SECONDS = 30.0
#: Lifetime assumed when the token response has no usable ``expires_in``: short, so that a token is never used long
#: past a real lifetime we do not know.
DEFAULT_EXPIRES_IN = 60.0

CacheKey = tuple[str, str, str, str]
Clock = Callable[[], float]


def renew_skew(lifetime: float) -> float:
    """Seconds before expiry at which a token with the given lifetime is renewed.

    :param lifetime: the token's lifetime in seconds.
    :return: ``REFRESH_SKEW_SECONDS``, but at most a fifth of the lifetime, so short-lived tokens are still used.
    """
    return min(REFRESH_SKEW_SECONDS, max(lifetime, 0.0) / 5)


@dataclass(frozen=True)
class Token:
    """An access token with absolute expiry times (seconds on the manager's clock).

    Token values are kept out of ``repr`` so that a token object can be logged or shown in a traceback.
    """

    access_token: str = field(repr=False)
    token_type: str
    obtained_at: float
    expires_at: float
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None
    scope: str | None = None

    @property
    def lifetime(self) -> float:
        """Seconds between obtaining the token and its expiry."""
        return self.expires_at - self.obtained_at

    def is_fresh(self, now: float) -> bool:
        """Whether the token can still be used without renewing it first.

        :param now: the current time on the manager's clock.
        """
        return now < self.expires_at - renew_skew(self.lifetime)

    def can_refresh(self, now: float) -> bool:
        """Whether the refresh token exists and is still valid for a little while.

        :param now: the current time on the manager's clock.
        """
        if not self.refresh_token or self.refresh_expires_at is None:
            return False
        return now < self.refresh_expires_at - renew_skew(self.refresh_expires_at - self.obtained_at)

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value."""
        return f"Bearer {self.access_token}"


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value > 0:
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if number > 0 else None
    return None


def parse_token_response(body: Any, now: float, previous: Token | None = None) -> Token:
    """Turn a Keycloak token response into a :class:`Token`.

    :param body: the decoded JSON body.
    :param now: the time the request was sent, on the manager's clock.
    :param previous: the token being refreshed; its refresh token is kept when the answer carries no new one.
    :return: the token.
    :raises TruConnectServerError: when the body has no usable ``access_token`` or is not a bearer token.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise TruConnectServerError("Token endpoint answered without an access_token", retryable=True)
    token_type = str(body.get("token_type") or "Bearer")
    if token_type.lower() != "bearer":
        raise TruConnectAuthError(f"Token endpoint issued an unsupported token type {token_type!r}; expected Bearer")
    expires_in = _seconds(body.get("expires_in")) or DEFAULT_EXPIRES_IN
    refresh_token = body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None
    refresh_expires_at: float | None = None
    if refresh_token:
        refresh_in = _seconds(body.get("refresh_expires_in"))
        # Keycloak sends refresh_expires_in=0 for offline tokens; without a lifetime, assume the documented 30 min.
        refresh_expires_at = now + (refresh_in or 1800.0)
    elif previous is not None and previous.refresh_token and previous.can_refresh(now):
        refresh_token, refresh_expires_at = previous.refresh_token, previous.refresh_expires_at
    return Token(
        access_token=body["access_token"],
        token_type="Bearer",
        obtained_at=now,
        expires_at=now + expires_in,
        refresh_token=refresh_token,
        refresh_expires_at=refresh_expires_at,
        scope=body.get("scope") if isinstance(body.get("scope"), str) else None,
    )


@dataclass(frozen=True)
class GrantRequest:
    """One token-endpoint request: the form, optional HTTP Basic credentials and the grant's name (for logs)."""

    grant_type: str
    form: dict[str, str] = field(repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)


def build_grant(config: ClientConfig, refresh_from: Token | None) -> GrantRequest:
    """Build the ``refresh_token`` grant when ``refresh_from`` is given, else the ``client_credentials`` grant.

    :param config: the client configuration (credentials, scope, client authentication style).
    :param refresh_from: the token whose refresh token should be used, or ``None``.
    :return: the request to send.
    """
    if refresh_from is not None and refresh_from.refresh_token:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_from.refresh_token}
    else:
        form = {"grant_type": "client_credentials"}
    if config.scope:
        form["scope"] = config.scope
    if config.client_auth == "client_secret_basic":
        return GrantRequest(form["grant_type"], form, (config.client_id, config.client_secret))
    form.update(client_id=config.client_id, client_secret=config.client_secret)
    return GrantRequest(form["grant_type"], form)


def token_endpoint_error(status: int, body: Any, correlation_id: str | None = None) -> Exception:
    """Map a failed token-endpoint answer to an exception [INFERRED from Keycloak, docs/connect-api.md §1.4].

    :param status: HTTP status.
    :param body: decoded JSON body, or ``None`` when it was not JSON.
    :param correlation_id: the request's correlation id.
    :return: a :class:`TruConnectAuthError` for 4xx, a retryable :class:`TruConnectServerError` for 5xx.
    """
    from airflow_provider_truconnect.client.responses import bounded

    error = bounded(body.get("error"), 200) if isinstance(body, Mapping) else None
    description = bounded(body.get("error_description"), 200) if isinstance(body, Mapping) else None
    if status >= 500 or status == 429:
        return TruConnectServerError(
            "Token endpoint failed", status_code=status, error_type=error, correlation_id=correlation_id
        )
    return TruConnectAuthError(
        "Token endpoint refused the credentials" if status == 401 else "Token request rejected",
        status_code=status,
        oauth_error=error,
        oauth_error_description=description,
        correlation_id=correlation_id,
    )


class TokenFetcher(Protocol):
    """Sends one grant request; returns the token or raises (auth errors, connection errors...)."""

    def __call__(self, grant: GrantRequest, previous: Token | None) -> Token: ...


class AsyncTokenFetcher(Protocol):
    """Async twin of :class:`TokenFetcher`."""

    def __call__(self, grant: GrantRequest, previous: Token | None) -> Awaitable[Token]: ...
