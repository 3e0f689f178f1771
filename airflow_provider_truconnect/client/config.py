"""Client configuration: validated once, before any network call.

:class:`ClientConfig` is what the hook builds from an Airflow Connection (:meth:`ClientConfig.from_connection_fields`)
and what the client core consumes. Validation errors name the field that is wrong.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from airflow_provider_truconnect.client.errors import TruConnectConfigError
from airflow_provider_truconnect.client.tls import TlsTrust, parse_verify_ssl, resolve_trust

#: Production API base [DOC docs/connect-api.md §2].
DEFAULT_API_BASE = "https://services.truphone.com/connect-api"
#: Keycloak realm token path, at the host root rather than under the API prefix [DOC docs/connect-api.md §1.1].
TOKEN_PATH = "/auth/realms/tru-staff/protocol/openid-connect/token"
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 4
#: The connection form's limit on ``max_retries``; more would keep a failing task busy for minutes.
MAX_RETRIES_LIMIT = 10
#: Connection extras understood by the provider (the UI may also store them prefixed ``extra__truconnect__``).
KNOWN_EXTRAS = (
    "oauth_url",
    "scope",
    "client_auth",
    "timeout",
    "max_retries",
    "verify_ssl",
    "allow_insecure_http",
    "oauth_cache",
)
_EXTRA_PREFIX = "extra__truconnect__"

ClientAuth = Literal["client_secret_post", "client_secret_basic"]
#: Where tokens are cached: in each process (the default), or shared by the processes of one user on one host
#: (:mod:`airflow_provider_truconnect.client.host_cache`). The extra is not called ``token_cache``: Airflow masks the
#: values of extras whose names contain "token", and would then hide every "process" in the task logs.
OAuthCache = Literal["process", "host"]
OAUTH_CACHE_MODES: tuple[OAuthCache, ...] = ("process", "host")


def is_loopback_host(hostname: str | None) -> bool:
    """Tell whether a host name designates this machine (``localhost``, 127.0.0.0/8, ``::1``).

    :param hostname: the host part of a URL.
    :return: ``True`` for loopback hosts.
    """
    if not hostname:
        return False
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_url(field_name: str, value: str, *, allow_insecure_http: bool) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise TruConnectConfigError(field_name, f"must be an http(s) URL, got scheme {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise TruConnectConfigError(field_name, "has no host name")
    if parts.username or parts.password:
        raise TruConnectConfigError(field_name, "must not carry credentials; use the login and password fields")
    if parts.query or parts.fragment:
        raise TruConnectConfigError(field_name, "must not have a query string or fragment")
    try:
        parts.port  # noqa: B018 - evaluating it validates the port
    except ValueError as exc:
        raise TruConnectConfigError(field_name, "has an invalid port") from exc
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise TruConnectConfigError(
            field_name,
            "uses plain http to a non-loopback host; credentials and tokens would travel unencrypted "
            "(use https, or set the extra allow_insecure_http=true for a trusted test server)",
        )
    return value.rstrip("/")


def _as_bool(field_name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise TruConnectConfigError(field_name, f"must be a boolean (true or false), got {type(value).__name__}")


def _as_number(field_name: str, value: Any, *, integer: bool, minimum: float, maximum: float | None = None) -> float:
    if isinstance(value, bool):
        raise TruConnectConfigError(field_name, "must be a number, got a boolean")
    number: float
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            raise TruConnectConfigError(field_name, f"must be a number, got {value!r}") from None
    else:
        raise TruConnectConfigError(field_name, f"must be a number, got {type(value).__name__}")
    if integer and int(number) != number:
        raise TruConnectConfigError(field_name, "must be a whole number")
    if number != number or number < minimum:  # NaN or too small
        raise TruConnectConfigError(field_name, f"must be at least {minimum:g}")
    if maximum is not None and number > maximum:
        raise TruConnectConfigError(field_name, f"must be at most {maximum:g}")
    return number


def normalise_extra(extra: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Turn a connection's extra into a plain dict, accepting JSON text and ``extra__truconnect__`` prefixed keys.

    :param extra: the extra as a mapping, as JSON text, or ``None``.
    :return: the extras with plain key names; empty strings and ``None`` values dropped.
    :raises TruConnectConfigError: when the extra is not a JSON object.
    """
    if extra is None or extra == "":
        return {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            raise TruConnectConfigError("extra", "is not valid JSON") from None
    if not isinstance(extra, Mapping):
        raise TruConnectConfigError("extra", f"must be a JSON object, got {type(extra).__name__}")
    out: dict[str, Any] = {}
    for key, value in extra.items():
        name = key[len(_EXTRA_PREFIX) :] if key.startswith(_EXTRA_PREFIX) else key
        if value is None or value == "":
            continue
        # The plain key wins over a prefixed one written by an older UI.
        if name in out and not key.startswith(_EXTRA_PREFIX):
            out[name] = value
        else:
            out.setdefault(name, value)
    return out


@dataclass(frozen=True)
class ClientConfig:
    """Everything the client core needs to talk to the Connect API.

    :param client_id: OAuth2 client id (the connection's login).
    :param client_secret: OAuth2 client secret (the connection's password); never shown in ``repr``.
    :param api_base: API base URL, e.g. ``https://services.truphone.com/connect-api``.
    :param oauth_url: token endpoint URL.
    :param scope: optional OAuth2 scope.
    :param client_auth: ``client_secret_post`` (form body) or ``client_secret_basic`` (HTTP Basic).
    :param timeout: read timeout in seconds.
    :param connect_timeout: connect timeout in seconds.
    :param max_retries: retries after the first attempt for requests that are safe to repeat (0 to 10).
    :param verify_ssl: ``True`` (the certifi bundle), ``False`` (no verification), a CA bundle path, or ``None`` (not
        set: CA environment variables are honoured); see :mod:`airflow_provider_truconnect.client.tls`.
    :param allow_insecure_http: allow plain ``http://`` to a host that is not loopback.
    :param oauth_cache: ``process`` (tokens cached in each process) or ``host`` (shared by the processes of one user on
        this host through an encrypted file; see :mod:`airflow_provider_truconnect.client.host_cache`).
    """

    client_id: str
    client_secret: str = field(repr=False)
    api_base: str = DEFAULT_API_BASE
    oauth_url: str = ""
    scope: str | None = None
    client_auth: ClientAuth = "client_secret_post"
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    verify_ssl: bool | str | None = None
    allow_insecure_http: bool = False
    oauth_cache: OAuthCache = "process"
    #: The TLS trust both transports apply, resolved from ``verify_ssl`` (and the environment) when the config is built.
    trust: TlsTrust = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("client_id", "client_secret"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TruConnectConfigError(name, f"must be a string, got {type(value).__name__}")
        if not self.client_id.strip():
            raise TruConnectConfigError("login (client ID)", "is empty; set it to the client ID issued by 1GLOBAL")
        if not self.client_secret:
            raise TruConnectConfigError("password (client secret)", "is empty; set it to the client secret")
        api_base = _check_url("host (API base URL)", self.api_base, allow_insecure_http=self.allow_insecure_http)
        object.__setattr__(self, "api_base", api_base)
        oauth_url = self.oauth_url or default_oauth_url(api_base)
        oauth_url = _check_url("extra.oauth_url", oauth_url, allow_insecure_http=self.allow_insecure_http)
        object.__setattr__(self, "oauth_url", oauth_url)
        if self.client_auth not in ("client_secret_post", "client_secret_basic"):
            raise TruConnectConfigError(
                "extra.client_auth", f"must be client_secret_post or client_secret_basic, got {self.client_auth!r}"
            )
        if self.scope is not None and not isinstance(self.scope, str):
            raise TruConnectConfigError("extra.scope", "must be a string")
        _as_number("extra.timeout", self.timeout, integer=False, minimum=0.001)
        _as_number("extra.max_retries", self.max_retries, integer=True, minimum=0, maximum=MAX_RETRIES_LIMIT)
        if self.oauth_cache not in OAUTH_CACHE_MODES:
            raise TruConnectConfigError("extra.oauth_cache", f"must be process or host, got {self.oauth_cache!r:.40}")
        object.__setattr__(self, "trust", resolve_trust(parse_verify_ssl(self.verify_ssl)))

    @classmethod
    def from_connection_fields(
        cls,
        *,
        host: str | None,
        login: str | None,
        password: str | None,
        port: int | None = None,
        extra: Mapping[str, Any] | str | None = None,
    ) -> ClientConfig:
        """Build and validate the configuration from Airflow Connection fields.

        :param host: API base URL; a host without a scheme gets ``https://``; empty means production.
        :param login: client ID.
        :param password: client secret.
        :param port: optional port, used when the host has none.
        :param extra: the connection's extras (mapping or JSON text).
        :return: the validated configuration.
        :raises TruConnectConfigError: naming the first invalid field.
        """
        extras = normalise_extra(extra)
        api_base = (host or "").strip() or DEFAULT_API_BASE
        if "://" not in api_base:
            api_base = "https://" + api_base
        if port:
            parts = urlsplit(api_base)
            if parts.port is None and parts.hostname:
                api_base = parts._replace(netloc=f"{parts.netloc}:{int(port)}").geturl()
        oauth_url = extras.get("oauth_url", "")
        if not isinstance(oauth_url, str):
            raise TruConnectConfigError("extra.oauth_url", f"must be a string URL, got {type(oauth_url).__name__}")
        scope = extras.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise TruConnectConfigError("extra.scope", f"must be a string, got {type(scope).__name__}")
        client_auth = extras.get("client_auth", "client_secret_post")
        oauth_cache = extras.get("oauth_cache", "process")
        if isinstance(oauth_cache, str):
            oauth_cache = oauth_cache.strip().lower()
        allow_insecure = _as_bool("extra.allow_insecure_http", extras.get("allow_insecure_http", False))
        return cls(
            client_id=login if login is not None else "",
            client_secret=password if password is not None else "",
            api_base=api_base,
            oauth_url=oauth_url.strip(),
            scope=scope or None,
            client_auth=client_auth,
            timeout=_as_number("extra.timeout", extras.get("timeout", DEFAULT_TIMEOUT), integer=False, minimum=0.001),
            max_retries=int(
                _as_number(
                    "extra.max_retries",
                    extras.get("max_retries", DEFAULT_MAX_RETRIES),
                    integer=True,
                    minimum=0,
                    maximum=MAX_RETRIES_LIMIT,
                )
            ),
            verify_ssl=parse_verify_ssl(extras.get("verify_ssl")),
            allow_insecure_http=allow_insecure,
            oauth_cache=oauth_cache,
        )

    @property
    def cache_key(self) -> tuple[str, str, str, str]:
        """Key of this configuration's tokens in a token cache: token URL, client id, scope, secret digest.

        The digest keeps a token obtained with one secret from being served to a configuration with another.
        """
        import hashlib

        digest = hashlib.sha256(self.client_secret.encode()).hexdigest()[:16]
        return (self.oauth_url, self.client_id, self.scope or "", digest)


def default_oauth_url(api_base: str) -> str:
    """Derive the token endpoint from the API base: the ``tru-staff`` realm on the same host [DOC §1.1].

    :param api_base: the API base URL.
    :return: ``<scheme>://<host>/auth/realms/tru-staff/protocol/openid-connect/token``.
    """
    parts = urlsplit(api_base)
    return f"{parts.scheme}://{parts.netloc}{TOKEN_PATH}"
