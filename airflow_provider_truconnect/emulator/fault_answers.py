"""How an injected fault answers on the wire (the kinds are listed in :mod:`.faults`).

Answers an ASGI server can send go through ASGI. The others are written on the connection's transport, reached
through uvicorn's per-request cycle (its ``send`` is a bound method of the cycle, which holds the transport): an
informational (1xx) status as the final answer, a body shorter than its ``Content-Length``, bytes that are not HTTP,
headers that never end, and a dropped connection. After such an answer the cycle is marked disconnected, so uvicorn
adds nothing of its own (such as a 500) when the application returns.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from airflow_provider_truconnect.emulator.error_responses import injected_error
from airflow_provider_truconnect.emulator.faults import NO_CONTENT_STATUSES, Fault
from airflow_provider_truconnect.emulator.inflight import Ticket
from airflow_provider_truconnect.emulator.render import json_bytes
from airflow_provider_truconnect.emulator.state import EmulatorState

NOT_HTTP = b"SSH-2.0-OpenSSH_9.6\r\n"
MALFORMED_JSON = b'{"data": [ {"id": "trunc'
#: The whole body a ``truncated`` answer announces when the real one is too short to cut meaningfully.
TRUNCATED_FILLER = b'{"detail":"the emulator cuts this body short: only its first half is sent"}'
#: The longest an answer whose headers never end keeps the connection open, unless the client leaves or a reset or
#: the server's shutdown ends it first.
HOLD_LIMIT = 300.0
_HTML_GATEWAY = (
    "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n<center><h1>{status} Bad Gateway</h1>"
    "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class Wire:
    """The connection under one request."""

    def __init__(self, send: Send) -> None:
        """:param send: the server's own ``send`` for this request (not a wrapper)."""
        self.send = send
        self._cycle = getattr(send, "__self__", None)
        self.transport: asyncio.Transport | None = getattr(self._cycle, "transport", None)

    def _done(self) -> None:
        if self._cycle is not None and hasattr(self._cycle, "disconnected"):
            self._cycle.keep_alive = False
            self._cycle.disconnected = True

    async def abort(self) -> None:
        """Close the connection without any (further) bytes: the client sees a connection error, not an answer."""
        if self.transport is not None:
            self.transport.abort()
            self._done()
            return
        # Another server: promise a body that never comes, then fail the response.
        await self.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1048576")]})
        raise ConnectionAbortedError("injected connection drop")

    def write(self, data: bytes, *, close: bool = True) -> None:
        """Write bytes on the connection as they are.

        :param data: the bytes.
        :param close: close the connection once they are flushed.
        :raises RuntimeError: when the server does not expose its transport (only uvicorn is supported).
        """
        if self.transport is None:
            raise RuntimeError("raw fault answers need uvicorn's transport")
        self.transport.write(data)
        if close:
            self.transport.close()
            self._done()


@dataclass
class Exchange:
    """One request as the dispatcher and the fault answers see it."""

    scope: Scope
    receive: Receive
    wire: Wire
    ticket: Ticket
    state: EmulatorState
    is_token: bool
    correlation_id: str | None
    processed: Response | None = None
    headers: dict[str, str] = field(default_factory=dict)


def status_line(status: int) -> bytes:
    """:param status: any code from 100 to 599. :return: its HTTP/1.1 status line (empty reason if unassigned)."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def _head(status: int, headers: dict[str, str]) -> bytes:
    return status_line(status) + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())


def _retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value) if float(value).is_integer() else value)


def _location(fault: Fault, ex: Exchange) -> str:
    scope = ex.scope
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
    if host is None:
        host = "{}:{}".format(*scope.get("server", ("127.0.0.1", 80)))
    target = fault.location or f"{ex.state.config.api_prefix}/v2/products"
    return target if target.startswith(("http://", "https://")) else f"{scope['scheme']}://{host}{target}"


def build_answer(fault: Fault, ex: Exchange) -> Response:
    """The HTTP answer of a ``status``/``body`` fault, before any raw treatment.

    :param fault: the fault.
    :param ex: the request (with the processed response when the fault applies after processing).
    :return: the response.
    """
    status = fault.effective_status
    headers = dict(ex.headers)
    if fault.retry_after is not None:
        headers["Retry-After"] = _retry_after(fault.retry_after)
    if 300 <= status <= 399 and status != 304:
        headers["Location"] = _location(fault, ex)
    if status < 200 or status in NO_CONTENT_STATUSES:
        return Response(b"", status, headers)
    if fault.body == "malformed":
        return Response(MALFORMED_JSON, status, headers, media_type="application/json")
    if fault.body == "html":
        return Response(_HTML_GATEWAY.format(status=status), status, headers, media_type="text/html")
    if fault.body == "text":
        phrase = status_line(status).decode("latin-1").split(" ", 2)[2].strip() or "Unknown Status"
        return Response(f"{status} {phrase}\n", status, headers, media_type="text/plain")
    if fault.body == "empty":
        return Response(b"", status, {**headers, "Content-Length": "0"}, media_type="application/json")
    if 200 <= status <= 299:
        processed = ex.processed
        if processed is not None:
            return Response(processed.body, status, headers, media_type=processed.media_type or "application/json")
        return Response(json_bytes({}), status, headers, media_type="application/json")
    if 300 <= status <= 399:
        return Response(b"", status, headers)
    return injected_error(ex.state.config, status, ex.is_token, headers, ex.correlation_id)


@dataclass
class Delivery:
    """An answer that is decided but not sent yet, and the status the stats count it under (0: no HTTP answer)."""

    status: int
    response: Response | None = None
    raw: bytes | None = None
    hold: bool = False

    async def send(self, ex: Exchange) -> None:
        """Put the answer on the wire.

        :param ex: the request.
        """
        if self.response is not None:
            await self.response(ex.scope, ex.receive, ex.wire.send)
        elif self.raw is None:
            await ex.wire.abort()
        elif self.hold:
            ex.wire.write(self.raw, close=False)
            await _hold(ex)
            await ex.wire.abort()
        else:
            ex.wire.write(self.raw)


async def plan_fault(fault: Fault, ex: Exchange) -> Delivery | None:
    """Wait out a fault's delay, then decide its answer.

    :param fault: the fault.
    :param ex: the request (with the processed response when the fault applies after processing).
    :return: the answer, or None when the fault only delayed the request and it goes on normally.
    """
    if fault.delay and await ex.ticket.wait(fault.delay):
        # A reset (or the server's shutdown) ended the wait: the dispatcher finds the request stale and drops it.
        return Delivery(0)
    if not fault.answers:
        return None
    if fault.drop:
        return Delivery(0)
    if fault.raw == "not_http":
        return Delivery(0, raw=NOT_HTTP)
    if fault.raw == "headers_never_end":
        return Delivery(0, raw=status_line(200) + b"Content-Type: application/json\r\n", hold=True)
    response = build_answer(fault, ex)
    status = response.status_code
    if status < 200:
        return Delivery(status, raw=_head(status, dict(response.headers)) + b"\r\n")
    if fault.body == "truncated":
        return Delivery(status, raw=_truncated(response))
    return Delivery(status, response=response)


def _truncated(response: Response) -> bytes:
    body = bytes(response.body)
    if len(body) < len(TRUNCATED_FILLER):
        body = TRUNCATED_FILLER
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    headers["content-length"] = str(len(body))
    return _head(response.status_code, headers) + b"\r\n" + body[: len(body) // 2]


async def _hold(ex: Exchange) -> None:
    async def client_left() -> None:
        while (await ex.receive())["type"] != "http.disconnect":
            pass

    tasks: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(client_left()),
        asyncio.ensure_future(ex.ticket.wait(HOLD_LIMIT)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
