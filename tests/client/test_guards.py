"""The client rules that guard money and secrets, each asserted so that breaking it fails a test (issue 11).

* a connect timeout proves the request never left (``sent=False``), so even an order POST may be retried, while a read
  timeout does not;
* ``join_link`` joins a link that already carries the API prefix to the origin, not to the base, and recognises the
  prefix only as a whole path segment;
* ``TokenCache.invalidate`` is a compare-and-swap: a 401 answered to an old token never discards a newer one;
* valid extra headers reach the server, on both transports.

The socket-level twins of the first and third rules (a real connect timeout against a port that does not answer, and a
stale token against the emulator) are in ``tests/reliability/test_reliability_guards.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import email.utils
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient
from airflow_provider_truconnect.client.auth import TokenManager
from airflow_provider_truconnect.client.client import TruConnectClient
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.core import USER_AGENT, check_header, outcome_unknown
from airflow_provider_truconnect.client.errors import (
    TruConnectAuthError,
    TruConnectClientError,
    TruConnectConfigError,
    TruConnectConnectionError,
    TruConnectError,
    TruConnectNotFoundError,
    TruConnectOrderFailedError,
    TruConnectOrderUncertainError,
    TruConnectPaginationError,
    TruConnectRateLimitError,
    TruConnectServerError,
    TruConnectUncertainError,
)
from airflow_provider_truconnect.client.models import activation_codes, order_summary
from airflow_provider_truconnect.client.pagination import join_link, next_link
from airflow_provider_truconnect.client.responses import error_for_response
from airflow_provider_truconnect.client.retry import RetryPolicy, parse_retry_after
from airflow_provider_truconnect.client.tls import resolve_trust, tls_error
from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.client.tokens import Token
from tests.stub_http import JsonHandler, serving

BASE = "https://api.example.com/connect-api"
KEY = ("https://api.example.com/token", "client", "", "digest")


# ------------------------------------------------------------------------------------- connect timeout: not sent
ORDER = {
    "operation_type": "ACTIVATION",
    "sim_type": "ESIM",
    "country": "GB",
    "product": {"id": "p-1"},
    "subscriber": {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "country_of_residence": "GB",
        "device": {"operating_system": "ios", "model": "iPhone", "id": "1"},
    },
}
TOKEN_BODY = {"access_token": "access-1", "token_type": "Bearer", "expires_in": 300}


def _order_config() -> ClientConfig:
    return ClientConfig(
        client_id="id", client_secret="secret", api_base=BASE, oauth_url="https://api.example.com/token"
    )


def _response(status: int, body: dict[str, Any]) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.headers["Content-Type"] = "application/json"
    resp._content = json.dumps(body).encode()
    return resp


class SyncTransport:
    """Stands in for ``requests.Session.request``: answers the token endpoint, fails the first order POSTs."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.order_posts = 0

    def __call__(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        if url.endswith("/token"):
            return _response(200, TOKEN_BODY)
        assert (method, url) == ("POST", f"{BASE}/v2/orders")
        self.order_posts += 1
        if self.failures:
            raise self.failures.pop(0)
        return _response(201, {"id": "o-1", "status": "ACCEPTED"})


class AsyncTransport:
    """The same for httpx, as an ``httpx.MockTransport`` handler."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.order_posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json=TOKEN_BODY)
        assert (request.method, str(request.url)) == ("POST", f"{BASE}/v2/orders")
        self.order_posts += 1
        if self.failures:
            raise self.failures.pop(0)
        return httpx.Response(201, json={"id": "o-1", "status": "ACCEPTED"})


def _place_order(mode: str, failures: list[Exception], mocker: Any) -> tuple[Any, int, list[float]]:
    """Place ``ORDER`` through the sync or async client over a fake transport; returns (result or error, order POSTs
    sent, retry waits)."""
    waits: list[float] = []

    async def asleep(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(max_retries=2, sleep=waits.append, asleep=asleep)
    if mode == "sync":
        transport: SyncTransport | AsyncTransport = SyncTransport(failures)
        client = TruConnectClient(_order_config(), token_cache=TokenCache(), retry_policy=policy)
        mocker.patch.object(client.session, "request", side_effect=transport)
        try:
            result: Any = client.request("POST", "/v2/orders", json=ORDER)
        except Exception as exc:
            result = exc
        finally:
            client.close()
        return result, transport.order_posts, waits

    transport = AsyncTransport(failures)

    async def place() -> Any:
        http = httpx.AsyncClient(transport=httpx.MockTransport(transport))
        async with AsyncTruConnectClient(
            _order_config(), http_client=http, token_cache=TokenCache(), retry_policy=policy
        ) as client:
            try:
                return await client.request("POST", "/v2/orders", json=ORDER)
            except Exception as exc:
                return exc
            finally:
                await http.aclose()

    return asyncio.run(place()), transport.order_posts, waits


def _connect_timeout(mode: str) -> Exception:
    return requests.exceptions.ConnectTimeout("connect timed out") if mode == "sync" else httpx.ConnectTimeout("x")


def _read_timeout(mode: str) -> Exception:
    return requests.exceptions.ReadTimeout("read timed out") if mode == "sync" else httpx.ReadTimeout("x")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_order_post_that_hit_a_connect_timeout_is_sent_again(mode: str, mocker: Any) -> None:
    result, posts, waits = _place_order(mode, [_connect_timeout(mode)], mocker)
    assert result == {"id": "o-1", "status": "ACCEPTED"}
    assert posts == 2 and len(waits) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_connect_timeout_for_good_is_a_connection_error_not_an_uncertain_order(mode: str, mocker: Any) -> None:
    result, posts, waits = _place_order(mode, [_connect_timeout(mode) for _ in range(3)], mocker)
    assert type(result) is TruConnectConnectionError
    assert str(result).startswith("POST /connect-api/v2/orders: connect timeout")
    assert result.sent is False and result.retryable and not outcome_unknown(result)
    assert result.correlation_id
    assert posts == 3 and len(waits) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_order_post_that_hit_a_read_timeout_is_not_sent_again(mode: str, mocker: Any) -> None:
    result, posts, waits = _place_order(mode, [_read_timeout(mode)], mocker)
    assert isinstance(result, TruConnectOrderUncertainError)
    assert "read timeout" in str(result) and "MAY have been created" in str(result)
    assert posts == 1 and waits == []


# ------------------------------------------------------------------------------------------------- join_link
@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("/connect-api/v2/subscriptions?page=2", f"{BASE}/v2/subscriptions?page=2"),
        ("connect-api/v2/subscriptions?page=2", f"{BASE}/v2/subscriptions?page=2"),
        ("/connect-api", BASE),
        ("/v2/subscriptions?page=2", f"{BASE}/v2/subscriptions?page=2"),
        ("v2/subscriptions", f"{BASE}/v2/subscriptions"),
        # Only a whole path segment is the prefix: these are paths below the base.
        ("/connect-apix/v2/subscriptions", f"{BASE}/connect-apix/v2/subscriptions"),
        ("/connect/v2/subscriptions", f"{BASE}/connect/v2/subscriptions"),
        ("{BASE_URL}/v2/subscriptions?page=3", f"{BASE}/v2/subscriptions?page=3"),
        ("{BASE_URL}v2/subscriptions", f"{BASE}/v2/subscriptions"),
        ("  /v2/x  ", f"{BASE}/v2/x"),
        (f"{BASE}/v2/subscriptions?page=4", f"{BASE}/v2/subscriptions?page=4"),
        ("https://API.example.com:443/connect-api/v2/x", "https://API.example.com:443/connect-api/v2/x"),
        # A URL in the query string does not make a link absolute.
        ("/v2/x?next=https://evil.example/", f"{BASE}/v2/x?next=https://evil.example/"),
    ],
)
def test_join_link_keeps_the_api_prefix_once(link: str, expected: str) -> None:
    assert join_link(BASE, link) == expected
    assert join_link(BASE + "/", link) == expected


def test_join_link_on_a_base_without_a_path_prefixes_nothing() -> None:
    assert join_link("https://api.example.com", "/v2/x?page=2") == "https://api.example.com/v2/x?page=2"
    assert join_link("https://api.example.com/", "v2/x") == "https://api.example.com/v2/x"


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("https://evil.example/connect-api/v2/x", "another origin"),
        ("http://api.example.com/connect-api/v2/x", "another origin"),  # same host, other scheme
        ("https://api.example.com:8443/connect-api/v2/x", "another origin"),  # same host, other port
        ("//evil.example/connect-api/v2/x", "another origin"),  # scheme-relative
        ("https://api.example.com:99999/v2/x", "not a valid URL"),
        ("http://[::1/v2/x", "not a valid URL"),
        ("", "Empty"),
        ("   ", "Empty"),
    ],
)
def test_join_link_refuses_to_send_credentials_elsewhere(link: str, reason: str) -> None:
    with pytest.raises(TruConnectPaginationError) as info:
        join_link(BASE, link)
    assert reason in str(info.value)


def test_the_client_joins_endpoints_with_join_link() -> None:
    client = TruConnectClient(ClientConfig(client_id="id", client_secret="secret", api_base=BASE))
    try:
        assert client.url_for("/connect-api/v2/sims/1") == f"{BASE}/v2/sims/1"
        assert client.url_for("/v2/sims/1") == f"{BASE}/v2/sims/1"
    finally:
        client.close()


# ------------------------------------------------------------------------------------ token cache: compare-and-swap
def token(value: str, *, obtained_at: float = 1_000.0, lifetime: float = 300.0, refresh: str | None = None) -> Token:
    return Token(
        access_token=value,
        token_type="Bearer",
        obtained_at=obtained_at,
        expires_at=obtained_at + lifetime,
        refresh_token=refresh,
        refresh_expires_at=obtained_at + 1800 if refresh else None,
    )


def test_invalidating_an_old_token_leaves_the_newer_one_alone() -> None:
    cache = TokenCache()
    newer = token("token-B", refresh="refresh-B")
    cache.put(KEY, newer)
    cache.invalidate(KEY, "token-A")  # a late 401 for the token that newer replaced
    kept = cache.get(KEY)
    assert kept is newer and kept.is_fresh(1_001.0)
    assert cache.was_rejected(KEY, "token-A") and not cache.was_rejected(KEY, "token-B")


def test_invalidating_the_current_token_expires_it_but_keeps_its_refresh_token() -> None:
    cache = TokenCache()
    cache.put(KEY, token("token-B", refresh="refresh-B"))
    cache.invalidate(KEY, "token-B")
    expired = cache.get(KEY)
    assert expired is not None and not expired.is_fresh(1_001.0)
    assert expired.access_token == "token-B" and expired.refresh_token == "refresh-B"
    assert expired.can_refresh(1_001.0)
    assert cache.was_rejected(KEY, "token-B")


def test_invalidating_without_a_token_expires_whatever_is_cached() -> None:
    cache = TokenCache()
    cache.put(KEY, token("token-B"))
    cache.invalidate(KEY)
    expired = cache.get(KEY)
    assert expired is not None and expired.access_token == "token-B" and not expired.is_fresh(1_001.0)
    assert not cache.was_rejected(KEY, "token-B")
    cache.invalidate(("other", "key", "", "x"), "token-B")  # nothing cached there: nothing to do
    assert cache.get(("other", "key", "", "x")) is None


def test_a_401_seen_by_one_thread_after_another_renewed_keeps_the_renewal() -> None:
    # Thread 1 sends with token A; thread 2 meanwhile sees A rejected and renews to B; then thread 1's 401 for A
    # arrives. Without the compare-and-swap, thread 1 would throw B away and every thread would renew again.
    now = [1_000.0]
    config = ClientConfig(client_id="id", client_secret="secret", api_base=BASE)
    cache = TokenCache()
    issued: list[str] = []

    def fetch(grant: Any, previous: Token | None) -> Token:
        issued.append(f"token-{len(issued) + 1}")
        return token(issued[-1], obtained_at=now[0])

    manager = TokenManager(config, cache=cache, clock=lambda: now[0])
    first = manager.get_token(fetch)
    sent = threading.Event()
    renewed = threading.Event()
    seen: dict[str, Token] = {}

    def thread_1() -> None:
        seen["sent with"] = manager.get_token(fetch)
        sent.set()
        assert renewed.wait(10)
        manager.invalidate(seen["sent with"])  # its 401 arrives late

    def thread_2() -> None:
        assert sent.wait(10)
        manager.invalidate(first)
        seen["renewed"] = manager.get_token(fetch)
        renewed.set()

    threads = [threading.Thread(target=thread_1), threading.Thread(target=thread_2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen["sent with"].access_token == "token-1"
    assert seen["renewed"].access_token == "token-2"
    after = manager.get_token(fetch)
    assert after.access_token == "token-2" and issued == ["token-1", "token-2"]


# ------------------------------------------------------------------------------------------- extra headers
class _Recorder(JsonHandler):
    """Answers the token endpoint and ``GET /connect-api/v2/echo``, recording every request's headers."""

    seen: list[tuple[str, str, dict[str, str]]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append(("POST", self.path, dict(self.headers.items())))
        self.answer_token("recorder-token")

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path, dict(self.headers.items())))
        self.answer_json(200, {"ok": True})


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    seen: list[tuple[str, str, dict[str, str]]] = []
    with serving(type("Recorder", (_Recorder,), {"seen": seen})) as url:
        yield url, seen


def _config(url: str) -> ClientConfig:
    return ClientConfig(
        client_id="id", client_secret="secret", api_base=f"{url}/connect-api", oauth_url=f"{url}/token", max_retries=0
    )


EXTRA = {"X-Partner-Ref": "batch-7\tretry", "If-None-Match": '"v1"', "x-lower": "kept"}


def _api_headers(seen: list[tuple[str, str, dict[str, str]]]) -> dict[str, str]:
    api = [headers for method, path, headers in seen if path.startswith("/connect-api/v2/echo")]
    assert len(api) == 1
    return {name.lower(): value for name, value in api[0].items()}


def _check_sent(headers: dict[str, str]) -> None:
    assert headers["x-partner-ref"] == "batch-7\tretry"
    assert headers["if-none-match"] == '"v1"'
    assert headers["x-lower"] == "kept"
    # The client's own headers are still there next to the caller's.
    assert headers["authorization"] == "Bearer recorder-token"
    assert headers["user-agent"] == USER_AGENT
    assert headers["accept"] == "application/json"
    assert headers["x-correlation-id"]


def test_valid_extra_headers_reach_the_server_sync(
    recorder: tuple[str, list[tuple[str, str, dict[str, str]]]],
) -> None:
    url, seen = recorder
    with TruConnectClient(_config(url), token_cache=TokenCache()) as client:
        assert client.request("GET", "/v2/echo", headers=EXTRA) == {"ok": True}
    _check_sent(_api_headers(seen))


def test_valid_extra_headers_reach_the_server_async(
    recorder: tuple[str, list[tuple[str, str, dict[str, str]]]],
) -> None:
    url, seen = recorder

    async def call() -> Any:
        async with AsyncTruConnectClient(_config(url), token_cache=TokenCache()) as client:
            return await client.request("GET", "/v2/echo", headers=EXTRA)

    assert asyncio.run(call()) == {"ok": True}
    _check_sent(_api_headers(seen))


def test_base_headers_add_the_callers_headers_after_checking_them() -> None:
    client = TruConnectClient(ClientConfig(client_id="id", client_secret="secret", api_base=BASE))
    try:
        headers = client.base_headers("cid-1", {"X-Partner-Ref": "p-1"}, has_body=True)
        assert headers == {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "X-Correlation-ID": "cid-1",
            "Content-Type": "application/json",
            "X-Partner-Ref": "p-1",
        }
        assert "Content-Type" not in client.base_headers("cid-2", None, has_body=False)
        with pytest.raises(TruConnectConfigError) as info:
            client.base_headers("cid-3", {"X-Ok": "1", "Bad Name": "v"}, has_body=False)
        assert info.value.field.startswith("headers.")
    finally:
        client.close()


# ------------------------------------------------------------------------------- activation codes: opt-in only
ORDER_RESOURCE = {
    "id": "o-1",
    "status": "completed",
    "output": {
        "iccid": "8944000000000000001",
        "subscription_id": "s-1",
        "matching_id": "MATCH-1",
        "data": {"code": "VOUCHER-1"},
    },
    "_metadata": {"links": {"_lpa": "1$rsp.truphone.com$MATCH-1", "_qrcode": "https://qr.example/1.png"}},
}


def test_an_order_summary_leaves_the_activation_codes_out_by_default() -> None:
    assert order_summary(ORDER_RESOURCE) == {
        "order_id": "o-1",
        "status": "COMPLETED",
        "iccid": "8944000000000000001",
        "subscription_id": "s-1",
    }


def test_an_order_summary_has_the_activation_codes_when_asked() -> None:
    assert order_summary(ORDER_RESOURCE, include_activation_codes=True) == {
        "order_id": "o-1",
        "status": "COMPLETED",
        "iccid": "8944000000000000001",
        "subscription_id": "s-1",
        "matching_id": "MATCH-1",
        "lpa": "LPA:1$rsp.truphone.com$MATCH-1",
        "qr_code_url": "https://qr.example/1.png",
        "voucher_code": "VOUCHER-1",
    }


def test_an_order_summary_drops_what_the_order_lacks() -> None:
    assert order_summary({"id": "o-2", "status": "ACCEPTED"}) == {"order_id": "o-2", "status": "ACCEPTED"}
    assert order_summary({"id": "o-3", "status": "FULFILLING", "output": ["not", "a", "mapping"]}) == {
        "order_id": "o-3",
        "status": "FULFILLING",
    }
    assert order_summary({"status": "nonsense"}, include_activation_codes=True) == {"status": "UNKNOWN"}


def test_an_lpa_is_derived_from_the_matching_id_when_the_link_is_missing() -> None:
    order = {"id": "o-4", "status": "COMPLETED", "output": {"matching_id": "MATCH-4"}}
    summary = order_summary(order, include_activation_codes=True)
    assert summary["lpa"] == "LPA:1$rsp.truphone.com$MATCH-4" and summary["matching_id"] == "MATCH-4"
    assert set(activation_codes(order)) == {"MATCH-4", "LPA:1$rsp.truphone.com$MATCH-4", "1$rsp.truphone.com$MATCH-4"}


def test_every_activation_code_is_found_for_masking() -> None:
    assert set(activation_codes(ORDER_RESOURCE)) == {
        "MATCH-1",
        "LPA:1$rsp.truphone.com$MATCH-1",
        "1$rsp.truphone.com$MATCH-1",
        "https://qr.example/1.png",
        "VOUCHER-1",
    }
    assert activation_codes(["not", "a", "resource"]) == []
    assert activation_codes({"id": "o-5", "status": "ACCEPTED"}) == []


# ------------------------------------------------------------------------------ pagination: same origin, ports
@pytest.mark.parametrize(
    ("base", "link"),
    [
        ("http://api.example.com/connect-api", "http://api.example.com:80/connect-api/v2/x"),
        ("http://api.example.com:80/connect-api", "http://API.example.com/connect-api/v2/x"),
        ("https://api.example.com:443/connect-api", "https://api.example.com/connect-api/v2/x"),
    ],
)
def test_default_ports_are_the_same_origin(base: str, link: str) -> None:
    assert join_link(base, link) == link


def test_an_invalid_link_is_named_without_its_text() -> None:
    with pytest.raises(TruConnectPaginationError) as info:
        join_link(BASE, "https://api.example.com:99999/v2/x?token=s3cret")
    assert info.value.message == "Pagination link is not a valid URL"
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("link", ["", "   ", None, 7, ["/v2/x"]])
def test_a_blank_or_odd_next_link_ends_the_pagination(link: Any) -> None:
    assert next_link({"data": [1], "_metadata": {"links": {"_next": link}}}) is None


# --------------------------------------------------------------------------------------- header check messages
@pytest.mark.parametrize(
    ("name", "value", "field", "problem"),
    [
        ("Bad Name", "v", "headers.'Bad Name'", "is not a valid header name (letters, digits, '-')"),
        ("authorization", "Bearer x", "headers.Authorization", "is set by the hook; do not pass it"),
        ("X-Number", 7, "headers.X-Number", "must be a string, got int"),
        (
            "X-Line",
            "a\r\nInjected: 1",
            "headers.X-Line",
            "must be printable ASCII without line breaks (CR/LF) or other control characters",
        ),
    ],
)
def test_header_errors_name_the_header_and_the_problem(name: str, value: Any, field: str, problem: str) -> None:
    with pytest.raises(TruConnectConfigError) as info:
        check_header(name, value)
    assert info.value.field == field
    assert info.value.message == f"Invalid {field}: {problem}"
    if isinstance(value, str) and value != "v":
        assert value not in str(info.value)  # header values may be secret


def test_a_long_bad_header_name_is_cut_in_the_error() -> None:
    name = "Bad Name " + "x" * 200
    with pytest.raises(TruConnectConfigError) as info:
        check_header(name, "v")
    assert info.value.field == f"headers.{name!r}"[:80] and len(info.value.field) == 80


# ------------------------------------------------------------------------------------------- errors and TLS
def test_an_order_failed_error_carries_the_order() -> None:
    err = TruConnectOrderFailedError("Order o-1 FAILED", order_id="o-1", error_type="ORDER_FAILED", messages=["x"])
    assert err.order_id == "o-1" and err.error_type == "ORDER_FAILED" and err.messages == ("x",)
    assert err.message == "Order o-1 FAILED" and not err.retryable


def test_a_refused_certificate_is_unsent_and_names_its_trust() -> None:
    trust = resolve_trust(True)
    try:
        raise ssl.SSLCertVerificationError(1, "certificate verify failed")
    except ssl.SSLError as cause:
        refused = tls_error(cause, "POST /connect-api/v2/orders", trust, "cid-9")
    assert refused.message == (
        "POST /connect-api/v2/orders: the server's certificate is not trusted (trust from extra.verify_ssl; set the "
        "connection's verify_ssl to a CA bundle path to trust a private CA)"
    )
    assert refused.sent is False and not refused.retryable and refused.correlation_id == "cid-9"
    other = tls_error(ssl.SSLEOFError(8, "EOF"), "POST /connect-api/v2/orders", trust, "cid-10")
    assert other.message.startswith("POST /connect-api/v2/orders: TLS failed (SSLEOFError) (trust from")
    assert other.sent is True and not other.retryable and other.correlation_id == "cid-10"


def test_an_order_that_is_not_an_object_is_named_in_the_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json=TOKEN_BODY)
        return httpx.Response(200, json=["not", "an", "order"])

    async def fetch() -> Exception:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        config = ClientConfig(
            client_id="id", client_secret="secret", api_base=BASE, oauth_url="https://api.example.com/token"
        )
        async with AsyncTruConnectClient(
            config, http_client=http, token_cache=TokenCache(), retry_policy=RetryPolicy(max_retries=0)
        ) as client:
            try:
                await client.get_order("o-1")
            except Exception as exc:
                return exc
            finally:
                await http.aclose()
        raise AssertionError("no error")

    err = asyncio.run(fetch())
    assert isinstance(err, TruConnectServerError) and err.retryable
    assert err.message == "GET /v2/orders/o-1 answered with a JSON list where a resource was expected"


# ----------------------------------------------------------------------------------- activation codes, odd shapes
def test_the_lpa_link_wins_over_the_matching_id() -> None:
    order = {
        "id": "o-6",
        "status": "COMPLETED",
        "matching_id": "TOP-LEVEL-6",
        "output": {},
        "_metadata": {"links": {"_lpa": "1$smdp.example.com$ACT-6"}},
    }
    summary = order_summary(order, include_activation_codes=True)
    assert summary["lpa"] == "LPA:1$smdp.example.com$ACT-6"
    assert summary["matching_id"] == "TOP-LEVEL-6"  # the order resource's own field when the output has none
    assert set(activation_codes(order)) == {
        "TOP-LEVEL-6",
        "LPA:1$smdp.example.com$ACT-6",
        "1$smdp.example.com$ACT-6",
    }


@pytest.mark.parametrize(
    "order",
    [
        {"id": "o-7", "status": "COMPLETED", "output": {"matching_id": 12345, "data": {"code": 678}}},
        {"id": "o-8", "status": "COMPLETED", "_metadata": {"links": {"_lpa": 12345, "_qrcode": ["x"]}}},
        {"id": "o-9", "status": "COMPLETED", "output": {"matching_id": ""}, "_metadata": {"links": {"_lpa": ""}}},
    ],
)
def test_activation_fields_that_are_not_text_are_no_codes(order: dict[str, Any]) -> None:
    assert activation_codes(order) == []
    assert "lpa" not in order_summary(order, include_activation_codes=True)


# ---------------------------------------------------------------------- what proves a request unsent (requests)
def _dns_failure() -> requests.exceptions.ConnectionError:
    import socket

    import urllib3

    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as cause:
            raise urllib3.exceptions.NewConnectionError(
                urllib3.connection.HTTPConnection("api.example.com"), "Failed to resolve 'api.example.com'"
            ) from cause
    except urllib3.exceptions.NewConnectionError as new:
        reason = new
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/v2/orders", reason=reason))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "failure",
    [_dns_failure, lambda: requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused"))],
    ids=["dns", "refused"],
)
def test_an_order_post_that_provably_never_left_is_sent_again(failure: Any, mocker: Any) -> None:
    result, posts, waits = _place_order("sync", [failure()], mocker)
    assert result == {"id": "o-1", "status": "ACCEPTED"}
    assert posts == 2 and len(waits) == 1


def test_a_connection_that_broke_after_sending_is_not_sent_again(mocker: Any) -> None:
    result, posts, waits = _place_order("sync", [requests.exceptions.ConnectionError("Connection reset")], mocker)
    assert isinstance(result, TruConnectOrderUncertainError) and posts == 1 and waits == []


def _failing_client(exc: Exception, mocker: Any) -> TruConnectClient:
    client = TruConnectClient(_order_config(), token_cache=TokenCache(), retry_policy=RetryPolicy(max_retries=0))

    def send(method: str, url: str, **kwargs: Any) -> requests.Response:
        if url.endswith("/token"):
            return _response(200, TOKEN_BODY)
        raise exc

    mocker.patch.object(client.session, "request", side_effect=send)
    return client


def test_a_refused_certificate_names_the_request_and_its_correlation_id(mocker: Any) -> None:
    try:
        raise ssl.SSLCertVerificationError(1, "certificate verify failed")
    except ssl.SSLError as cause:
        try:
            raise requests.exceptions.SSLError("certificate verify failed") from cause
        except requests.exceptions.SSLError as wrapped:
            exc = wrapped
    client = _failing_client(exc, mocker)
    with pytest.raises(TruConnectConnectionError) as info:
        client.request("GET", "/v2/sims/1", correlation_id="cid-tls")
    client.close()
    assert info.value.message.startswith("GET /connect-api/v2/sims/1: the server's certificate is not trusted")
    assert info.value.correlation_id == "cid-tls" and info.value.sent is False and not info.value.retryable


def test_a_request_that_cannot_be_built_names_the_request(mocker: Any) -> None:
    client = _failing_client(requests.exceptions.InvalidURL("bad"), mocker)
    with pytest.raises(TruConnectConfigError) as info:
        client.request("GET", "/v2/sims/1")
    client.close()
    assert info.value.field == "url"
    assert info.value.message == "Invalid url: GET /connect-api/v2/sims/1: the URL cannot be requested (InvalidURL)"


# ------------------------------------------------------------------------------- the retry budget and its log
class _Fails:
    """An attempt that always fails with the given error, counting its calls."""

    def __init__(self, exc: TruConnectError) -> None:
        self.exc = exc
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        raise self.exc


@pytest.mark.parametrize(
    ("max_total_wait", "waits"),
    [(45.0, [20.0, 20.0]), (40.0, [20.0, 20.0]), (39.0, [20.0])],
)
def test_retry_after_hints_count_against_the_total_wait(max_total_wait: float, waits: list[float]) -> None:
    slept: list[float] = []
    policy = RetryPolicy(max_retries=10, max_retry_after=20.0, max_total_wait=max_total_wait, sleep=slept.append)
    attempt = _Fails(TruConnectRateLimitError("GET /x rate limited", status_code=429, retry_after=20.0))
    with pytest.raises(TruConnectRateLimitError):
        policy.call(attempt, idempotent=True, describe="GET /x")
    assert slept == waits and attempt.calls == len(waits) + 1


def test_retries_wait_as_long_as_the_server_asks_and_say_so(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    policy = RetryPolicy(max_retries=2, sleep=slept.append)
    exc = TruConnectRateLimitError("GET /x rate limited", status_code=429, retry_after=3.0)
    caplog.set_level(logging.WARNING, logger="airflow_provider_truconnect.client.retry")
    with pytest.raises(TruConnectRateLimitError):
        policy.call(_Fails(exc), idempotent=True, describe="GET /x")
    assert slept == [3.0, 3.0]
    lines = [r.getMessage() for r in caplog.records if r.name == "airflow_provider_truconnect.client.retry"]
    assert lines == [
        f"GET /x failed (attempt 1 of 3): {exc}; retrying in 3.00 s",
        f"GET /x failed (attempt 2 of 3): {exc}; retrying in 3.00 s",
    ]


def test_async_retries_wait_as_long_as_the_server_asks() -> None:
    slept: list[float] = []

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    async def attempt() -> Any:
        raise TruConnectRateLimitError("GET /x rate limited", status_code=429, retry_after=2.0)

    policy = RetryPolicy(max_retries=3, asleep=asleep)
    with pytest.raises(TruConnectRateLimitError):
        asyncio.run(policy.acall(attempt, idempotent=True, describe="GET /x"))
    assert slept == [2.0, 2.0, 2.0]


# ------------------------------------------------------------------------------------- answers that are errors
def test_an_interim_status_is_an_unfinished_answer() -> None:
    err = error_for_response(103, b"", {}, method="POST", path="/connect-api/v2/orders", correlation_id="cid")
    assert isinstance(err, TruConnectServerError) and err.retryable and err.status_code == 103
    assert err.message == "POST /connect-api/v2/orders answered with interim status 103 and nothing after it"
    assert err.messages == () and err.correlation_id == "cid"


def test_an_empty_or_blank_error_body_gives_no_messages() -> None:
    for content in (b"", b"   "):
        err = error_for_response(502, content, {}, method="GET", path="/p", correlation_id="cid")
        assert err.message == "GET /p failed on the server" and err.messages == ()


# ---------------------------------------------------------------------------- the rejected tokens remembered
def test_a_token_cache_remembers_the_last_sixteen_rejected_tokens() -> None:
    cache = TokenCache()
    for n in range(20):
        cache.invalidate(KEY, f"token-{n}")
    assert [n for n in range(20) if cache.was_rejected(KEY, f"token-{n}")] == list(range(4, 20))


def test_an_invalidated_token_keeps_everything_but_its_expiry() -> None:
    cache = TokenCache()
    original = Token(
        access_token="token-C",
        token_type="Bearer",
        obtained_at=1_000.0,
        expires_at=1_300.0,
        refresh_token="refresh-C",
        refresh_expires_at=2_800.0,
        scope="orders",
    )
    cache.put(KEY, original)
    cache.invalidate(KEY, "token-C")
    assert cache.get(KEY) == dataclasses.replace(original, expires_at=float("-inf"))


# --------------------------------------------------------------------------- what the async transport reports
def _async_failure(exc: Exception) -> TruConnectError:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json=TOKEN_BODY)
        raise exc

    async def call() -> TruConnectError:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        async with AsyncTruConnectClient(
            _order_config(), http_client=http, token_cache=TokenCache(), retry_policy=RetryPolicy(max_retries=0)
        ) as client:
            try:
                await client.request("GET", "/v2/sims/1", correlation_id="cid-async")
            except TruConnectError as err:
                return err
            finally:
                await http.aclose()
        raise AssertionError("no error")

    return asyncio.run(call())


def _tls_refusal() -> httpx.ConnectError:
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed")
        except ssl.SSLError as cause:
            raise httpx.ConnectError("handshake failed") from cause
    except httpx.ConnectError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "message", "sent"),
    [
        (
            httpx.InvalidURL("bad"),
            "Invalid url: GET /connect-api/v2/sims/1: the URL cannot be requested (InvalidURL)",
            False,
        ),
        (
            httpx.LocalProtocolError("bad header"),
            "Invalid headers: GET /connect-api/v2/sims/1: the request cannot be sent as built (LocalProtocolError)",
            False,
        ),
        (httpx.ReadTimeout("slow"), "GET /connect-api/v2/sims/1: read timeout", True),
        (
            httpx.RemoteProtocolError("reset"),
            "GET /connect-api/v2/sims/1: connection failed (RemoteProtocolError)",
            True,
        ),
        (_tls_refusal(), "GET /connect-api/v2/sims/1: the server's certificate is not trusted (trust from", False),
    ],
    ids=["url", "headers", "read-timeout", "dropped", "tls"],
)
def test_the_async_transport_names_the_request_and_its_correlation_id(exc: Exception, message: str, sent: bool) -> None:
    err = _async_failure(exc)
    assert err.message.startswith(message)
    assert err.sent is sent
    if not isinstance(err, TruConnectConfigError):
        assert err.correlation_id == "cid-async"


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (requests.exceptions.ReadTimeout("slow"), "GET /connect-api/v2/sims/1: read timeout"),
        (
            requests.exceptions.ChunkedEncodingError("cut"),
            "GET /connect-api/v2/sims/1: connection failed (ChunkedEncodingError)",
        ),
    ],
)
def test_the_sync_transport_names_the_request_and_its_correlation_id(exc: Exception, message: str, mocker: Any) -> None:
    client = _failing_client(exc, mocker)
    with pytest.raises(TruConnectConnectionError) as info:
        client.request("GET", "/v2/sims/1", correlation_id="cid-sync")
    client.close()
    assert info.value.message == message and info.value.correlation_id == "cid-sync" and info.value.sent is True


def test_a_300_answer_is_a_redirect_that_is_not_followed() -> None:
    err = error_for_response(
        300, b"", {"Location": "https://elsewhere.example/x?secret=1"}, method="POST", path="/p", correlation_id="c"
    )
    assert isinstance(err, TruConnectServerError) and not err.retryable and not err.definite_rejection
    assert err.message == "POST /p answered with a redirect to /x, which the client does not follow"


def test_top_level_activation_fields_that_are_not_text_are_no_codes() -> None:
    assert activation_codes({"id": "o-10", "lpa": 5, "matching_id": ["x"], "voucher_code": {"a": 1}}) == []


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)])
def test_backoff_doubles_from_the_base_up_to_the_cap(attempt: int, ceiling: float) -> None:
    import random

    policy = RetryPolicy(backoff_base=0.5, backoff_max=8.0, rng=random.Random(7))
    waits = [policy.backoff(attempt, None) for _ in range(200)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert max(waits) > ceiling * 0.9 and min(waits) < ceiling * 0.6  # full jitter over the upper half


# ------------------------------------------------------------------- every class of answer, as the rule needs it
@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "message", "retryable", "definite"),
    [
        (
            301,
            b"",
            {"Location": "/elsewhere?x=1"},
            TruConnectServerError,
            "answered with a redirect to /elsewhere, which the client does not follow",
            False,
            False,
        ),
        (
            307,
            b"",
            {},
            TruConnectServerError,
            "answered with a redirect, which the client does not follow",
            False,
            False,
        ),
        (
            399,
            b"",
            {},
            TruConnectServerError,
            "answered with a redirect, which the client does not follow",
            False,
            False,
        ),
        (400, b'{"errors": ["bad"]}', {}, TruConnectClientError, "rejected", False, True),
        (400, b"<html>bad</html>", {}, TruConnectClientError, "rejected", False, False),
        (401, b'{"error": "invalid_token"}', {}, TruConnectAuthError, "not authorised", False, True),
        (403, b'{"error": "forbidden"}', {}, TruConnectAuthError, "access denied", False, True),
        (404, b'{"message": "nope"}', {}, TruConnectNotFoundError, "not found", False, True),
        (409, b'{"message": "conflict"}', {}, TruConnectClientError, "rejected", False, True),
        (429, b'{"message": "slow down"}', {"Retry-After": "7"}, TruConnectRateLimitError, "rate limited", True, False),
        (499, b'{"message": "?"}', {}, TruConnectClientError, "rejected", False, True),
        (500, b"", {}, TruConnectServerError, "failed on the server", True, False),
        (501, b"", {}, TruConnectServerError, "failed on the server", False, False),
        (502, b"", {}, TruConnectServerError, "failed on the server", True, False),
        (503, b"", {}, TruConnectServerError, "failed on the server", True, False),
        (504, b"", {}, TruConnectServerError, "failed on the server", True, False),
        (599, b"", {}, TruConnectServerError, "failed on the server", False, False),
    ],
)
def test_each_answer_gives_its_error(
    status: int, body: bytes, headers: dict[str, str], kind: type, message: str, retryable: bool, definite: bool
) -> None:
    err = error_for_response(status, body, headers, method="POST", path="/p", correlation_id="cid-e")
    assert type(err) is kind
    assert err.message == f"POST /p {message}"
    assert err.status_code == status and err.correlation_id == "cid-e"
    assert err.retryable is retryable and err.definite_rejection is definite
    assert err.retry_after == (7.0 if "Retry-After" in headers else None)


def test_a_retry_after_date_is_read_against_the_clock() -> None:
    future = email.utils.format_datetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1), usegmt=True)
    past = email.utils.format_datetime(datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC), usegmt=True)
    ahead = parse_retry_after(future)
    assert ahead is not None and 0 < ahead <= 3600
    assert parse_retry_after(past) == 0.0
    assert parse_retry_after(future, now=0.0) is not None and parse_retry_after(future, now=0.0) > 3600


# ---------------------------------------------------------------------------------- settle: the uncertain error
def _answers(mode: str, answers: list[tuple[int, dict[str, Any]]], mocker: Any, **call: Any) -> tuple[Any, int]:
    """Send one API call over a fake transport that answers the API with ``answers`` in turn."""
    sent = [0]
    policy = RetryPolicy(max_retries=3, sleep=lambda s: None)

    async def asleep(seconds: float) -> None:
        return None

    policy.asleep = asleep

    def next_answer() -> tuple[int, dict[str, Any]]:
        sent[0] += 1
        return answers.pop(0)

    if mode == "sync":

        def send(method: str, url: str, **kwargs: Any) -> requests.Response:
            if url.endswith("/token"):
                return _response(200, TOKEN_BODY)
            return _response(*next_answer())

        client = TruConnectClient(_order_config(), token_cache=TokenCache(), retry_policy=policy)
        mocker.patch.object(client.session, "request", side_effect=send)
        try:
            return client.request(**call), sent[0]
        except TruConnectError as exc:
            return exc, sent[0]
        finally:
            client.close()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json=TOKEN_BODY)
        status, body = next_answer()
        return httpx.Response(status, json=body)

    async def run() -> Any:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        async with AsyncTruConnectClient(
            _order_config(), http_client=http, token_cache=TokenCache(), retry_policy=policy
        ) as client:
            try:
                return await client.request(**call)
            except TruConnectError as exc:
                return exc
            finally:
                await http.aclose()

    return asyncio.run(run()), sent[0]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_uncertain_order_says_what_to_do_and_keeps_its_correlation_id(mode: str, mocker: Any) -> None:
    err, sent = _answers(
        mode,
        [(503, {"title": "Service Unavailable", "detail": "busy"})],
        mocker,
        method="POST",
        endpoint="/v2/orders",
        json=ORDER,
        correlation_id="cid-o",
    )
    assert type(err) is TruConnectOrderUncertainError and sent == 1
    assert err.correlation_id == "cid-o" and err.status_code == 503 and err.messages == ("busy",)
    assert err.error_type == "Service Unavailable"
    assert err.message == (
        "POST /connect-api/v2/orders failed after the request was sent (POST /connect-api/v2/orders failed on the "
        "server); the order MAY have been created and was not sent again, to avoid placing it twice. Check before "
        "placing it again: for a top-up, GET /v2/subscriptions?iccid=<iccid>; for a new eSIM, ask 1GLOBAL support "
        "quoting the correlation id"
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_uncertain_request_that_is_not_an_order_says_so(mode: str, mocker: Any) -> None:
    err, sent = _answers(mode, [(502, {})], mocker, method="POST", endpoint="/v2/sims/1/notes", json={"a": 1})
    assert type(err) is TruConnectUncertainError and sent == 1 and err.status_code == 502
    assert err.correlation_id
    assert err.message == (
        "POST /connect-api/v2/sims/1/notes failed after the request was sent (POST /connect-api/v2/sims/1/notes "
        "failed on the server); it MAY have been acted upon and was not sent again, because repeating it is not "
        "safe. Check its effect before sending it again"
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_caller_may_declare_a_post_safe_to_repeat(mode: str, mocker: Any) -> None:
    result, sent = _answers(
        mode, [(503, {}), (200, {"ok": True})], mocker, method="POST", endpoint="/v2/search", json={}, idempotent=True
    )
    assert result == {"ok": True} and sent == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_order_is_never_declared_safe_to_repeat(mode: str, mocker: Any) -> None:
    err, sent = _answers(
        mode,
        [(503, {}), (201, {"id": "o-1"})],
        mocker,
        method="POST",
        endpoint="/v2/orders",
        json=ORDER,
        idempotent=True,
    )
    assert isinstance(err, TruConnectOrderUncertainError) and sent == 1


@pytest.mark.parametrize("max_retries", [1, 2])
def test_max_retries_is_the_number_of_repeats(max_retries: int) -> None:
    slept: list[float] = []
    attempt = _Fails(TruConnectServerError("GET /x failed on the server", status_code=503, retryable=True))
    with pytest.raises(TruConnectServerError):
        RetryPolicy(max_retries=max_retries, sleep=slept.append).call(attempt, idempotent=True, describe="GET /x")
    assert attempt.calls == max_retries + 1 and len(slept) == max_retries

    async def aattempt() -> Any:
        attempt()

    async def asleep(seconds: float) -> None:
        slept.append(seconds)

    attempt.calls, slept[:] = 0, []
    with pytest.raises(TruConnectServerError):
        asyncio.run(RetryPolicy(max_retries=max_retries, asleep=asleep).acall(aattempt, idempotent=True, describe="x"))
    assert attempt.calls == max_retries + 1 and len(slept) == max_retries


# --------------------------------------------------------------------- a repeat after a 401 is the same request
class _RejectOnce(JsonHandler):
    """A token endpoint, and an API that answers 401 to the first request and 200 to the next, recording both."""

    seen: list[tuple[str, str, bytes]]

    def _api(self) -> None:
        self.seen.append((self.command, self.path, self.read_body()))
        if len(self.seen) == 1:
            self.answer_json(401, {"error": "invalid_token"})
        else:
            self.answer_json(200, {"ok": True})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/token":
            self.answer_token(f"t-{len(self.seen)}")
        else:
            self._api()

    do_GET = do_PUT = _api  # noqa: N815


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("method", "body"), [("GET", None), ("PUT", {"state": "ACTIVE"})])
def test_the_repeat_after_a_401_sends_the_same_query_and_body(mode: str, method: str, body: Any) -> None:
    seen: list[tuple[str, str, bytes]] = []
    call: dict[str, Any] = {"method": method, "endpoint": "/v2/sims/1", "params": {"page": 2}, "json": body}
    with serving(type("RejectOnce", (_RejectOnce,), {"seen": seen})) as url:
        config = _config(url)
        if mode == "sync":
            with TruConnectClient(config, token_cache=TokenCache()) as client:
                result = client.request(**call)
        else:

            async def run() -> Any:
                async with AsyncTruConnectClient(config, token_cache=TokenCache()) as client:
                    return await client.request(**call)

            result = asyncio.run(run())
    assert result == {"ok": True}
    assert [(m, p) for m, p, _ in seen] == [(method, "/connect-api/v2/sims/1?page=2")] * 2
    assert [json.loads(b) if b else None for _, _, b in seen] == [body, body]


# --------------------------------------------------------------------------------- the sync client's session
def test_a_session_given_to_the_client_stays_open() -> None:
    class Session(requests.Session):
        closed = 0

        def close(self) -> None:
            type(self).closed += 1
            super().close()

    given = Session()
    TruConnectClient(_order_config(), session=given).close()
    assert Session.closed == 0
    own = TruConnectClient(_order_config())
    own.close()
    assert own._owns_session is True


def test_correlation_ids_carry_the_prefix() -> None:
    client = TruConnectClient(_order_config(), correlation_prefix="dag.task")
    try:
        cid = client.new_correlation_id()
        assert cid.startswith("dag.task-") and len(cid) == len("dag.task-") + 36
    finally:
        client.close()


def test_a_lower_case_lpa_prefix_is_stripped_for_masking_too() -> None:
    from airflow_provider_truconnect.client.models import activation_codes

    codes = activation_codes({"_metadata": {"links": {"_lpa": "lpa:1$rsp.truphone.com$AB-CD"}}})
    assert "1$rsp.truphone.com$AB-CD" in codes and "lpa:1$rsp.truphone.com$AB-CD" in codes
