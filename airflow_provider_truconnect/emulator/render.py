"""JSON views of the resources ([DOC] shapes of docs/connect-api.md §4 and §7) and the list envelope."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from airflow_provider_truconnect.emulator.clock import iso
from airflow_provider_truconnect.emulator.config import EmulatorConfig
from airflow_provider_truconnect.emulator.models import SMDP_ADDRESS, Order, Product, Sim, Subscription

QRCODE_BASE = "https://services.truphone.com/connect/qrcode/v1/esim/"
SIM_QRCODE_BASE = "http://services.truphone.com/qrcode/v1/esim/"  # [DOC ESIMLC] the SIM resource shows this host


def json_bytes(data: Any) -> bytes:
    """:param data: a JSON value. :return: its compact encoding."""
    return json.dumps(data, separators=(",", ":")).encode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """:param data: a JSON value. :param status: HTTP status. :param headers: extra headers.
    :return: an ``application/json`` response."""
    return Response(json_bytes(data), status_code=status, headers=headers, media_type="application/json")


def _balance(config: EmulatorConfig, value: int) -> int | str:
    # [DOC] numbers in SUBLC, strings in SUBREP/USAGE: the switch lets a test exercise client parsing.
    return str(value) if config.balances_as_strings else value


def _lpa(matching_id: str) -> str:
    return f"1${SMDP_ADDRESS}${matching_id}"


def render_product(product: Product, base: str) -> dict[str, Any]:
    """:param product: product. :param base: absolute API base. :return: [DOC PROD] JSON."""
    return {
        "id": product.id,
        "name": product.name,
        "sim_type": list(product.sim_type),
        "duration": product.duration,
        "duration_unit": product.duration_unit,
        "data": product.data,
        "data_unit": product.data_unit,
        "price": product.price,
        "price_currency": product.price_currency,
        "footprint_code": product.footprint_code,
        "_metadata": {"links": {"_self": f"{base}/v2/products/{product.id}"}},
    }


def render_sim(sim: Sim, base: str) -> dict[str, Any]:
    """:param sim: SIM. :param base: absolute API base. :return: [DOC ESIMLC] JSON (``LPA:`` prefix on ``_lpa``)."""
    lpa = "LPA:" + _lpa(sim.matching_id)
    return {
        "iccid": sim.iccid,
        "status": sim.status,
        "matching_id": sim.matching_id,
        "last_modified": iso(sim.last_modified),
        "sim_type": sim.sim_type,
        "_metadata": {
            "links": {
                "_lpa": lpa,
                "_subscriptions": f"{base}/v2/subscriptions?iccid={sim.iccid}",
                "_qrcode": SIM_QRCODE_BASE + lpa,
                "_self": f"{base}/v2/sims/{sim.iccid}",
            }
        },
    }


def render_subscription(config: EmulatorConfig, sub: Subscription, base: str) -> dict[str, Any]:
    """:param config: configuration (for the balance format). :param sub: subscription. :param base: API base.
    :return: [DOC SUBLC] JSON; ``activation_date``/``expiry_date`` are null while ``PENDING_USAGE`` ([INFERRED])."""
    sid = sub.id
    return {
        "id": sub.id,
        "name": sub.name,
        "sim_id": sub.sim_id,
        "product_id": sub.product_id,
        "created_date": iso(sub.created),
        "activation_date": iso(sub.activation),
        "expiry_date": iso(sub.expiry),
        "status": sub.status,
        "initial_balance": _balance(config, sub.initial_balance),
        "current_balance": _balance(config, sub.current_balance),
        "spend_balance": _balance(config, sub.initial_balance - sub.current_balance),
        "balance_units": "Bytes",
        "_metadata": {
            "links": {
                "_activate": f"{base}/v2/subscriptions/{sid}/activate",
                "_sim": f"{base}/v2/sims/{sub.sim_id}",
                "_self": f"{base}/v2/subscriptions/{sid}",
                "_product": f"{base}/v2/products/{sub.product_id}",
            }
        },
    }


def render_order(order: Order, status: str, base: str) -> dict[str, Any]:
    """:param order: order. :param status: its status now. :param base: absolute API base.
    :return: [DOC ORDLC] JSON."""
    self_link = f"{base}/v2/orders/{order.id}"
    body: dict[str, Any] = {"id": order.id, "status": status, "created_date": iso(order.created)}
    links: dict[str, str] = {}
    if status == "COMPLETED" and order.output is not None:
        body["output"] = dict(order.output)
        iccid = order.output["iccid"]
        matching_id = order.output.get("matching_id")
        if matching_id:
            # [DOC ORDLC] no "LPA:" prefix on the order's _lpa (unlike the SIM resource).
            links["_lpa"] = _lpa(matching_id)
            links["_smdp"] = SMDP_ADDRESS
        links["_sim"] = f"{base}/v2/sims/{iccid}"
        if matching_id:
            links["_qrcode"] = QRCODE_BASE + "LPA:" + _lpa(matching_id)
        links["_subscription"] = f"{base}/v2/subscriptions/{order.output['subscription_id']}"
    elif status == "FAILED" and order.error is not None:
        body["error"] = order.error  # [INFERRED] invented field
    links["_self"] = self_link
    body["_metadata"] = {"links": links}
    return body


def list_body(
    data: list[dict[str, Any]], page: int, page_size: int, more: bool, path: str, query: list[tuple[str, str]]
) -> dict[str, Any]:
    """[DOC CONV/SUBREP] list envelope; links relative to the API base; ``page_count`` = items on this page
    ([INFERRED], the docs are ambiguous).

    :param data: the page's items. :param page: 1-based page. :param page_size: items per page.
    :param more: whether another page exists. :param path: the list path. :param query: filters to keep in links.
    :return: the envelope.
    """

    def link(p: int) -> str:
        return f"{path}?{urlencode([*query, ('page', str(p)), ('page_size', str(page_size))])}"

    links = {"_self": link(page)}
    if more:
        links["_next"] = link(page + 1)
    if page > 1:
        links["_prev"] = link(page - 1)
    return {"data": data, "_metadata": {"page": page, "page_size": page_size, "page_count": len(data), "links": links}}
