"""The Connect API v2 route handlers: each maps one parsed request onto the state and renders the answer.

Handlers are synchronous and run with the state lock held by the dispatcher, so a request's reads and changes happen
in one state generation. Evidence labels ([DOC], [INFERRED], [GUESS]) as in docs/connect-api.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from airflow_provider_truconnect.emulator.clock import iso, parse_datetime
from airflow_provider_truconnect.emulator.errors import ApiError, Problem, invalid_params
from airflow_provider_truconnect.emulator.lifecycle import activate_subscription, expire_subscription
from airflow_provider_truconnect.emulator.render import (
    json_response,
    list_body,
    render_order,
    render_product,
    render_sim,
    render_subscription,
)
from airflow_provider_truconnect.emulator.routes import API_TEMPLATES
from airflow_provider_truconnect.emulator.state import EmulatorState


@dataclass
class RequestContext:
    """What a handler gets besides the state: the request, its path parameters and who sent it."""

    request: Request
    params: dict[str, str]
    client_id: str
    correlation_id: str | None
    api_base: str
    body: bytes

    def json_body(self) -> Any:
        """:return: the parsed JSON body (null when empty).
        :raises ApiError: [DOC CONV] 400 ``INVALID_HTTP_MESSAGE`` when it is not JSON."""
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "INVALID_HTTP_MESSAGE", [f"Request body is not valid JSON: {exc}"]) from None


Handler = Callable[[EmulatorState, RequestContext], Response]


def _paging(state: EmulatorState, request: Request) -> tuple[int, int]:
    q = request.query_params
    problems: list[Problem] = []
    page, page_size = 1, state.config.default_page_size
    for key in ("page", "page_size"):
        raw = q.get(key)
        if raw is None:
            continue
        try:
            value = int(raw)
        except ValueError:
            problems.append(Problem(f"{key} must be an integer", f"$.{key}", "INVALID_FIELD"))
            continue
        if value < 1:
            problems.append(Problem(f"{key} must be >= 1", f"$.{key}", "INVALID_FIELD"))
        elif key == "page":
            page = value
        else:
            # Emulator-specific cap: larger sizes are clamped, not rejected (the real maximum is unknown).
            page_size = min(value, state.config.max_page_size)
    if problems:
        raise invalid_params(problems)
    return page, page_size


def h_create_order(state: EmulatorState, ctx: RequestContext) -> Response:
    """[DOC NEWESIM/TOPESIM/TOPPSIM] ``POST /v2/orders`` -> ``ACCEPTED``; status 201 and ``_links`` by default
    ([INFERRED] / [DOC] shape)."""
    order = state.order_engine.create(ctx.client_id, ctx.json_body(), ctx.correlation_id)
    cfg = state.config
    body = {
        "id": order.id,
        "status": "ACCEPTED",
        "created_date": iso(order.created),
        "_metadata": {cfg.creation_links_key: {"_self": f"{ctx.api_base}/v2/orders/{order.id}"}},
    }
    return json_response(body, cfg.order_created_status)


def h_get_order(state: EmulatorState, ctx: RequestContext) -> Response:
    """[DOC ORDLC] ``GET /v2/orders/{order_id}``; lazily advanced by the clock."""
    engine = state.order_engine
    order = engine.get(ctx.client_id, ctx.params["order_id"])
    return json_response(render_order(order, engine.status(order), ctx.api_base))


def h_list_products(state: EmulatorState, ctx: RequestContext) -> Response:
    """[DOC PROD] ``GET /v2/products``: paginated; no filters ([UNKNOWN] in v2). The PROD example shows absolute list
    links; we use API-base-relative ones like every other list ([INFERRED])."""
    page, page_size = _paging(state, ctx.request)
    items, more = state.store.list_products(page, page_size)
    data = [render_product(p, ctx.api_base) for p in items]
    return json_response(list_body(data, page, page_size, more, "/v2/products", []))


def h_get_product(state: EmulatorState, ctx: RequestContext) -> Response:
    """[DOC link; CODE] ``GET /v2/products/{product_id}``."""
    return json_response(render_product(state.store.get_product(ctx.params["product_id"]), ctx.api_base))


def h_get_sim(state: EmulatorState, ctx: RequestContext) -> Response:
    """[DOC ESIMLC] ``GET /v2/sims/{iccid}``."""
    return json_response(render_sim(state.store.get_sim(ctx.client_id, ctx.params["iccid"]), ctx.api_base))


def h_cancel_sim(state: EmulatorState, ctx: RequestContext) -> Response:
    """[DOC CANCEL] ``DELETE /v2/sims/{iccid}`` -> 204; the error when installed/used is [INFERRED] 400."""
    state.store.cancel_sim(ctx.client_id, ctx.params["iccid"])
    return Response(status_code=204)


def h_list_subscriptions(state: EmulatorState, ctx: RequestContext) -> Response:
    """[DOC SUBREP/USAGE] ``GET /v2/subscriptions`` with ``iccid``, ``email``, ``product-id``, ``before``, ``after``
    (created date, [INFERRED]); ``status`` (comma-separated) is an emulator extension ([INFERRED])."""
    q = ctx.request.query_params
    page, page_size = _paging(state, ctx.request)
    dates: dict[str, float | None] = {"before": None, "after": None}
    for key in dates:
        raw = q.get(key)
        if raw:
            try:
                dates[key] = parse_datetime(raw)
            except ValueError:
                # [DOC CONV] a bad date format is INVALID_HTTP_MESSAGE.
                raise ApiError(
                    400, "INVALID_HTTP_MESSAGE", [f"{key} must be formatted yyyy-MM-dd'T'HH:mm:ssZ"]
                ) from None
    raw_status = q.get("status")
    statuses = frozenset(s.strip().upper() for s in raw_status.split(",") if s.strip()) if raw_status else None
    iccid = q.get("iccid")
    if iccid is not None:
        iccid = iccid.rstrip("/")  # the docs' examples end the iccid with a stray "/"
    items, more = state.store.list_subscriptions(
        ctx.client_id,
        page,
        page_size,
        iccid=iccid or None,
        email=q.get("email") or None,
        product_id=q.get("product-id") or None,
        before=dates["before"],
        after=dates["after"],
        statuses=statuses,
    )
    query = [(k, v) for k, v in q.multi_items() if k in ("iccid", "email", "product-id", "before", "after", "status")]
    data = [render_subscription(state.config, s, ctx.api_base) for s in items]
    return json_response(list_body(data, page, page_size, more, "/v2/subscriptions", query))


def h_get_subscription(state: EmulatorState, ctx: RequestContext) -> Response:
    """[DOC links] ``GET /v2/subscriptions/{id}``; shape = a list item ([INFERRED])."""
    sub = state.store.get_subscription(ctx.client_id, ctx.params["subscription_id"])
    return json_response(render_subscription(state.config, sub, ctx.api_base))


def h_activate(state: EmulatorState, ctx: RequestContext) -> Response:
    """[DOC link, DOC-v1 behaviour] ``POST /v2/subscriptions/{id}/activate``; 200 + the subscription is
    [INFERRED]."""
    sub = activate_subscription(state.store, ctx.client_id, ctx.params["subscription_id"])
    return json_response(render_subscription(state.config, sub, ctx.api_base))


def h_expire(state: EmulatorState, ctx: RequestContext) -> Response:
    """[GUESS] ``POST /v2/subscriptions/{id}/expire``: the docs name the feature, not the path or the answer."""
    sub = expire_subscription(state.store, ctx.client_id, ctx.params["subscription_id"])
    return json_response(render_subscription(state.config, sub, ctx.api_base))


def h_put_notification(state: EmulatorState, ctx: RequestContext) -> Response:
    """[GUESS modelled on v1] ``PUT /v2/sims/{iccid}/preferences/notifications/{type}`` ``{"webhook_url"}`` -> 200."""
    body = ctx.json_body()
    url = body.get("webhook_url") if isinstance(body, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise invalid_params([Problem("webhook_url is required and must be an http(s) URL", "$.webhook_url")])
    return json_response(state.store.set_notification(ctx.client_id, ctx.params["iccid"], ctx.params["type"], url))


def h_delete_notification(state: EmulatorState, ctx: RequestContext) -> Response:
    """[GUESS modelled on v1] ``DELETE /v2/sims/{iccid}/preferences/notifications/{type}`` -> 204."""
    state.store.set_notification(ctx.client_id, ctx.params["iccid"], ctx.params["type"], None)
    return Response(status_code=204)


#: Route template (see :data:`~airflow_provider_truconnect.emulator.routes.API_ROUTES`) -> handler.
HANDLERS: dict[str, Handler] = {
    "POST /v2/orders": h_create_order,
    "GET /v2/orders/{order_id}": h_get_order,
    "GET /v2/products": h_list_products,
    "GET /v2/products/{product_id}": h_get_product,
    "GET /v2/sims/{iccid}": h_get_sim,
    "DELETE /v2/sims/{iccid}": h_cancel_sim,
    "PUT /v2/sims/{iccid}/preferences/notifications/{type}": h_put_notification,
    "DELETE /v2/sims/{iccid}/preferences/notifications/{type}": h_delete_notification,
    "GET /v2/subscriptions": h_list_subscriptions,
    "GET /v2/subscriptions/{subscription_id}": h_get_subscription,
    "POST /v2/subscriptions/{subscription_id}/activate": h_activate,
    "POST /v2/subscriptions/{subscription_id}/expire": h_expire,
}
if set(HANDLERS) != set(API_TEMPLATES):  # pragma: no cover - caught by any test run
    raise RuntimeError("emulator routes and handlers disagree")
