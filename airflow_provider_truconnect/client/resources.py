"""Connect API v2 resource methods, written once on top of ``request`` and ``paginate``.

Used by :class:`~airflow_provider_truconnect.client.client.TruConnectClient` and by the Airflow hook, which both
provide ``request`` and ``paginate``. Ids are percent-encoded into paths (product and subscription ids end in ``=``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from airflow_provider_truconnect.client.errors import TruConnectConfigError
from airflow_provider_truconnect.client.paths import ORDERS, order_path, path_id
from airflow_provider_truconnect.client.responses import expect_object

#: Subscription report filters [DOC SUBREP]; ``status`` is an emulator extension the real API may ignore.
SUBSCRIPTION_FILTERS = frozenset({"iccid", "email", "product-id", "product_id", "before", "after", "status"})


class _Transport(Protocol):
    def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
    ) -> Any: ...

    def paginate(
        self, endpoint: str, *, params: Mapping[str, Any] | None = None, page_size: int | None = None
    ) -> Iterator[Any]: ...


class ConnectV2Resources:
    """The v2 endpoints of the Connect API as methods [DOC docs/connect-api.md §7]."""

    def list_products(self: _Transport, *, page_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Iterate over the product catalogue, page by page.

        :param page_size: items per page (server default when ``None``).
        :return: an iterator of product resources.
        """
        return self.paginate("/v2/products", page_size=page_size)

    def get_product(self: _Transport, product_id: str) -> dict[str, Any]:
        """Fetch one product.

        :param product_id: the product id.
        :return: the product resource.
        """
        result: dict[str, Any] = self.request("GET", f"/v2/products/{path_id('product_id', product_id)}")
        return result

    def create_order(
        self: _Transport, order: Mapping[str, Any], *, correlation_id: str | None = None
    ) -> dict[str, Any]:
        """Place an order (``POST /v2/orders``). Not idempotent: sent again only when it provably never left.

        :param order: the order body (``operation_type``, ``sim_type``, ``product``, ``subscriber`` ...).
        :param correlation_id: the ``X-Correlation-ID`` to send (default: a new one), e.g. one recorded beforehand.
        :return: the creation response (``id``, ``status``, ``created_date``).
        :raises TruConnectConfigError: when the body misses required fields (nothing is sent).
        :raises TruConnectOrderUncertainError: when the order may or may not exist after a failure.
        """
        result: dict[str, Any] = self.request("POST", ORDERS, json=order, correlation_id=correlation_id)
        return result

    def get_order(self: _Transport, order_id: str) -> dict[str, Any]:
        """Fetch an order's status and output.

        :param order_id: the order id.
        :return: the order resource.
        """
        path = order_path(order_id)
        return expect_object(self.request("GET", path), f"GET {path}")

    def get_sim(self: _Transport, iccid: str) -> dict[str, Any]:
        """Fetch a SIM / eSIM profile.

        :param iccid: the SIM's ICCID.
        :return: the SIM resource.
        """
        result: dict[str, Any] = self.request("GET", f"/v2/sims/{path_id('iccid', iccid)}")
        return result

    def cancel_sim(self: _Transport, iccid: str) -> None:
        """Cancel an unused eSIM and its subscriptions (``DELETE /v2/sims/{iccid}``, 204).

        :param iccid: the SIM's ICCID.
        """
        self.request("DELETE", f"/v2/sims/{path_id('iccid', iccid)}")

    def list_subscriptions(
        self: _Transport, *, page_size: int | None = None, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Iterate over subscriptions matching the filters, page by page.

        :param page_size: items per page.
        :param filters: ``iccid``, ``email``, ``product_id`` (sent as ``product-id``), ``before``, ``after``.
        :return: an iterator of subscription resources.
        :raises TruConnectConfigError: on an unknown filter or a non-string value.
        """
        params: dict[str, Any] = {}
        for name, value in filters.items():
            if name not in SUBSCRIPTION_FILTERS:
                raise TruConnectConfigError(
                    name, f"is not a subscription filter ({', '.join(sorted(SUBSCRIPTION_FILTERS))})"
                )
            if value is None:
                continue
            if not isinstance(value, str):
                raise TruConnectConfigError(name, f"must be a string, got {type(value).__name__}")
            params["product-id" if name == "product_id" else name] = value
        return self.paginate("/v2/subscriptions", params=params, page_size=page_size)

    def get_subscription(self: _Transport, subscription_id: str) -> dict[str, Any]:
        """Fetch one subscription.

        :param subscription_id: the subscription id.
        :return: the subscription resource.
        """
        result: dict[str, Any] = self.request("GET", f"/v2/subscriptions/{path_id('subscription_id', subscription_id)}")
        return result

    def activate_subscription(self: _Transport, subscription_id: str) -> Any:
        """Activate a ``PENDING`` subscription now.

        :param subscription_id: the subscription id.
        :return: the API's answer (``None`` for 204).
        """
        return self.request("POST", f"/v2/subscriptions/{path_id('subscription_id', subscription_id)}/activate")
