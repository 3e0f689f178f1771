"""ASGI application of the emulator: the Keycloak token endpoint, the Connect API v2 and the control plane.

Layout of the server (evidence labels as in ``connect-api.md``):

* ``POST /auth/realms/tru-staff/protocol/openid-connect/token`` at the host root ([DOC AUTH2] path; Keycloak
  behaviour [INFERRED]).
* ``{api_prefix}/v2/...`` ([DOC] routes of §7, shapes from the recipes).
* ``/__emulator/...`` the control plane (emulator-only, no auth).

The API routes use a small segment router on the *raw* path so ids are percent-decoded segment by segment: a raw
``=`` and ``%3D`` both work, and an encoded ``%2F`` inside an id cannot split it ([INFERRED] §4.4). The control plane is
a plain Starlette router.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_truconnect.emulator.state import (
    SMDP_ADDRESS,
    ApiError,
    EmulatorState,
    Fault,
    OAuthError,
    Order,
    Problem,
    Product,
    Sim,
    Subscription,
    invalid_params,
    iso,
    parse_datetime,
)

TOKEN_PATH = "/auth/realms/tru-staff/protocol/openid-connect/token"
TOKEN_ROUTE = f"POST {TOKEN_PATH}"
CONTROL_PREFIX = "/__emulator"
QRCODE_BASE = "https://services.truphone.com/connect/qrcode/v1/esim/"
SIM_QRCODE_BASE = "http://services.truphone.com/qrcode/v1/esim/"  # [DOC ESIMLC] the SIM resource shows this host
_RAW_SEND_KEY = "truconnect.raw_send"
_ERROR_TITLES = {
    "INVALID_HTTP_MESSAGE": "Invalid HTTP message",
    "INVALID_REQUEST_PARAMS": "Invalid request parameters",
    "UNAUTHORISED": "Unauthorised",
    "ACCESS_DENIED": "Access denied",
    "NOT_FOUND": "Not found",
    "METHOD_NOT_ALLOWED": "Method not allowed",
    "UNACCEPTABLE": "Unacceptable",
    "TOO MANY REQUESTS": "Too many requests",
    "INTERNAL_ERROR": "Internal error",
}
_STATUS_TYPES = {
    400: "INVALID_REQUEST_PARAMS",
    401: "UNAUTHORISED",
    403: "ACCESS_DENIED",
    404: "NOT_FOUND",
    406: "UNACCEPTABLE",
    429: "TOO MANY REQUESTS",
}
_HTML_GATEWAY = (
    "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n<center><h1>{status} Bad Gateway</h1>"
    "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json_bytes(data), status_code=status, headers=headers, media_type="application/json")


# ------------------------------------------------------------------------------------------------- request context
@dataclass
class _Ctx:
    request: Request
    params: dict[str, str]
    client_id: str
    correlation_id: str | None
    api_base: str
    body: bytes

    def json_body(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            # [DOC CONV] unparseable request -> 400 INVALID_HTTP_MESSAGE.
            raise ApiError(400, "INVALID_HTTP_MESSAGE", [f"Request body is not valid JSON: {exc}"]) from None


_Handler = Callable[[EmulatorState, _Ctx], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    segments: tuple[str, ...]
    template: str
    handler: _Handler


# ------------------------------------------------------------------------------------------------------- renderers
def _balance(state: EmulatorState, value: int) -> int | str:
    # [DOC] numbers in SUBLC, strings in SUBREP/USAGE: the switch lets a test exercise client parsing.
    return str(value) if state.config.balances_as_strings else value


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


def render_subscription(state: EmulatorState, sub: Subscription, base: str) -> dict[str, Any]:
    """:param state: state (for the balance format). :param sub: subscription. :param base: absolute API base.
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
        "initial_balance": _balance(state, sub.initial_balance),
        "current_balance": _balance(state, sub.current_balance),
        "spend_balance": _balance(state, sub.initial_balance - sub.current_balance),
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


def render_order(state: EmulatorState, order: Order, base: str) -> dict[str, Any]:
    """:param state: state. :param order: order. :param base: absolute API base. :return: [DOC ORDLC] JSON."""
    status = state.order_status(order)
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


def _list_body(
    data: list[dict[str, Any]], page: int, page_size: int, more: bool, path: str, query: list[tuple[str, str]]
) -> dict[str, Any]:
    """[DOC CONV/SUBREP] list envelope; links relative to the API base; ``page_count`` = items on this page
    ([INFERRED], the docs are ambiguous)."""

    def link(p: int) -> str:
        return f"{path}?{urlencode([*query, ('page', str(p)), ('page_size', str(page_size))])}"

    links = {"_self": link(page)}
    if more:
        links["_next"] = link(page + 1)
    if page > 1:
        links["_prev"] = link(page - 1)
    return {"data": data, "_metadata": {"page": page, "page_size": page_size, "page_count": len(data), "links": links}}


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


# --------------------------------------------------------------------------------------------------------- handlers
def h_create_order(state: EmulatorState, ctx: _Ctx) -> Response:
    """[DOC NEWESIM/TOPESIM/TOPPSIM] ``POST /v2/orders`` -> ``ACCEPTED``; status 201 and ``_links`` by default
    ([INFERRED] / [DOC] shape)."""
    order = state.create_order(ctx.client_id, ctx.json_body(), ctx.correlation_id)
    cfg = state.config
    body = {
        "id": order.id,
        "status": "ACCEPTED",
        "created_date": iso(order.created),
        "_metadata": {cfg.creation_links_key: {"_self": f"{ctx.api_base}/v2/orders/{order.id}"}},
    }
    return _json(body, cfg.order_created_status)


def h_get_order(state: EmulatorState, ctx: _Ctx) -> Response:
    """[DOC ORDLC] ``GET /v2/orders/{order_id}``; lazily advanced by the clock."""
    return _json(render_order(state, state.get_order(ctx.client_id, ctx.params["order_id"]), ctx.api_base))


def h_list_products(state: EmulatorState, ctx: _Ctx) -> Response:
    """[DOC PROD] ``GET /v2/products``: paginated; no filters ([UNKNOWN] in v2). The PROD example shows absolute list
    links; we use API-base-relative ones like every other list ([INFERRED])."""
    page, page_size = _paging(state, ctx.request)
    items, more = state.list_products(page, page_size)
    data = [render_product(p, ctx.api_base) for p in items]
    return _json(_list_body(data, page, page_size, more, "/v2/products", []))


def h_get_product(state: EmulatorState, ctx: _Ctx) -> Response:
    """[DOC link; CODE] ``GET /v2/products/{product_id}``."""
    return _json(render_product(state.get_product(ctx.params["product_id"]), ctx.api_base))


def h_get_sim(state: EmulatorState, ctx: _Ctx) -> Response:
    """[DOC ESIMLC] ``GET /v2/sims/{iccid}``."""
    return _json(render_sim(state.get_sim(ctx.client_id, ctx.params["iccid"]), ctx.api_base))


def h_cancel_sim(state: EmulatorState, ctx: _Ctx) -> Response:
    """[DOC CANCEL] ``DELETE /v2/sims/{iccid}`` -> 204; the error when installed/used is [INFERRED] 400."""
    state.cancel_sim(ctx.client_id, ctx.params["iccid"])
    return Response(status_code=204)


def h_list_subscriptions(state: EmulatorState, ctx: _Ctx) -> Response:
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
    items, more = state.list_subscriptions(
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
    data = [render_subscription(state, s, ctx.api_base) for s in items]
    return _json(_list_body(data, page, page_size, more, "/v2/subscriptions", query))


def h_get_subscription(state: EmulatorState, ctx: _Ctx) -> Response:
    """[DOC links] ``GET /v2/subscriptions/{id}``; shape = a list item ([INFERRED])."""
    sub = state.get_subscription(ctx.client_id, ctx.params["subscription_id"])
    return _json(render_subscription(state, sub, ctx.api_base))


def h_activate(state: EmulatorState, ctx: _Ctx) -> Response:
    """[DOC link, DOC-v1 behaviour] ``POST /v2/subscriptions/{id}/activate``; 200 + the subscription is
    [INFERRED]."""
    sub = state.activate_subscription(ctx.client_id, ctx.params["subscription_id"])
    return _json(render_subscription(state, sub, ctx.api_base))


def h_expire(state: EmulatorState, ctx: _Ctx) -> Response:
    """[GUESS] ``POST /v2/subscriptions/{id}/expire``: the docs name the feature, not the path or the answer."""
    sub = state.expire_subscription(ctx.client_id, ctx.params["subscription_id"])
    return _json(render_subscription(state, sub, ctx.api_base))


def h_put_notification(state: EmulatorState, ctx: _Ctx) -> Response:
    """[GUESS modelled on v1] ``PUT /v2/sims/{iccid}/preferences/notifications/{type}`` ``{"webhook_url"}`` -> 200."""
    body = ctx.json_body()
    url = body.get("webhook_url") if isinstance(body, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise invalid_params([Problem("webhook_url is required and must be an http(s) URL", "$.webhook_url")])
    return _json(state.set_notification(ctx.client_id, ctx.params["iccid"], ctx.params["type"], url))


def h_delete_notification(state: EmulatorState, ctx: _Ctx) -> Response:
    """[GUESS modelled on v1] ``DELETE /v2/sims/{iccid}/preferences/notifications/{type}`` -> 204."""
    state.set_notification(ctx.client_id, ctx.params["iccid"], ctx.params["type"], None)
    return Response(status_code=204)


def _routes() -> list[_Route]:
    table = [
        ("POST", "/v2/orders", h_create_order),
        ("GET", "/v2/orders/{order_id}", h_get_order),
        ("GET", "/v2/products", h_list_products),
        ("GET", "/v2/products/{product_id}", h_get_product),
        ("GET", "/v2/sims/{iccid}", h_get_sim),
        ("DELETE", "/v2/sims/{iccid}", h_cancel_sim),
        ("PUT", "/v2/sims/{iccid}/preferences/notifications/{type}", h_put_notification),
        ("DELETE", "/v2/sims/{iccid}/preferences/notifications/{type}", h_delete_notification),
        ("GET", "/v2/subscriptions", h_list_subscriptions),
        ("GET", "/v2/subscriptions/{subscription_id}", h_get_subscription),
        ("POST", "/v2/subscriptions/{subscription_id}/activate", h_activate),
        ("POST", "/v2/subscriptions/{subscription_id}/expire", h_expire),
    ]
    return [_Route(m, tuple(p.strip("/").split("/")), f"{m} {p}", h) for m, p, h in table]


# ------------------------------------------------------------------------------------------------------ dispatcher
class _ApiDispatcher:
    """Token endpoint + Connect API with stats, faults, auth, rate limiting and the error model around each route."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.routes = _routes()
        self._by_len: dict[int, list[_Route]] = {}
        for route in self.routes:
            self._by_len.setdefault(len(route.segments), []).append(route)

    def _match(self, method: str, segments: list[str]) -> tuple[_Route | None, dict[str, str], bool]:
        path_matched = False
        for route in self._by_len.get(len(segments), []):
            params: dict[str, str] = {}
            for pattern, value in zip(route.segments, segments, strict=True):
                if pattern.startswith("{"):
                    if not value:
                        break
                    params[pattern[1:-1]] = value
                elif pattern != value:
                    break
            else:
                if route.method == method:
                    return route, params, True
                path_matched = True
        return None, {}, path_matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        request = Request(scope, receive)
        method = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        raw_target = raw_path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        correlation_id = request.headers.get("x-correlation-id")
        path = raw_path.decode("latin-1")
        prefix = state.config.api_prefix
        route: _Route | None = None
        params: dict[str, str] = {}
        if path == TOKEN_PATH:
            template, fault_key = TOKEN_ROUTE, "token"
            is_token = True
        else:
            is_token = False
            template = fault_key = "unmatched"
            if path.startswith(prefix + "/"):
                segments = [unquote(s) for s in path[len(prefix) + 1 :].split("/")]
                route, params, path_matched = self._match(method, segments)
                if route is not None:
                    template = fault_key = route.template
                elif path_matched:
                    template = fault_key = "method_not_allowed"
        client_id: str | None = None
        status = 0
        try:
            fault = state.take_fault(fault_key, after=False)
            if fault is not None and await self._apply_fault(fault, scope, receive, send, is_token, correlation_id):
                status = 0 if fault.drop else _fault_status(fault)
                return
            body = await request.body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
            if is_token:
                if method != "POST":
                    response: Response = _json(
                        {"error": "invalid_request", "error_description": "HTTP method not allowed"}, 405
                    )
                else:
                    response = self._token(request, body)
            else:
                try:
                    if route is None:
                        if template == "method_not_allowed":
                            raise ApiError(
                                405, "METHOD_NOT_ALLOWED", [f"Method {method} not allowed on {scope['path']}"]
                            )
                        raise ApiError(404, "NOT_FOUND", [f"No route for {method} {scope['path']}"])
                    client_id = state.authenticate(request.headers.get("authorization"))
                    if state.config.strict_correlation_id and not correlation_id:
                        raise ApiError(
                            400,
                            "INVALID_REQUEST_PARAMS",
                            [
                                Problem(
                                    "X-Correlation-ID header is required",
                                    "$.headers.X-Correlation-ID",
                                    "MISSING_MANDATORY_FIELD",
                                )
                            ],
                        )
                    state.check_rate(client_id, template)
                    host = request.headers.get("host") or "{}:{}".format(*scope.get("server", ("127.0.0.1", 80)))
                    ctx = _Ctx(request, params, client_id, correlation_id, f"{scope['scheme']}://{host}{prefix}", body)
                    response = route.handler(state, ctx)
                except ApiError as exc:
                    response = self._error(exc, correlation_id)
            status = response.status_code
            fault = state.take_fault(fault_key, after=True)
            if fault is not None and await self._apply_fault(fault, scope, receive, send, is_token, correlation_id):
                status = 0 if fault.drop else _fault_status(fault)
                return
            await response(scope, receive, send)
        finally:
            state.record_request(template, status, raw_target, correlation_id, client_id, method)

    def _token(self, request: Request, body: bytes) -> Response:
        """[DOC AUTH2] form body; ``client_secret_post`` and ``client_secret_basic`` both work ([CODE]/[INFERRED])."""
        form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        basic: tuple[str, str] | None = None
        auth = request.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, sep, password = decoded.partition(":")
            basic = (unquote(user), unquote(password)) if sep else ("", "")
        try:
            result = self.state.token_grant(form, basic)
        except OAuthError as exc:
            headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="tru-staff"'
            return _json({"error": exc.error, "error_description": exc.description}, exc.status, headers)
        return _json(result, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _error(self, exc: ApiError, correlation_id: str | None) -> Response:
        return error_response(self.state, exc, correlation_id)

    async def _apply_fault(
        self, fault: Fault, scope: Scope, receive: Receive, send: Send, is_token: bool, correlation_id: str | None
    ) -> bool:
        """Apply a fault; return True when it produced (or killed) the response."""
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            await _drop_connection(scope, send)
            return True
        if fault.status is None and fault.body is None:
            return False  # a pure delay
        status = _fault_status(fault)
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(
                int(fault.retry_after) if float(fault.retry_after).is_integer() else fault.retry_after
            )
        response: Response
        if fault.body == "malformed":
            response = Response(b'{"data": [ {"id": "trunc', status, headers, media_type="application/json")
        elif fault.body == "html":
            response = Response(_HTML_GATEWAY.format(status=status), status, headers, media_type="text/html")
        elif is_token:
            error = (
                "invalid_client" if status == 401 else ("invalid_grant" if status == 400 else "temporarily_unavailable")
            )
            response = _json({"error": error, "error_description": "Injected fault"}, status, headers)
        else:
            error_type = _STATUS_TYPES.get(status, "INTERNAL_ERROR")
            response = error_response(
                self.state, ApiError(status, error_type, ["Injected fault"], headers), correlation_id
            )
        await response(scope, receive, send)
        return True


def _fault_status(fault: Fault) -> int:
    if fault.status is not None:
        return fault.status
    return 502 if fault.body == "html" else 200


async def _drop_connection(scope: Scope, send: Send) -> None:
    """Close the TCP connection without any HTTP response, so the client sees a connection error (not a 5xx)."""
    raw_send = scope.get(_RAW_SEND_KEY, send)
    # uvicorn's send is a bound method of its per-request cycle, which holds the asyncio transport.
    cycle = getattr(raw_send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.abort()
        for _ in range(10):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)
        return
    # Fallback for other servers: promise a body that never comes, then fail the response.
    await raw_send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1048576")]})
    raise ConnectionAbortedError("injected connection drop")


def error_response(state: EmulatorState, exc: ApiError, correlation_id: str | None) -> Response:
    """Render an API error in the configured model.

    :param state: state (for the model switch).
    :param exc: the error.
    :param correlation_id: the request's correlation id (RFC 7807 ``correlation_id``; generated when absent).
    :return: the response.
    """
    if state.config.error_model == "rfc7807":
        # [DOC NEWERR] RFC 7807 model of the newer docs site.
        title = _ERROR_TITLES.get(exc.error_type, exc.error_type.title())
        body = {
            "title": title,
            "status": exc.status,
            "detail": exc.problems[0].detail if len(exc.problems) == 1 else title,
            "errors": [
                {"code": p.code, "json_path": p.json_path, "detail": p.detail}
                if p.json_path
                else {"code": p.code, "detail": p.detail}
                for p in exc.problems
            ],
            "correlation_id": correlation_id or str(_uuid4()),
        }
        return Response(_json_bytes(body), exc.status, exc.headers, media_type="application/problem+json")
    # [DOC CONV] classic model.
    return _json({"type": exc.error_type, "messages": [p.detail for p in exc.problems]}, exc.status, exc.headers)


def _uuid4() -> str:
    import uuid

    return str(uuid.uuid4())


# --------------------------------------------------------------------------------------------------- control plane
def _control_routes(state: EmulatorState) -> list[Route]:
    """Emulator-only endpoints (no auth)."""

    async def read_json(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    def guarded(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapper(request: Request) -> Response:
            try:
                return await fn(request)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, 400)
            except KeyError as exc:
                return JSONResponse({"error": f"not found: {exc}"}, 404)

        return wrapper

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "now": state.now()})

    async def stats(request: Request) -> Response:
        return _json(state.stats())

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            data = await read_json(request)
            with state.lock:
                if "set" in data:
                    state.clock.set(float(data["set"]))
                if "advance" in data:
                    state.clock.advance(float(data["advance"]))
        now = state.now()
        return JSONResponse({"now": now, "iso": iso(now), "offset": state.clock.offset})

    async def config(request: Request) -> Response:
        if request.method == "POST":
            state.update_config(await read_json(request))
        return JSONResponse(state.config.to_json_dict())

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            data = await read_json(request)
            return JSONResponse(state.add_fault(data).to_json(), 201)
        if request.method == "DELETE":
            state.clear_faults()
            return Response(status_code=204)
        return JSONResponse([f.to_json() for f in state.faults])

    async def revoke(request: Request) -> Response:
        data = await read_json(request)
        token = data.get("token")
        return JSONResponse({"revoked": state.revoke(token if isinstance(token, str) else None)})

    async def tokens(request: Request) -> Response:
        with state.lock:
            return JSONResponse({"tokens": list(state.issued_tokens)})

    async def orders(request: Request) -> Response:
        return _json({"orders": state.orders_view()})

    async def usage(request: Request) -> Response:
        data = await read_json(request)
        used = data.get("bytes")
        if isinstance(used, bool) or not isinstance(used, int):
            raise ValueError("bytes must be an integer")
        return JSONResponse(state.usage(str(data["iccid"]), used))

    async def sim_status(request: Request) -> Response:
        data = await read_json(request)
        iccid = request.path_params["iccid"]
        sim = state.set_sim_status(iccid, str(data.get("status")))
        return JSONResponse({"iccid": sim.iccid, "status": sim.status})

    return [
        Route("/health", guarded(health), methods=["GET"]),
        Route("/stats", guarded(stats), methods=["GET"]),
        Route("/reset", guarded(reset), methods=["POST"]),
        Route("/clock", guarded(clock), methods=["GET", "POST"]),
        Route("/config", guarded(config), methods=["GET", "POST"]),
        Route("/faults", guarded(faults), methods=["GET", "POST", "DELETE"]),
        Route("/revoke", guarded(revoke), methods=["POST"]),
        Route("/tokens", guarded(tokens), methods=["GET"]),
        Route("/orders", guarded(orders), methods=["GET"]),
        Route("/usage", guarded(usage), methods=["POST"]),
        Route("/sims/{iccid}/status", guarded(sim_status), methods=["POST"]),
    ]


class EmulatorApp:
    """The ASGI entry point: control plane (Starlette) or API dispatcher, with the server's raw ``send`` kept in the
    scope so a fault can drop the connection."""

    def __init__(self, state: EmulatorState) -> None:
        """:param state: the state to serve."""
        self.state = state
        self.control: ASGIApp = Starlette(routes=_control_routes(state))
        self.api = _ApiDispatcher(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI interface."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            child = dict(scope)
            # Starlette routes on the path relative to root_path.
            child["root_path"] = scope.get("root_path", "") + CONTROL_PREFIX
            await self.control(child, receive, send)
            return
        scope[_RAW_SEND_KEY] = send
        await self.api(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(state: EmulatorState) -> EmulatorApp:
    """Build the ASGI application for a state.

    :param state: the emulator state.
    :return: the ASGI app.
    """
    return EmulatorApp(state)
