"""API paths: resource ids in paths, and recognising the one request that places an order.

Near the bottom of the client's layers (it needs only :mod:`.errors`): the client core uses it to apply the order rules
to ``POST /v2/orders`` however the path is spelled, and the resource methods to build paths.
"""

from __future__ import annotations

import posixpath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from airflow_provider_truconnect.client.errors import TruConnectConfigError

ORDERS = "/v2/orders"


def path_id(field: str, value: Any) -> str:
    """Validate an id and percent-encode it for a URL path.

    :param field: the argument's name, for the error.
    :param value: the id.
    :raises TruConnectConfigError: when the id is not a non-empty string.
    """
    if not isinstance(value, str):
        raise TruConnectConfigError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise TruConnectConfigError(field, "is empty")
    return quote(value.strip(), safe="")


def order_path(order_id: Any) -> str:
    """The path of one order, ``/v2/orders/{order_id}``, with the id validated and percent-encoded.

    :param order_id: the order id.
    :raises TruConnectConfigError: when the id is not a non-empty string.
    """
    return f"{ORDERS}/{path_id('order_id', order_id)}"


def normalised_path(url: str) -> str:
    """The path of a URL as a server would route it: percent-decoded, dot segments resolved, repeated and trailing
    slashes dropped, lower case.

    :param url: an absolute URL or a path.
    """
    path = unquote(urlsplit(url).path)
    path = posixpath.normpath("/" + path.lstrip("/")) if path else "/"
    return path.rstrip("/").lower() or "/"


def is_order_creation(method: str, url: str, api_base: str | None = None) -> bool:
    """Whether a request places an order: ``POST`` to ``/v2/orders`` under the API base, however it is spelled
    (``/v2/orders/``, ``//v2//orders``, ``/v2/./orders``, `` /V2/Orders ``, ``%2Fv2%2Forders``).

    :param method: the HTTP method.
    :param url: the request URL, absolute or relative to the API base.
    :param api_base: the API base URL, whose path prefix (e.g. ``/connect-api``) may precede ``/v2/orders``; ``None``
        when it is not known yet (a task argument checked at parse time): then any prefix counts.
    """
    if not isinstance(method, str) or method.strip().upper() != "POST" or not isinstance(url, str):
        return False
    path = normalised_path(url.strip())
    if api_base is None:
        return path == ORDERS or path.endswith(ORDERS)
    prefix = normalised_path(api_base)
    return path in {ORDERS, prefix.rstrip("/") + ORDERS}
