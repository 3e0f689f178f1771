"""Airflow hook for the Truphone (1GLOBAL) Connect API.

The hook maps an Airflow Connection onto the Airflow-free client core (:mod:`airflow_provider_truconnect.client`) and
registers every token it obtains with Airflow's secret masker. It adds no HTTP logic of its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_provider_truconnect.client.client import TruConnectClient
from airflow_provider_truconnect.client.config import ClientConfig, normalise_extra
from airflow_provider_truconnect.client.errors import TruConnectError
from airflow_provider_truconnect.client.models import activation_codes
from airflow_provider_truconnect.client.paths import normalised_path
from airflow_provider_truconnect.client.resources import ConnectV2Resources
from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.get_provider_info import CONN_FIELDS, CONN_TYPE, HOOK_NAME, UI_FIELD_BEHAVIOUR

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

    from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient


class TruConnectHook(BaseHook, ConnectV2Resources):
    """Interact with the Connect API using OAuth2 client credentials from an Airflow Connection.

    Connection fields: *host* = API base URL (default production), *login* = client ID, *password* = client secret;
    extras ``oauth_url``, ``scope``, ``client_auth``, ``timeout``, ``max_retries``, ``verify_ssl``,
    ``allow_insecure_http``, ``oauth_cache`` (see :class:`~airflow_provider_truconnect.client.config.ClientConfig`).
    Tokens are cached per process and shared by every hook of the same credentials; with ``oauth_cache=host``, by
    every process of the same user on this host too (:mod:`airflow_provider_truconnect.client.host_cache`).

    :param truconnect_conn_id: the Airflow connection id.
    :param connection: use this Connection instead of looking one up (handy in tests).
    :param clock: clock for token expiry (injectable for tests).
    :param retry_policy: the retry policy (default: from the connection's ``max_retries``).
    :param token_cache: the token cache (default: the process-wide one).
    :param correlation_prefix: prefix for ``X-Correlation-ID`` values.
    """

    conn_name_attr = "truconnect_conn_id"
    default_conn_name = "truconnect_default"
    conn_type = CONN_TYPE
    hook_name = HOOK_NAME

    def __init__(
        self,
        truconnect_conn_id: str = default_conn_name,
        *,
        connection: Connection | None = None,
        clock: Callable[[], float] | None = None,
        retry_policy: RetryPolicy | None = None,
        token_cache: TokenCache | None = None,
        correlation_prefix: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(truconnect_conn_id, str) or not truconnect_conn_id:
            raise TruConnectError("truconnect_conn_id must be a non-empty string")
        self.truconnect_conn_id = truconnect_conn_id
        self._connection = connection
        self._clock = clock
        self._retry_policy = retry_policy
        self._token_cache = token_cache
        self._correlation_prefix = correlation_prefix

    def __repr__(self) -> str:
        return f"{type(self).__name__}(truconnect_conn_id={self.truconnect_conn_id!r})"

    @cached_property
    def connection(self) -> Connection:
        """The Airflow Connection, looked up once."""
        return self._connection or self.get_connection(self.truconnect_conn_id)

    @cached_property
    def client_config(self) -> ClientConfig:
        """The validated client configuration; raises :class:`TruConnectConfigError` naming a bad field."""
        conn = self.connection
        _check_extra_text(conn)
        return ClientConfig.from_connection_fields(
            host=conn.host, login=conn.login, password=conn.password, port=conn.port, extra=conn.extra_dejson
        )

    @cached_property
    def client(self) -> TruConnectClient:
        """The client (one ``requests.Session``), built on first use."""
        return TruConnectClient(
            self.client_config,
            token_cache=self._token_cache,
            clock=self._clock,
            retry_policy=self._retry_policy,
            on_new_token=mask_secret,
            correlation_prefix=self._correlation_prefix,
        )

    def get_conn(self) -> TruConnectClient:
        """Return the underlying :class:`TruConnectClient`."""
        return self.client

    def close(self) -> None:
        """Close pooled HTTP connections."""
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    def __enter__(self) -> TruConnectHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        correlation_id: str | None = None,
    ) -> Any:
        """Call the API and return the decoded JSON body (``None`` for 204).

        Activation codes in an order or SIM resource (LPA string, matching id, voucher code, QR code URL) are
        registered with Airflow's secret masker before the body is returned.

        :param method: HTTP method.
        :param endpoint: path relative to the API base, e.g. ``/v2/sims/8944...``.
        :param params: query parameters.
        :param json: JSON body.
        :param headers: extra headers.
        :param idempotent: whether the request may be repeated; default true for GET/PUT/DELETE, always false for
            ``POST /v2/orders``.
        :param correlation_id: the ``X-Correlation-ID`` to send on every attempt (default: a new one per attempt).
        :return: the decoded body.
        :raises TruConnectUncertainError: a request that is not safe to repeat may have been acted upon.
        :raises TruConnectError: typed errors (auth, not found, rate limit, client, server, connection).
        """
        body = self.client.request(
            method,
            endpoint,
            params=params,
            json=json,
            headers=headers,
            idempotent=idempotent,
            correlation_id=correlation_id,
        )
        if _CODE_BEARING_PATH.search(normalised_path(endpoint)):
            mask_activation_codes(body)
        return body

    def paginate(
        self,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        page_size: int | None = None,
        max_pages: int | None = None,
    ) -> Iterator[Any]:
        """Iterate over all items of a list endpoint, following ``_next`` links; memory stays flat.

        :param endpoint: list endpoint, e.g. ``/v2/subscriptions``.
        :param params: query parameters of the first page.
        :param page_size: items per page.
        :param max_pages: stop after this many pages.
        :return: an iterator over items.
        """
        return self.client.paginate(endpoint, params=params, page_size=page_size, max_pages=max_pages)

    def test_connection(self) -> tuple[bool, str]:
        """Obtain a token and make one cheap authenticated call (the first product page).

        :return: ``(True, message)`` on success, ``(False, reason)`` otherwise; never raises, never shows a secret.
        """
        try:
            self.client.request("GET", "/v2/products", params={"page": 1, "page_size": 1})
        except TruConnectError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, f"{type(exc).__name__}: connection test failed"
        finally:
            self.close()
        return True, f"Obtained an OAuth2 token and listed products at {self.client_config.api_base}"

    async def aget_client_config(self) -> ClientConfig:
        """Build the client configuration with Airflow's async connection APIs (for triggers).

        Never touches ``extra_dejson`` on the event loop (it would block on the supervisor).
        """
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        conn = self._connection or await get_async_connection(self.truconnect_conn_id, hook=self)
        _check_extra_text(conn)
        extra = await get_async_extra_dejson(conn)
        return ClientConfig.from_connection_fields(
            host=conn.host, login=conn.login, password=conn.password, port=conn.port, extra=extra
        )

    async def get_async_client(self) -> AsyncTruConnectClient:
        """Build an :class:`AsyncTruConnectClient` whose new tokens are masked without blocking the loop.

        Its connection pool is shared by every client of the running event loop with the same transport settings
        (:mod:`airflow_provider_truconnect.client.async_pool`), and closed when the loop ends.

        :return: a client; ``await client.aclose()`` when done (it leaves the shared pool open).
        """
        from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient  # httpx: triggerer only
        from airflow_provider_truconnect.client.async_pool import shared_http_client

        config = await self.aget_client_config()
        return AsyncTruConnectClient(
            config,
            http_client=shared_http_client(config),
            token_cache=self._token_cache,
            clock=self._clock,
            retry_policy=self._retry_policy,
            on_new_token_async=_amask_secret,
            correlation_prefix=self._correlation_prefix,
        )

    # Connection form for Airflow < 3.2; 3.2+ reads the same data declaratively from get_provider_info().
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the legacy custom field behaviour (hidden, relabelled and placeholder fields).

        :return: the declarative behaviour without the placeholders Airflow 2's form cannot place.
        """
        from airflow_provider_truconnect.hooks.legacy_form import legacy_field_behaviour

        return legacy_field_behaviour(UI_FIELD_BEHAVIOUR)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the legacy extra-field widgets (Airflow < 3.2, where Flask-AppBuilder and wtforms exist).

        :return: one wtforms field per declarative ``conn-fields`` entry.
        :raises ImportError: on Airflow 3.2+, which installs neither Flask-AppBuilder nor wtforms.
        """
        from airflow_provider_truconnect.hooks.legacy_form import legacy_form_widgets

        return legacy_form_widgets(CONN_FIELDS)


#: Resources that carry activation codes [DOC docs/connect-api.md §7.2]: orders and SIMs.
_CODE_BEARING_PATH = re.compile(r"/v2/(orders|sims)(/|$)")


def mask_activation_codes(resource: Any) -> None:
    """Register the activation codes of an order or SIM resource, or of an order summary, with Airflow's secret masker.

    The provider does it wherever it handles them; call it in a task of your own that receives them (e.g. from XCom)
    before anything could log them.

    :param resource: a decoded order or SIM resource, or an order summary; anything else is ignored.
    """
    for code in activation_codes(resource):
        mask_secret(code)


class TruConnectHookMixin:
    """Gives an operator or sensor a :class:`TruConnectHook` for its ``truconnect_conn_id``, built on first use.

    Never in ``__init__``: DAG files are parsed far more often than tasks run, and parsing must do no I/O.
    """

    truconnect_conn_id: str

    @cached_property
    def hook(self) -> TruConnectHook:
        """The hook of this task's connection."""
        return TruConnectHook(self.truconnect_conn_id)


def _check_extra_text(conn: Connection) -> None:
    """Refuse an extra that is not a JSON object; Airflow itself would log it and carry on with no extras."""
    raw = getattr(conn, "extra", None)
    if isinstance(raw, str) and raw.strip():
        normalise_extra(raw)


async def _amask_secret(value: str) -> None:
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:
        # Older Airflow: the sync call may block on the supervisor, so keep it off the event loop.
        await asyncio.to_thread(mask_secret, value)
        return
    await amask_secret(value)
