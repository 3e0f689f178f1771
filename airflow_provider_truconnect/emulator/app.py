"""ASGI application of the emulator: routing only.

* ``POST /auth/realms/tru-staff/protocol/openid-connect/token`` at the host root ([DOC AUTH2] path; Keycloak
  behaviour [INFERRED]; :mod:`.tokens`).
* ``{api_prefix}/v2/...`` ([DOC] routes of docs/connect-api.md §7; :mod:`.handlers`).
* ``/__emulator/...`` the control plane (emulator-only, no auth; :mod:`.control`).

The API routes use a small segment router on the *raw* path so ids are percent-decoded segment by segment: a raw
``=`` and ``%3D`` both work, and an encoded ``%2F`` inside an id cannot split it
([INFERRED] docs/connect-api.md §4.4).

Around each API request the dispatcher runs, in order: the ``arrived`` pause point, faults before processing,
processing (authentication, correlation id check, rate limit, the handler) with the state lock held, faults after
processing, the ``answered`` pause point, recording, and sending the answer. Recording comes before sending, so a
client that has read its answer finds it in the stats. Each step that touches state first checks that the request
still belongs to the current state generation (:mod:`.inflight`); one that no longer does is dropped uncounted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_truconnect.emulator.control import control_app
from airflow_provider_truconnect.emulator.error_responses import (
    error_response,
    oauth_error_response,
    token_response,
)
from airflow_provider_truconnect.emulator.errors import ApiError, OAuthError, Problem
from airflow_provider_truconnect.emulator.fault_answers import Delivery, Exchange, Wire, plan_fault
from airflow_provider_truconnect.emulator.handlers import HANDLERS, Handler, RequestContext
from airflow_provider_truconnect.emulator.inflight import Ticket
from airflow_provider_truconnect.emulator.render import json_response
from airflow_provider_truconnect.emulator.routes import API_ROUTES, CONTROL_PREFIX, TOKEN_PATH, TOKEN_ROUTE
from airflow_provider_truconnect.emulator.state import EmulatorState

__all__ = ["CONTROL_PREFIX", "TOKEN_PATH", "TOKEN_ROUTE", "EmulatorApp", "create_app"]


@dataclass(frozen=True)
class _Route:
    method: str
    segments: tuple[str, ...]
    template: str
    handler: Handler


class _Stale(Exception):
    """The request's state generation ended (a reset) before it could act."""


class _ApiDispatcher:
    """Token endpoint + Connect API with stats, faults, auth, rate limiting and the error model around each route."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._by_len: dict[int, list[_Route]] = {}
        for method, path in API_ROUTES:
            template = f"{method} {path}"
            route = _Route(method, tuple(path.strip("/").split("/")), template, HANDLERS[template])
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

    def _resolve(self, method: str, path: str) -> tuple[str, _Route | None, dict[str, str]]:
        if path == TOKEN_PATH:
            return "token", None, {}
        prefix = self.state.config.api_prefix
        if path.startswith(prefix + "/"):
            segments = [unquote(s) for s in path[len(prefix) + 1 :].split("/")]
            route, params, path_matched = self._match(method, segments)
            if route is not None:
                return route.template, route, params
            if path_matched:
                return "method_not_allowed", None, {}
        return "unmatched", None, {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        method = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        raw_target = raw_path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        request = Request(scope, receive)
        correlation_id = request.headers.get("x-correlation-id")
        key, route, params = self._resolve(method, raw_path.decode("latin-1"))
        ticket = state.inflight.begin(key)
        ex = Exchange(scope, receive, Wire(send), ticket, state, key == "token", correlation_id)
        client_id: str | None = None
        recorded = False

        def record(status: int) -> None:
            state.record_request(
                TOKEN_ROUTE if key == "token" else key,
                status,
                raw_target,
                correlation_id,
                client_id,
                method,
                ticket=ticket,
            )

        try:
            await state.inflight.checkpoint(ticket, "arrived")
            with state.lock:
                self._check_current(ex)
                fault = state.fault_book.take(key, after=False)
            delivery = None if fault is None else await plan_fault(fault, ex)
            if delivery is None:
                body = await self._body(request, ticket) if method in ("POST", "PUT", "PATCH", "DELETE") else b""
                with state.lock:
                    self._check_current(ex)
                    if key == "token":
                        response = self._token(request, method, body)
                    else:
                        client_id, response = self._api(request, key, route, params, body, correlation_id)
                    fault = state.fault_book.take(key, after=True)
                ex.processed = response
                delivery = (None if fault is None else await plan_fault(fault, ex)) or Delivery(
                    response.status_code, response=response
                )
            await state.inflight.checkpoint(ticket, "answered")
            # Counted before it is sent: whoever has read the answer finds it in the stats.
            with state.lock:
                self._check_current(ex)
                record(delivery.status)
                recorded = True
            await delivery.send(ex)
        except _Stale:
            await ex.wire.abort()
        finally:
            if not recorded:
                record(0)  # a failure before the answer was decided (recorded only in the current generation)
            state.inflight.end(ticket)

    @staticmethod
    async def _body(request: Request, ticket: Ticket) -> bytes:
        # A client that never finishes sending its body must not hold a reset's drain.
        reading = asyncio.ensure_future(request.body())
        woken = asyncio.ensure_future(ticket.wait(None))
        try:
            await asyncio.wait((reading, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        if not reading.done():
            reading.cancel()
            raise _Stale
        return reading.result()

    def _check_current(self, ex: Exchange) -> None:
        if not self.state.is_current(ex.ticket):
            raise _Stale

    def _api(
        self,
        request: Request,
        key: str,
        route: _Route | None,
        params: dict[str, str],
        body: bytes,
        correlation_id: str | None,
    ) -> tuple[str | None, Response]:
        state = self.state
        scope = request.scope
        client_id: str | None = None
        try:
            if route is None:
                if key == "method_not_allowed":
                    raise ApiError(
                        405, "METHOD_NOT_ALLOWED", [f"Method {scope['method']} not allowed on {scope['path']}"]
                    )
                raise ApiError(404, "NOT_FOUND", [f"No route for {scope['method']} {scope['path']}"])
            client_id = state.token_server.authenticate(request.headers.get("authorization"))
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
            state.rate_limiter.check(client_id, key)
            host = request.headers.get("host") or "{}:{}".format(*scope.get("server", ("127.0.0.1", 80)))
            api_base = f"{scope['scheme']}://{host}{state.config.api_prefix}"
            ctx = RequestContext(request, params, client_id, correlation_id, api_base, body)
            return client_id, route.handler(state, ctx)
        except ApiError as exc:
            return client_id, error_response(state.config, exc, correlation_id)

    def _token(self, request: Request, method: str, body: bytes) -> Response:
        """[DOC AUTH2] form body; ``client_secret_post`` and ``client_secret_basic`` both work ([CODE]/[INFERRED])."""
        if method != "POST":
            return json_response({"error": "invalid_request", "error_description": "HTTP method not allowed"}, 405)
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
            return token_response(self.state.token_server.grant(form, basic))
        except OAuthError as exc:
            return oauth_error_response(exc)


class EmulatorApp:
    """The ASGI entry point: the control plane (Starlette) or the API dispatcher, which gets the server's own ``send``
    so a fault can reach the connection."""

    def __init__(self, state: EmulatorState) -> None:
        """:param state: the state to serve."""
        self.state = state
        self.control: ASGIApp = control_app(state)
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
