"""Example-based tests of the client core's local parts: error bodies of any shape, argument validation, the mapping of
transport exceptions, pagination loop detection and the import cost of the client package. No network here; the
same behaviours over real sockets are in ``tests/reliability/test_reliability_client_core.py``."""

from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import requests

from airflow_provider_truconnect.client.async_client import _httpx_error
from airflow_provider_truconnect.client.client import TruConnectClient, _requests_error
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.client.errors import (
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    TruConnectClientError,
    TruConnectConfigError,
    TruConnectConnectionError,
    TruConnectPaginationError,
    TruConnectServerError,
)
from airflow_provider_truconnect.client.orders import validate_order
from airflow_provider_truconnect.client.paths import order_path
from airflow_provider_truconnect.client.responses import error_details, error_for_response
from airflow_provider_truconnect.client.retry import RetryPolicy
from airflow_provider_truconnect.client.tls import TlsTrust

BASE = "https://api.example.com/connect-api"
TRUST = TlsTrust(True)


def config(**kwargs: Any) -> ClientConfig:
    return ClientConfig(client_id="id", client_secret="secret", api_base=BASE, **kwargs)


def problem(status: int, body: Any) -> Any:
    return error_for_response(
        status, json.dumps(body).encode(), {}, method="POST", path="/connect-api/v2/orders", correlation_id="cid"
    )


# ------------------------------------------------------------------------------------------------ error bodies
@pytest.mark.parametrize(
    "errors",
    [
        {"json_path": "$.country", "detail": "is required", "code": "MISSING"},
        {"country": ["is required", "must be alpha-2"], "email": "is invalid"},
        "one plain string",
        42,
        [1, None, {"detail": {"nested": True}}, ["a"]],
        None,
    ],
)
def test_rfc7807_errors_of_any_shape_give_a_typed_error(errors: Any) -> None:
    err = problem(503, {"title": "Service Unavailable", "detail": "down", "errors": errors})
    assert isinstance(err, TruConnectServerError) and err.retryable
    assert err.messages[0] == "down"
    assert err.error_type == "Service Unavailable"
    assert all(isinstance(m, str) for m in err.messages)


def test_dict_errors_keep_the_field_names() -> None:
    err = problem(400, {"title": "Bad Request", "errors": {"country": ["is required"], "email": "is invalid"}})
    assert isinstance(err, TruConnectClientError)
    assert err.messages == ("country: is required", "email: is invalid")


@pytest.mark.parametrize(
    "body",
    [
        {"title": {"not": "a string"}, "detail": ["x"], "errors": [], "correlation_id": {"a": 1}},
        {"type": ["list"], "messages": {"m": "dict"}},
        {"type": "T", "messages": 7},
        {"error": {"x": 1}, "error_description": ["y"]},
        {"detail": None, "errors": {"detail": "single problem object", "json_path": "$.x"}},
    ],
)
def test_fields_of_unexpected_types_never_raise(body: Mapping[str, Any]) -> None:
    err = problem(422, body)
    assert isinstance(err, TruConnectClientError)
    assert err.error_type is None or isinstance(err.error_type, str)
    assert err.correlation_id == "cid" or isinstance(err.correlation_id, str)


def test_messages_are_bounded_in_size_and_number() -> None:
    huge = "x" * 100_000
    for body in (
        {"title": "Bad", "detail": huge, "errors": [{"detail": huge, "json_path": "$.a"}] * 50},
        {"type": "Bad", "messages": [huge] * 50},
    ):
        err = problem(400, body)
        assert len(err.messages) <= MAX_MESSAGES
        assert all(len(m) <= MAX_MESSAGE_CHARS for m in err.messages)
        assert len(str(err)) < (MAX_MESSAGE_CHARS + 5) * MAX_MESSAGES + 500


def test_error_details_of_non_objects() -> None:
    assert error_details(["a"]) == (None, [], None)
    assert error_details("text") == (None, [], None)


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("value", [11, "11", 100, -1])
def test_max_retries_is_bounded(value: Any) -> None:
    with pytest.raises(TruConnectConfigError) as info:
        ClientConfig.from_connection_fields(host=BASE, login="id", password="pw", extra={"max_retries": value})
    assert info.value.field == "extra.max_retries"
    with pytest.raises(TruConnectConfigError, match=r"extra\.max_retries"):
        config(max_retries=value if isinstance(value, int) else 11)


@pytest.mark.parametrize("value", [0, 10, "10"])
def test_max_retries_limits_are_accepted(value: Any) -> None:
    cfg = ClientConfig.from_connection_fields(host=BASE, login="id", password="pw", extra={"max_retries": value})
    assert cfg.max_retries == int(value)


# ------------------------------------------------------------------------------------------------ request arguments
@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"X-Foo": 1}, "headers.X-Foo"),
        ({"X-Foo": "a\r\nInjected: yes"}, "headers.X-Foo"),
        ({"X-Foo": "line\nbreak"}, "headers.X-Foo"),
        ({"X-Foo": "caf\u00e9"}, "headers.X-Foo"),
        ({"Bad Name": "v"}, "headers.'Bad Name'"),
        ({"X-Evil\r\n": "v"}, "headers.'X-Evil\\r\\n'"),
        ({1: "v"}, "headers.1"),
        ({"authorization": "Bearer x"}, "headers.Authorization"),
    ],
)
def test_invalid_headers_are_config_errors(headers: dict[Any, Any], field: str) -> None:
    client = TruConnectClient(config())
    call = client.prepare("GET", "/v2/sims/1", None, None, headers, None)
    with pytest.raises(TruConnectConfigError) as info:
        client.attempt_headers(call)
    assert info.value.field == field
    assert not info.value.retryable and info.value.sent is False
    assert "Bearer x" not in str(info.value) and "Injected" not in str(info.value)


def test_headers_must_be_a_mapping() -> None:
    client = TruConnectClient(config())
    with pytest.raises(TruConnectConfigError, match="headers"):
        client.prepare("GET", "/v2/sims/1", None, None, [("X-Foo", "1")], None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"a": object()}, "json.a"),
        ({"a": [1, {"when": datetime.date(2026, 1, 1)}]}, "json.a[1].when"),
        ({"a": float("nan")}, "json.a"),
        ({(1, 2): "tuple key"}, "json.(1, 2)"),
        ({1, 2}, "json"),
    ],
)
def test_non_json_bodies_are_config_errors(body: Any, field: str) -> None:
    client = TruConnectClient(config())
    with pytest.raises(TruConnectConfigError) as info:
        client.prepare("POST", "/v2/subscriptions/s1/activate", None, body, None, None)
    assert info.value.field == field
    assert info.value.sent is False


def test_describe_is_shared_by_the_call() -> None:
    client = TruConnectClient(config())
    call = client.prepare("get", "/v2/sims/1", {"q": "secret@example.com"}, None, None, None)
    assert call.describe == "GET /connect-api/v2/sims/1"
    assert not hasattr(client, "describe")


def test_order_path_encodes_and_validates() -> None:
    assert order_path("a/b=") == "/v2/orders/a%2Fb%3D"
    with pytest.raises(TruConnectConfigError, match="order_id"):
        order_path(" ")


# ------------------------------------------------------------------------------------------------ transport errors
@pytest.mark.parametrize(
    ("exc", "field"),
    [
        (requests.exceptions.InvalidHeader("Invalid return character in header value: 'Bearer s3cret'"), "headers"),
        (requests.exceptions.InvalidURL("bad"), "url"),
        (requests.exceptions.MissingSchema("bad"), "url"),
        (requests.exceptions.InvalidSchema("bad"), "url"),
        (requests.exceptions.URLRequired("bad"), "url"),
        (requests.exceptions.InvalidJSONError("bad"), "json"),
    ],
)
def test_requests_building_errors_are_not_retried(exc: requests.RequestException, field: str) -> None:
    err = _requests_error(exc, "POST /connect-api/v2/orders", "cid", TRUST)
    assert isinstance(err, TruConnectConfigError) and err.field == field
    assert not err.retryable and err.sent is False
    assert not RetryPolicy().should_retry(err, idempotent=True)
    assert "s3cret" not in str(err)


def test_requests_transport_errors_stay_retryable() -> None:
    for exc in (requests.exceptions.ConnectionError("reset"), requests.exceptions.ReadTimeout("slow")):
        err = _requests_error(exc, "GET /x", "cid", TRUST)
        assert isinstance(err, TruConnectConnectionError) and err.retryable


@pytest.mark.parametrize(
    ("exc", "field"),
    [
        (httpx.InvalidURL("bad"), "url"),
        (httpx.UnsupportedProtocol("ftp"), "url"),
        (httpx.LocalProtocolError("Illegal header value"), "headers"),
    ],
)
def test_httpx_building_errors_are_not_retried(exc: Exception, field: str) -> None:
    err = _httpx_error(exc, "POST /connect-api/v2/orders", "cid", TRUST)
    assert isinstance(err, TruConnectConfigError) and err.field == field
    assert not err.retryable and err.sent is False


def _connect_error_caused_by(cause: BaseException) -> httpx.ConnectError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise httpx.ConnectError("handshake failed") from inner
    except httpx.ConnectError as outer:
        return outer


def test_httpx_tls_failure_is_not_retried_but_a_refusal_is() -> None:
    tls = _httpx_error(_connect_error_caused_by(ssl.SSLCertVerificationError(1, "verify failed")), "GET /x", "c", TRUST)
    assert isinstance(tls, TruConnectConnectionError) and "certificate is not trusted" in str(tls)
    assert not tls.retryable and tls.sent is False  # refused in the handshake: the request never left
    refused = _httpx_error(_connect_error_caused_by(ConnectionRefusedError(111, "refused")), "GET /x", "c", TRUST)
    assert isinstance(refused, TruConnectConnectionError) and refused.retryable and refused.sent is False


# ------------------------------------------------------------------------------------------------ orders
def activation() -> dict[str, Any]:
    return {
        "operation_type": "ACTIVATION",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": "p"},
        "subscriber": {
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "country_of_residence": "GB",
            "device": {"operating_system": "ios", "model": "iPhone", "id": "1"},
        },
    }


def psim_topup() -> dict[str, Any]:
    return {
        "operation_type": "TOPUP",
        "sim_type": "PSIM",
        "country": "GB",
        "product": {"id": "p", "sold_price": 20, "sold_currency": "EUR", "activation_date": "2030-01-01T00:00:00Z"},
        "subscriber": {"sim": {"iccid": "8944"}},
    }


@pytest.mark.parametrize("country", [None, "", "GBR", "G1", 44, "\u00c9\u00c9"])
def test_order_country_is_required_alpha2(country: Any) -> None:
    body = activation()
    if country is None:
        del body["country"]
    else:
        body["country"] = country
    with pytest.raises(TruConnectConfigError) as info:
        validate_order(body)
    assert info.value.field == "order.country"


def test_topup_country_is_optional_but_checked() -> None:
    body = psim_topup()
    body.pop("country", None)
    assert validate_order(body)["operation_type"] == "TOPUP"
    body["country"] = "GBR"
    with pytest.raises(TruConnectConfigError) as info:
        validate_order(body)
    assert info.value.field == "order.country"


@pytest.mark.parametrize("missing", ["sold_price", "sold_currency", "activation_date"])
def test_psim_topup_needs_price_currency_and_date(missing: str) -> None:
    assert validate_order(psim_topup())["sim_type"] == "PSIM"
    body = psim_topup()
    del body["product"][missing]
    with pytest.raises(TruConnectConfigError) as info:
        validate_order(body)
    assert info.value.field == f"order.product.{missing}"


def test_order_values_must_be_json() -> None:
    body = activation()
    body["subscriber"]["device"]["id"] = {1, 2}
    with pytest.raises(TruConnectConfigError) as info:
        validate_order(body)
    assert info.value.field == "order.subscriber.device.id"


# ------------------------------------------------------------------------------------------------ pagination
class CannedClient(TruConnectClient):
    """A client whose ``request`` answers from a table keyed by the URL it would fetch (with its query)."""

    def __init__(self, pages: dict[str, Any]) -> None:
        super().__init__(config())
        self.pages = pages
        self.fetched: list[str] = []

    def request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        params = kwargs.get("params")
        key = endpoint + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
        self.fetched.append(key)
        return self.pages[key]


def page(items: list[int], next_link: str | None) -> dict[str, Any]:
    return {"data": items, "_metadata": {"links": {"_next": next_link} if next_link else {}}}


def test_next_link_back_to_the_first_page_is_a_loop() -> None:
    first = f"{BASE}/v2/subscriptions?page_size=2"
    client = CannedClient(
        {
            first: page([1, 2], "/v2/subscriptions?page=2&page_size=2"),
            f"{BASE}/v2/subscriptions?page=2&page_size=2": page([3], "{BASE_URL}/v2/subscriptions?page_size=2"),
        }
    )
    with pytest.raises(TruConnectPaginationError, match="repeated after 2 pages"):
        list(client.paginate("/v2/subscriptions", page_size=2))


def test_next_link_to_the_current_page_is_a_loop() -> None:
    first = f"{BASE}/v2/subscriptions?page_size=2"
    client = CannedClient({first: page([1, 2], "/v2/subscriptions?page_size=2")})
    with pytest.raises(TruConnectPaginationError, match="repeated after 1 pages"):
        list(client.paginate("/v2/subscriptions", page_size=2))
    assert client.fetched == [first]


def test_distinct_pages_are_followed() -> None:
    client = CannedClient(
        {
            f"{BASE}/v2/subscriptions?page_size=2": page([1, 2], "/v2/subscriptions?page_size=2&page=2"),
            f"{BASE}/v2/subscriptions?page_size=2&page=2": page([3], None),
        }
    )
    assert list(client.paginate("/v2/subscriptions", page_size=2)) == [1, 2, 3]


# ------------------------------------------------------------------------------------------------ import cost
@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("import airflow_provider_truconnect.client.errors", ("requests", "httpx", "tenacity")),
        ("from airflow_provider_truconnect.client import TruConnectError", ("requests", "httpx", "tenacity")),
        ("import airflow_provider_truconnect.client.client", ("requests", "httpx", "tenacity")),
        ("import airflow_provider_truconnect.client.orders", ("requests", "httpx", "tenacity")),
        ("import airflow_provider_truconnect.hooks.truconnect", ("httpx",)),
        ("import airflow_provider_truconnect.operators.truconnect", ("httpx",)),
        ("import airflow_provider_truconnect.sensors.truconnect", ("httpx",)),
    ],
)
def test_imports_stay_light(statement: str, forbidden: tuple[str, ...]) -> None:
    # What Airflow itself imports does not count (Airflow 3's Task SDK uses httpx; 2.11's configuration, requests).
    before = "import airflow.providers.common.compat.sdk" if "client" not in statement else "pass"
    code = (
        f"import sys; {before}; already = set(sys.modules); {statement}; "
        f"print('NEW:' + ','.join(m for m in {forbidden!r} if m in sys.modules and m not in already))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    new = [line for line in out.stdout.splitlines() if line.startswith("NEW:")]
    assert new == ["NEW:"], f"{statement} imported {new}"


def test_lazy_package_exports_every_name() -> None:
    import airflow_provider_truconnect.client as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    assert set(pkg.__all__) <= set(dir(pkg))
    with pytest.raises(AttributeError):
        pkg.NoSuchThing  # noqa: B018
