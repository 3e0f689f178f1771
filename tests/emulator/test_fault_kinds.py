"""Every kind of injected fault, checked on the wire (raw sockets) and through ``requests``.

The sweeps send each status from 100 to 599 before processing and after it (``after=True``: the order IS created, then
the fault replaces the answer), so a change that breaks one code is caught.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_truconnect.emulator.fault_answers import NOT_HTTP, TRUNCATED_FILLER
from airflow_provider_truconnect.emulator.server import RunningEmulator

if TYPE_CHECKING:
    from tests.emulator.conftest import Api

PRODUCTS = "GET /v2/products"
ORDERS = "POST /v2/orders"
NO_CONTENT = {204, 205, 304}


@dataclass
class Reply:
    """What came back on the connection, split at the first blank line (all of it in ``raw``)."""

    raw: bytes

    @property
    def head(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[0]

    @property
    def complete_head(self) -> bool:
        return b"\r\n\r\n" in self.raw

    @property
    def status(self) -> int:
        return int(self.raw.split(b" ", 2)[1])

    @property
    def headers(self) -> dict[str, str]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}

    @property
    def body(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[1]


def exchange(emu: RunningEmulator, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Reply:
    """Send one request with ``Connection: close`` on a fresh socket and read until the server closes it."""
    host, port = emu.url.rsplit("//", 1)[1].split(":")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return Reply(b"".join(chunks))


def auth(api: Api) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token()}"}


def activation(emu: RunningEmulator) -> dict[str, Any]:
    assert emu.state is not None
    product = next(p for p in emu.state.product_list if "ESIM" in p.sim_type)
    return {
        "operation_type": "ACTIVATION",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": product.id},
        "subscriber": {
            "email": "sweep@example.com",
            "first_name": "S",
            "last_name": "W",
            "country_of_residence": "GB",
            "device": {"operating_system": "ios", "model": "iPhone", "id": "1"},
        },
    }


def check_status_reply(reply: Reply, status: int, emu: RunningEmulator, processed: dict[str, Any] | None) -> None:
    assert reply.status == status, reply.raw[:200]
    assert reply.complete_head
    if status < 200:
        assert reply.body == b"", "an informational answer is written alone, then the connection closes"
        return
    headers = reply.headers
    if status in NO_CONTENT:
        assert reply.body == b"" and "content-type" not in headers
    if 300 <= status <= 399 and status != 304:
        assert headers["location"] == emu.api_base + "/v2/products"
        assert reply.body == b""
    elif 200 <= status <= 299 and status not in NO_CONTENT:
        assert json.loads(reply.body) == (processed or {})
    elif status >= 400:
        assert json.loads(reply.body) == {"type": _type(status), "messages": ["Injected fault"]}
    if status not in NO_CONTENT and not 100 <= status <= 199:
        assert int(headers["content-length"]) == len(reply.body)


def _type(status: int) -> str:
    return {
        400: "INVALID_REQUEST_PARAMS",
        401: "UNAUTHORISED",
        403: "ACCESS_DENIED",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        406: "UNACCEPTABLE",
        429: "TOO MANY REQUESTS",
    }.get(status, "INTERNAL_ERROR")


def test_every_status_before_processing(api: Api, emu: RunningEmulator) -> None:
    headers = auth(api)
    for status in range(100, 600):
        emu.control.add_fault(PRODUCTS, status=status)
        check_status_reply(exchange(emu, "GET", "/connect-api/v2/products", headers), status, emu, None)
    by_status = emu.control.stats()["requests_by_route"][PRODUCTS]
    assert by_status == {str(s): 1 for s in range(100, 600)}


def test_every_status_after_the_order_is_created(api: Api, emu: RunningEmulator) -> None:
    emu.control.set_config(rate_limit_per_minute=None)
    headers = {**auth(api), "Content-Type": "application/json"}
    body = json.dumps(activation(emu)).encode()
    answered_ids = []
    for status in range(100, 600):
        emu.control.add_fault(ORDERS, status=status, after=True)
        reply = exchange(emu, "POST", "/connect-api/v2/orders", headers, body)
        processed = None
        if 200 <= status <= 299 and status not in NO_CONTENT:
            processed = json.loads(reply.body)
            assert processed["status"] == "ACCEPTED"
            answered_ids.append(processed["id"])
        check_status_reply(reply, status, emu, processed)
    orders = emu.control.orders()
    assert len(orders) == 500  # every request was processed before its answer was replaced
    assert set(answered_ids) <= {o["id"] for o in orders} and len(set(answered_ids)) == 98


@pytest.mark.parametrize("status", [100, 101, 102, 103, 150, 199])
def test_informational_status_is_written_raw_then_closed(api: Api, emu: RunningEmulator, status: int) -> None:
    emu.control.add_fault(PRODUCTS, status=status, retry_after=4)
    reply = exchange(emu, "GET", "/connect-api/v2/products", auth(api))
    phrase = {100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints"}.get(status, "")
    assert reply.raw == f"HTTP/1.1 {status} {phrase}\r\nretry-after: 4\r\n\r\n".encode()


def test_token_endpoint_statuses(emu: RunningEmulator) -> None:
    form = f"grant_type=client_credentials&client_id={emu.client_id}&client_secret={emu.client_secret}".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    path = "/auth/realms/tru-staff/protocol/openid-connect/token"
    expected = {
        400: "invalid_grant",
        401: "invalid_client",
        418: "temporarily_unavailable",
        503: "temporarily_unavailable",
    }
    for status, error in expected.items():
        emu.control.add_fault("token", status=status)
        reply = exchange(emu, "POST", path, headers, form)
        assert reply.status == status and json.loads(reply.body)["error"] == error
    emu.control.add_fault("token", status=201, after=True)
    granted = exchange(emu, "POST", path, headers, form)
    assert granted.status == 201 and json.loads(granted.body)["access_token"] in emu.control.issued_tokens()
    emu.control.add_fault("token", status=101, after=True)
    assert exchange(emu, "POST", path, headers, form).raw == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    assert emu.control.stats()["token_grants_total"] == {"client_credentials": 2}


def test_unassigned_codes_have_an_empty_reason_phrase(api: Api, emu: RunningEmulator) -> None:
    for status in (299, 420, 520, 599):
        emu.control.add_fault(PRODUCTS, status=status)
        reply = exchange(emu, "GET", "/connect-api/v2/products", auth(api))
        assert reply.raw.startswith(f"HTTP/1.1 {status} \r\n".encode())


def test_redirect_location_and_requests_following_it(api: Api, emu: RunningEmulator) -> None:
    emu.control.add_fault(ORDERS, status=307, location="/connect-api/v2/orders/elsewhere")
    reply = exchange(emu, "POST", "/connect-api/v2/orders", auth(api), b"{}")
    assert reply.headers["location"] == emu.api_base + "/v2/orders/elsewhere"
    emu.control.add_fault(PRODUCTS, status=301, location="https://example.invalid/moved")
    assert exchange(emu, "GET", "/connect-api/v2/products", auth(api)).headers["location"] == (
        "https://example.invalid/moved"
    )
    emu.control.add_fault("GET /v2/products/{product_id}", status=302)
    followed = api.get("/v2/products/some-id")
    assert followed.status_code == 200 and [r.status_code for r in followed.history] == [302]
    assert followed.json()["_metadata"]["page"] == 1  # the list the default Location points at


def test_body_kinds_through_requests(api: Api, emu: RunningEmulator) -> None:
    emu.control.add_fault(PRODUCTS, body="text")
    text = api.get("/v2/products")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert text.text == "200 OK\n"
    with pytest.raises(ValueError):
        text.json()
    emu.control.add_fault(PRODUCTS, body="empty", status=202)
    empty = api.get("/v2/products")
    assert empty.status_code == 202 and empty.content == b"" and empty.headers["content-length"] == "0"
    assert empty.headers["content-type"] == "application/json"
    emu.control.add_fault(PRODUCTS, body="text", status=520)
    assert api.get("/v2/products").text == "520 Unknown Status\n"
    emu.control.add_fault(PRODUCTS, body="malformed", status=503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    malformed = api.get("/v2/products")
    assert malformed.status_code == 503 and malformed.headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    with pytest.raises(ValueError):
        malformed.json()


def test_truncated_body(api: Api, emu: RunningEmulator) -> None:
    emu.control.add_fault(PRODUCTS, body="truncated")
    reply = exchange(emu, "GET", "/connect-api/v2/products", auth(api))
    announced = int(reply.headers["content-length"])
    assert reply.status == 200 and announced == len(TRUNCATED_FILLER)
    assert reply.body == TRUNCATED_FILLER[: announced // 2]
    emu.control.add_fault(PRODUCTS, body="truncated")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.get("/v2/products")
    assert emu.control.stats()["requests_by_route"][PRODUCTS] == {"200": 2}


def test_truncated_answer_after_the_order_is_created(api: Api, emu: RunningEmulator) -> None:
    emu.control.add_fault(ORDERS, body="truncated", after=True, status=201)
    headers = {**auth(api), "Content-Type": "application/json"}
    reply = exchange(emu, "POST", "/connect-api/v2/orders", headers, json.dumps(activation(emu)).encode())
    (order,) = emu.control.orders()
    assert reply.status == 201 and len(reply.body) < int(reply.headers["content-length"])
    assert reply.body.startswith(b'{"id":"' + order["id"].encode() + b'"')


def test_bytes_that_are_not_http(api: Api, emu: RunningEmulator) -> None:
    emu.control.add_fault(PRODUCTS, raw="not_http")
    assert exchange(emu, "GET", "/connect-api/v2/products", auth(api)).raw == NOT_HTTP
    emu.control.add_fault(ORDERS, raw="not_http", after=True)
    with pytest.raises(requests.ConnectionError):
        api.post("/v2/orders", json=activation(emu))
    assert len(emu.control.orders()) == 1
    assert emu.control.wait_idle()
    stats = emu.control.stats()["requests_by_route"]
    assert stats[PRODUCTS] == {"0": 1} and stats[ORDERS] == {"0": 1}


def test_headers_that_never_end_until_the_client_gives_up(api: Api, emu: RunningEmulator) -> None:
    emu.control.add_fault(PRODUCTS, raw="headers_never_end")
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.session.get(emu.api_base + "/v2/products", headers=auth(api), timeout=(5, 0.3))
    api.session.close()  # the client leaves: the server notices and ends the request
    assert emu.control.wait_idle()
    assert emu.control.stats()["requests_by_route"][PRODUCTS] == {"0": 1}


def test_drop_after_the_token_is_issued(emu: RunningEmulator) -> None:
    emu.control.add_fault("token", drop=True, after=True)
    with pytest.raises(requests.ConnectionError):
        requests.post(
            emu.oauth_url,
            data={"grant_type": "client_credentials"},
            auth=(emu.client_id, emu.client_secret),
            timeout=10,
        )
    assert len(emu.control.issued_tokens()) == 2  # access and refresh token, never delivered
    assert emu.control.stats()["token_grants_total"] == {"client_credentials": 1}


def test_delay_then_status(api: Api, emu: RunningEmulator) -> None:
    emu.control.add_fault(PRODUCTS, delay=0.01, status=504)
    assert api.get("/v2/products").status_code == 504
    emu.control.add_fault(PRODUCTS, delay=0.01)
    assert api.get("/v2/products").status_code == 200


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"colour": "red", "status": 500}, "unknown fault field(s): colour"),
        ({"route": "GET /v2/nothing", "status": 500}, "route 'GET /v2/nothing' is not one of"),
        ({"status": 600}, "status must be an HTTP status code from 100 to 599"),
        ({"status": 99}, "status must be an HTTP status code from 100 to 599"),
        ({"status": True}, "status must be an integer"),
        ({"status": "500"}, "status must be an integer"),
        ({"body": "xml"}, "body must be one of malformed, html, text, empty, truncated"),
        ({"raw": "smoke"}, "raw must be one of not_http, headers_never_end"),
        ({"drop": True, "status": 500}, "drop sends no answer, so it takes no status"),
        ({"drop": "yes"}, "drop must be true or false"),
        ({"raw": "not_http", "body": "html"}, "raw=not_http is not an HTTP answer, so it takes no body"),
        ({"status": 103, "body": "text"}, "informational (1xx) and has no body"),
        ({"status": 304, "body": "empty"}, "a 304 answer has no content"),
        ({"status": 500, "location": "/x"}, "location only goes with a 3xx status"),
        ({"status": 302, "location": "ftp://x"}, "location must be a path starting with '/' or an http(s) URL"),
        ({"status": 302, "location": "/a b"}, "location must be one URL without spaces or line breaks"),
        ({"delay": -1}, "delay must be between 0 and 3600 seconds"),
        ({"delay": "1"}, "delay must be a finite number"),
        ({"status": 500, "count": 0}, "count must be a positive integer"),
        ({"status": 500, "fraction": 2}, "fraction must be between 0 and 1"),
        ({"status": 500, "after": "yes"}, "after must be true or false"),
        ({"status": 500, "retry_after": -1}, "retry_after must be >= 0"),
        ({"status": 500, "retry_after": "1\r\nX-Evil: 1"}, "retry_after text must be one non-empty header line"),
        ({"route": "*"}, "a fault needs at least one of status, body, raw, drop or delay"),
    ],
)
def test_bad_fault_descriptions_are_refused_with_the_reason(
    emu: RunningEmulator, spec: dict[str, Any], message: str
) -> None:
    response = requests.post(emu.url + "/__emulator/faults", json=spec, timeout=10)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert requests.get(emu.url + "/__emulator/faults", timeout=10).json() == []


def test_listing_shows_the_new_fields(emu: RunningEmulator) -> None:
    emu.control.add_fault(PRODUCTS, status=308, location="/connect-api/v2/sims/1", count=2)
    emu.control.add_fault(ORDERS, raw="headers_never_end", after=True)
    listed = requests.get(emu.url + "/__emulator/faults", timeout=10).json()
    assert [(f["status"], f["location"], f["raw"], f["count"], f["after"]) for f in listed] == [
        (308, "/connect-api/v2/sims/1", None, 2, False),
        (None, None, "headers_never_end", 1, True),
    ]
