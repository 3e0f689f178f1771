"""The Keycloak token server of the realm ``tru-staff`` ([DOC AUTH2] path; behaviour [INFERRED] from Keycloak,
docs/connect-api.md §1) and bearer-token checks of the API ([DOC CONV] 401 ``UNAUTHORISED``)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Literal

from airflow_provider_truconnect.emulator.errors import ApiError, OAuthError
from airflow_provider_truconnect.emulator.models import TokenRecord, jwt_like
from airflow_provider_truconnect.emulator.runtime import Runtime

_WWW_AUTH = {"WWW-Authenticate": 'Bearer realm="tru-staff", error="invalid_token"'}


class TokenServer:
    """Issued tokens and grant counters. Every public method holds the shared lock."""

    def __init__(self, runtime: Runtime) -> None:
        """:param runtime: the shared lock, configuration and clock."""
        self.runtime = runtime
        self.tokens: dict[str, TokenRecord] = {}
        self.issued_tokens: list[str] = []
        self.grants: dict[str, dict[str, int]] = {}
        self.grant_failures: dict[str, dict[str, int]] = {}

    def _issue(self, kind: Literal["access", "refresh"], client_id: str, lifetime: float) -> str:
        token = jwt_like("JWT" if kind == "access" else "Refresh")
        while token in self.tokens:  # pragma: no cover - 160 random bytes do not collide
            token = jwt_like("JWT")
        self.tokens[token] = TokenRecord(kind, client_id, self.runtime.now() + lifetime)
        self.issued_tokens.append(token)
        return token

    def _failed(self, grant_type: str, error: OAuthError) -> OAuthError:
        per = self.grant_failures.setdefault(grant_type or "(missing)", {})
        per[error.error] = per.get(error.error, 0) + 1
        return error

    def grant(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """Run the token endpoint.

        :param form: the parsed ``application/x-www-form-urlencoded`` body.
        :param basic: (client_id, secret) from HTTP Basic, if sent (``client_secret_basic``).
        :return: the Keycloak-shaped token response.
        :raises OAuthError: on any failure, shaped as docs/connect-api.md §1.4.
        """
        with self.runtime.lock:
            cfg = self.runtime.config
            grant_type = form.get("grant_type", "")
            # Keycloak checks the grant type before authenticating the client.
            if not grant_type:
                raise self._failed(grant_type, OAuthError(400, "invalid_request", "Missing form parameter: grant_type"))
            if grant_type not in ("client_credentials", "refresh_token"):
                raise self._failed(grant_type, OAuthError(400, "unsupported_grant_type", "Unsupported grant_type"))
            client_id, secret = (
                basic if basic is not None else (form.get("client_id", ""), form.get("client_secret", ""))
            )
            if (
                not client_id
                or cfg.clients.get(client_id) is None
                or not secrets.compare_digest(cfg.clients[client_id].encode(), secret.encode())
            ):
                raise self._failed(grant_type, OAuthError(401, "invalid_client", "Invalid client credentials"))
            issue_refresh = cfg.issue_refresh_tokens
            if grant_type == "refresh_token":
                self._use_refresh_token(form.get("refresh_token", ""), client_id)
                # A refresh grant always answers with a (rotated) refresh token, as Keycloak does.
                issue_refresh = True
            access = self._issue("access", client_id, cfg.access_token_lifetime)
            body: dict[str, Any] = {
                "access_token": access,
                "expires_in": cfg.access_token_lifetime if cfg.reported_expires_in is None else cfg.reported_expires_in,
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": "profile email",
            }
            if issue_refresh:
                if grant_type == "refresh_token" and not cfg.refresh_token_single_use:
                    body["refresh_token"] = form["refresh_token"]
                    left = self.tokens[form["refresh_token"]].expires_at - self.runtime.now()
                    body["refresh_expires_in"] = max(0, int(left))
                else:
                    body["refresh_token"] = self._issue("refresh", client_id, cfg.refresh_token_lifetime)
                    body["refresh_expires_in"] = cfg.refresh_token_lifetime
            per = self.grants.setdefault(client_id, {})
            per[grant_type] = per.get(grant_type, 0) + 1
            return body

    def _use_refresh_token(self, presented: str, client_id: str) -> None:
        grant_type = "refresh_token"
        record = self.tokens.get(presented)
        if record is None or record.kind != "refresh" or record.revoked:
            raise self._failed(grant_type, OAuthError(400, "invalid_grant", "Invalid refresh token"))
        if record.expires_at <= self.runtime.now():
            raise self._failed(grant_type, OAuthError(400, "invalid_grant", "Token is not active"))
        if record.client_id != client_id:
            raise self._failed(
                grant_type,
                OAuthError(
                    400, "invalid_grant", "Invalid refresh token. Token client and authorized client don't match"
                ),
            )
        if record.used and self.runtime.config.refresh_token_single_use:
            raise self._failed(
                grant_type, OAuthError(400, "invalid_grant", "Maximum allowed refresh token reuse exceeded")
            )
        record.used = True

    def authenticate(self, authorization: str | None) -> str:
        """Validate a bearer token ([DOC CONV] 401 ``UNAUTHORISED``).

        :param authorization: the ``Authorization`` header.
        :return: the client id owning the token.
        :raises ApiError: 401 when missing, malformed, unknown, expired or revoked.
        """
        if not authorization:
            raise ApiError(401, "UNAUTHORISED", ["Missing Authorization header"], _WWW_AUTH)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise ApiError(
                401, "UNAUTHORISED", ["Malformed Authorization header, expected 'Bearer <token>'"], _WWW_AUTH
            )
        with self.runtime.lock:
            record = self.tokens.get(token)
            if record is None or record.kind != "access":
                raise ApiError(401, "UNAUTHORISED", ["Invalid bearer token"], _WWW_AUTH)
            if record.revoked:
                raise ApiError(401, "UNAUTHORISED", ["Bearer token has been revoked"], _WWW_AUTH)
            if record.expires_at <= self.runtime.now():
                raise ApiError(401, "UNAUTHORISED", ["Bearer token has expired"], _WWW_AUTH)
            return record.client_id

    def revoke(self, token: str | None = None) -> int:
        """:param token: a token to revoke, or None for every token.
        :return: how many tokens were revoked."""
        with self.runtime.lock:
            if token is None:
                for record in self.tokens.values():
                    record.revoked = True
                return len(self.tokens)
            found = self.tokens.get(token)
            if found is None:
                return 0
            found.revoked = True
            return 1

    def grant_totals(self) -> tuple[dict[str, int], dict[str, int]]:
        """:return: successful grants per grant type, and failures per OAuth error, over every client."""
        totals: dict[str, int] = {}
        for per_client in self.grants.values():
            for grant, n in per_client.items():
                totals[grant] = totals.get(grant, 0) + n
        failures: dict[str, int] = {}
        for per_grant in self.grant_failures.values():
            for error, n in per_grant.items():
                failures[error] = failures.get(error, 0) + n
        return totals, failures
