"""Following the API's pagination links [DOC docs/connect-api.md §4.2-4.3].

Lists carry ``_metadata.links._next``; the link may be absolute, relative to the **API base** (not the host root),
or written with a literal ``{BASE_URL}``. ``page_count`` is ambiguous in the docs and never trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_truconnect.client.errors import TruConnectPaginationError
from airflow_provider_truconnect.client.models import links_of

_BASE_PLACEHOLDER = "{BASE_URL}"


def _origin(url: str) -> tuple[str, str]:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a malformed host or port in a link the server sent
        raise TruConnectPaginationError("Pagination link is not a valid URL") from None
    return parts.scheme, f"{(parts.hostname or '').lower()}:{port}"


def join_link(api_base: str, link: str) -> str:
    """Resolve a link from ``_metadata`` against the API base.

    ``urljoin`` is wrong here: ``urljoin("https://h/connect-api", "/v2/x")`` drops ``/connect-api``.

    :param api_base: the API base URL, e.g. ``https://services.truphone.com/connect-api``.
    :param link: an absolute URL, a path relative to the API base, or a ``{BASE_URL}/...`` template.
    :return: the absolute URL.
    :raises TruConnectPaginationError: when an absolute link points to another origin (the bearer token must not
        be sent there) or the link is empty.
    """
    base = api_base.rstrip("/")
    link = link.strip()
    if not link:
        raise TruConnectPaginationError("Empty pagination link")
    if link.startswith(_BASE_PLACEHOLDER):
        return base + "/" + link[len(_BASE_PLACEHOLDER) :].lstrip("/")
    try:
        absolute = bool(urlsplit(link).scheme or urlsplit(link).netloc)
    except ValueError:
        raise TruConnectPaginationError("Pagination link is not a valid URL") from None
    # A relative link may carry a URL in its query string: only a scheme or a host makes a link absolute.
    if absolute:
        if _origin(link) != _origin(base):
            raise TruConnectPaginationError(
                "Pagination link points to another origin; refusing to send credentials there"
            )
        return link
    base_path = urlsplit(base).path.rstrip("/")
    path = "/" + link.lstrip("/")
    if base_path and (path == base_path or path.startswith(base_path + "/")):
        # Already carries the API prefix: join to the origin, not the base, to avoid doubling it.
        scheme_host = base[: len(base) - len(base_path)]
        return scheme_host + path
    return base + path


def next_link(body: Any) -> str | None:
    """The ``_next`` link of a list response, from ``_metadata.links`` or ``_metadata._links``."""
    link = links_of(body).get("_next")
    return link if isinstance(link, str) and link.strip() else None


def page_items(body: Any) -> list[Any]:
    """The items of a list response (``data``), or an empty list."""
    if isinstance(body, Mapping):
        data = body.get("data")
        if isinstance(data, list):
            return data
    if isinstance(body, list):  # bare arrays, as v1 answered
        return body
    return []
