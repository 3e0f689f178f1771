"""Configuration of the Connect API emulator.

Every knob that changes observable behaviour lives here, so a test can say which variant of the (partly
undocumented) real service it wants. Defaults follow the documented shapes ([DOC]); the alternatives exist because
the documentation is ambiguous or silent ([INFERRED]). See docs/connect-api.md §13.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_CLIENT_ID = "truconnect-demo"
DEFAULT_CLIENT_SECRET = "demo-secret-change-me"
OTHER_CLIENT_ID = "other-client"
OTHER_CLIENT_SECRET = "other-secret-change-me"

ErrorModel = Literal["classic", "rfc7807"]
LinksKey = Literal["_links", "links"]


def _default_clients() -> dict[str, str]:
    return {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET, OTHER_CLIENT_ID: OTHER_CLIENT_SECRET}


@dataclass
class EmulatorConfig:
    """Behaviour switches of the emulator.

    Times are seconds of the *emulator clock* (real time plus the offset moved by ``/__emulator/clock``).

    :param clients: client_id -> client_secret. Every client gets its own SIMs and subscriptions; the default client
        gets ``seed_subscriptions`` of them, the others a handful, so 403 ``ACCESS_DENIED`` can be tested.
    :param default_client: the client reported by ``RunningEmulator.client_id`` and the CLI connection JSON.
    :param access_token_lifetime: real lifetime of access tokens ([DOC] 300 s).
    :param refresh_token_lifetime: lifetime of refresh tokens ([DOC-v1] 1800 s).
    :param issue_refresh_tokens: issue a refresh token with ``client_credentials`` (modern Keycloak does not).
    :param refresh_token_single_use: rotate refresh tokens on use; a reused one gets ``invalid_grant``.
    :param reported_expires_in: if set, the ``expires_in`` sent to clients (a lie; the token still lives
        ``access_token_lifetime``).
    :param order_fulfilling_after: seconds after creation when an order turns ``FULFILLING``.
    :param order_complete_after: seconds after creation when an order turns ``COMPLETED`` or ``FAILED``.
    :param seed: seed of the deterministic data set and of fraction faults.
    :param seed_subscriptions: number of subscriptions seeded for the default client.
    :param rate_limit_per_minute: requests per (client, route template) per emulator minute; ``None`` disables.
    :param retry_after: send ``Retry-After`` on 429 ([INFERRED]; undocumented).
    :param strict_correlation_id: answer 400 ``INVALID_REQUEST_PARAMS`` when ``X-Correlation-ID`` is missing.
    :param error_model: ``"classic"`` (``type``/``messages``) or ``"rfc7807"`` (``title``/``status``/``errors``).
    :param order_created_status: HTTP status of a successful ``POST /v2/orders`` ([UNKNOWN] in the docs).
    :param creation_links_key: ``"_links"`` (documented shape of the creation response) or ``"links"``.
    :param balances_as_strings: render balances as JSON strings (as some doc examples do).
    :param daily_esim_cap: activation orders per client per UTC day before 406 ``UNACCEPTABLE``.
    :param monthly_esim_cap: activation orders per client per UTC month before 406 ``UNACCEPTABLE``.
    :param activate_delay: seconds between ``/activate`` and the subscription becoming ``ACTIVE`` ([INFERRED]).
    :param api_prefix: path prefix of the Connect API.
    :param default_page_size: ``page_size`` when the query has none ([INFERRED] from examples).
    :param max_page_size: emulator-specific cap; larger requests are clamped (the real maximum is unknown).
    :param clock: injected clock returning epoch seconds (thread mode only).
    """

    clients: dict[str, str] = field(default_factory=_default_clients, repr=False)
    default_client: str = DEFAULT_CLIENT_ID
    access_token_lifetime: int = 300
    refresh_token_lifetime: int = 1800
    issue_refresh_tokens: bool = True
    refresh_token_single_use: bool = True
    reported_expires_in: int | None = None
    order_fulfilling_after: float = 1.0
    order_complete_after: float = 3.0
    seed: int = 42
    seed_subscriptions: int = 200
    rate_limit_per_minute: int | None = 1000
    retry_after: bool = True
    strict_correlation_id: bool = False
    error_model: ErrorModel = "classic"
    order_created_status: int = 201
    creation_links_key: LinksKey = "_links"
    balances_as_strings: bool = False
    daily_esim_cap: int | None = None
    monthly_esim_cap: int | None = None
    activate_delay: float = 0.0
    api_prefix: str = "/connect-api"
    default_page_size: int = 10
    max_page_size: int = 1000
    clock: Callable[[], float] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def client_secret(self) -> str:
        """:return: the secret of the default client."""
        return self.clients[self.default_client]

    def validate(self) -> None:
        """Check field values.

        :raises ValueError: on an inconsistent or out-of-range value.
        """
        if self.default_client not in self.clients:
            raise ValueError(f"default_client {self.default_client!r} is not in clients")
        if self.error_model not in ("classic", "rfc7807"):
            raise ValueError("error_model must be 'classic' or 'rfc7807'")
        if self.creation_links_key not in ("_links", "links"):
            raise ValueError("creation_links_key must be '_links' or 'links'")
        if not self.api_prefix.startswith("/") or self.api_prefix.endswith("/") or self.api_prefix.startswith("/__"):
            raise ValueError("api_prefix must start with '/', not end with '/', and not start with '/__'")
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ValueError("need 1 <= default_page_size <= max_page_size")
        if self.order_fulfilling_after < 0 or self.order_complete_after < self.order_fulfilling_after:
            raise ValueError("need 0 <= order_fulfilling_after <= order_complete_after")
        if self.access_token_lifetime <= 0 or self.refresh_token_lifetime <= 0:
            raise ValueError("token lifetimes must be positive")
        if self.seed_subscriptions < 0:
            raise ValueError("seed_subscriptions must be >= 0")
        if not 200 <= self.order_created_status < 300:
            raise ValueError("order_created_status must be a 2xx status")

    def to_json_dict(self) -> dict[str, Any]:
        """:return: the JSON-serialisable fields (everything except ``clock``)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "clock"}
        data["clients"] = dict(self.clients)
        return data

    def with_updates(self, updates: Mapping[str, Any]) -> EmulatorConfig:
        """Return a validated copy with some fields replaced.

        :param updates: field name -> new value (``clock`` cannot be set this way from JSON callers).
        :return: the new configuration.
        :raises ValueError: on an unknown field or a bad value.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(updates) - names)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        converted = {name: _coerce(self, name, value) for name, value in updates.items()}
        return dataclasses.replace(self, **converted)

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> EmulatorConfig:
        """Build a configuration from :meth:`to_json_dict` output (or a subset of it).

        :param data: field name -> value.
        :return: the configuration.
        """
        return cls().with_updates(data)


_INT_OR_NONE = {"reported_expires_in", "rate_limit_per_minute", "daily_esim_cap", "monthly_esim_cap"}
_FLOATS = {"order_fulfilling_after", "order_complete_after", "activate_delay"}
_INTS = {
    "access_token_lifetime",
    "refresh_token_lifetime",
    "seed",
    "seed_subscriptions",
    "order_created_status",
    "default_page_size",
    "max_page_size",
}
_BOOLS = {
    "issue_refresh_tokens",
    "refresh_token_single_use",
    "retry_after",
    "strict_correlation_id",
    "balances_as_strings",
}


def _coerce(config: EmulatorConfig, name: str, value: Any) -> Any:
    """Type-check one JSON value, so a bad control-plane call fails loudly instead of breaking the server later."""
    if name in _INT_OR_NONE:
        if value is None:
            return None
        name_kind = "an integer or null"
    elif name in _INTS:
        name_kind = "an integer"
    elif name in _FLOATS:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{name} must be a number")
    elif name in _BOOLS:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be a boolean")
    elif name == "clients":
        if (
            not isinstance(value, Mapping)
            or not value
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            raise ValueError("clients must be a non-empty mapping of client_id to secret")
        return dict(value)
    elif name == "clock":
        if value is not None and not callable(value):
            raise ValueError("clock must be callable or None")
        return value
    else:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be {name_kind}")
    return value
