"""Order creation (``POST /v2/orders``, not idempotent) under every fault: never two orders for one request.

When the outcome is unknown the error is :class:`TruConnectOrderUncertainError`, telling how to check and quoting the
correlation id that the emulator recorded with the order (if one was created). Failures that prove the request was
not processed (429, connection refused, no token) are retried and end with exactly one order.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from airflow_provider_truconnect.client import (
    TruConnectAuthError,
    TruConnectConfigError,
    TruConnectConnectionError,
    TruConnectOrderUncertainError,
    TruConnectServerError,
)
from tests.reliability.support import Gate, Harness, activation_order, report

ORDER_ROUTE = "POST /v2/orders"
TOKEN = "POST /auth/realms/tru-staff/protocol/openid-connect/token"


@pytest.mark.parametrize(
    ("name", "fault", "created"),
    [
        ("503 before processing", {"status": 503}, 0),
        ("503 after processing", {"status": 503, "after": True}, 1),
        ("500 after processing", {"status": 500, "after": True}, 1),
        ("drop before processing", {"drop": True}, 0),
        ("drop after processing", {"drop": True, "after": True}, 1),
        ("HTML 502 after processing", {"body": "html", "after": True}, 1),
        ("malformed 2xx body after processing", {"body": "malformed", "status": 201, "after": True}, 1),
        ("read timeout after processing", {"delay": 1.0, "after": True}, 1),
    ],
)
def test_uncertain_outcome_is_never_retried(harness: Harness, name: str, fault: dict, created: int) -> None:
    harness.reconfigure(timeout=0.3)
    body = activation_order(harness.emu)
    harness.emu.control.add_fault(ORDER_ROUTE, count=1, **fault)
    with pytest.raises(TruConnectOrderUncertainError) as info:
        harness.create_order(body)
    if fault.get("delay"):
        harness.settle(ORDER_ROUTE, 1)
    err = info.value
    orders = harness.emu.control.orders()
    assert len(orders) == created
    assert harness.waits == []
    assert sum(harness.route_counts(ORDER_ROUTE).values()) == 1  # sent once, never repeated
    text = str(err)
    assert "MAY have been created" in text and "GET /v2/subscriptions?iccid=" in text
    assert err.correlation_id and err.correlation_id in text
    assert len(harness.recorded_statuses(err.correlation_id)) == 1
    if created:
        assert orders[0]["correlation_id"] == err.correlation_id
    report(
        f"order: {name} [{harness.mode}]",
        outcome="TruConnectOrderUncertainError (not retried)",
        order_posts=1,
        orders_created=len(orders),
    )


@pytest.mark.parametrize("retry_after", [None, 2], ids=["no-retry-after", "retry-after-2"])
def test_429_on_an_order_is_uncertain_and_not_repeated(harness: Harness, retry_after: int | None) -> None:
    # A 429 is no definite rejection: a gateway may answer it after the API acted. Only provably unsent requests are
    # repeated, so the order is never sent twice, whatever the Retry-After.
    harness.emu.control.add_fault(ORDER_ROUTE, status=429, count=2, retry_after=retry_after)
    with pytest.raises(TruConnectOrderUncertainError) as info:
        harness.create_order(activation_order(harness.emu))
    assert info.value.status_code == 429
    assert info.value.retry_after == (float(retry_after) if retry_after else None)
    assert harness.route_counts(ORDER_ROUTE) == {"429": 1}
    assert harness.emu.control.orders() == [] and harness.waits == []
    report(
        f"order: 429 ({'Retry-After 2' if retry_after else 'no Retry-After'}) [{harness.mode}]",
        outcome="uncertain, not repeated",
        order_posts=1,
        orders_created=0,
    )


def test_connection_refused_is_retried_and_creates_exactly_one_order(harness: Harness) -> None:
    gate = Gate(urlsplit(harness.emu.url).port or 0)
    try:
        policy = harness.make_policy()
        sleep, asleep = policy.sleep, policy.asleep

        def open_then_sleep(seconds: float) -> None:
            gate.open()
            sleep(seconds)

        async def aopen_then_sleep(seconds: float) -> None:
            gate.open()
            await asleep(seconds)

        policy.sleep, policy.asleep = open_then_sleep, aopen_then_sleep
        harness.reconfigure(policy=policy, host=f"http://127.0.0.1:{gate.port}/connect-api")
        created = harness.create_order(activation_order(harness.emu))
    finally:
        gate.close()
    orders = harness.emu.control.orders()
    assert [o["id"] for o in orders] == [created["id"]]
    assert len(harness.waits) == 1
    assert harness.route_counts(ORDER_ROUTE) == {"201": 1}
    report(
        f"order: connection refused, then up [{harness.mode}]",
        outcome="success",
        order_posts_reaching_server=1,
        orders_created=1,
        retries=1,
    )


def test_connection_refused_for_good_is_a_connection_error_not_uncertain(harness: Harness) -> None:
    gate = Gate(0)  # never opened
    try:
        harness.reconfigure(host=f"http://127.0.0.1:{gate.port}/connect-api")
        with pytest.raises(TruConnectConnectionError) as info:
            harness.create_order(activation_order(harness.emu))
    finally:
        gate.close()
    err = info.value
    assert not isinstance(err, TruConnectOrderUncertainError)
    assert err.sent is False and "connection refused" in str(err)
    assert err.correlation_id
    assert len(harness.waits) == harness.policy.max_retries
    assert sum(harness.waits) <= harness.policy.max_total_wait
    assert harness.emu.control.orders() == []
    report(
        f"order: connection refused for good [{harness.mode}]",
        outcome="TruConnectConnectionError (provably not sent)",
        retries=len(harness.waits),
        orders_created=0,
    )


def test_token_endpoint_down_during_order_is_retried_not_uncertain(harness: Harness) -> None:
    # Regression: a failure to get the token used to turn into "order may have been created" (and was not retried),
    # although the order request had not even been sent.
    harness.emu.control.add_fault("token", status=503, count=2)
    created = harness.create_order(activation_order(harness.emu))
    assert [o["id"] for o in harness.emu.control.orders()] == [created["id"]]
    assert harness.route_counts(ORDER_ROUTE) == {"201": 1}
    assert len(harness.waits) == 2
    report(
        f"order: token endpoint 503 x2 [{harness.mode}]",
        outcome="success",
        orders_created=1,
        retries=2,
    )


def test_token_endpoint_down_for_good_during_order(harness: Harness) -> None:
    harness.emu.control.add_fault("token", status=503, count=1000)
    with pytest.raises(TruConnectServerError) as info:
        harness.create_order(activation_order(harness.emu))
    err = info.value
    assert not isinstance(err, TruConnectOrderUncertainError)
    assert "Token endpoint failed" in str(err) and err.sent is False
    assert harness.recorded_statuses(err.correlation_id or "") == [503]
    assert harness.route_counts(ORDER_ROUTE) == {}
    assert harness.emu.control.orders() == []
    assert sum(harness.waits) <= harness.policy.max_total_wait


def test_revoked_token_on_order_is_a_rejection_not_sent_again(harness: Harness) -> None:
    harness.call("GET", "/v2/products", params={"page_size": 1})
    harness.emu.control.revoke()
    with pytest.raises(TruConnectAuthError) as info:
        harness.create_order(activation_order(harness.emu))
    assert info.value.status_code == 401 and info.value.definite_rejection
    assert not isinstance(info.value, TruConnectOrderUncertainError)
    assert harness.route_counts(ORDER_ROUTE) == {"401": 1}
    assert harness.emu.control.orders() == []
    # The rejected token was dropped: the next order (e.g. the task's retry) gets a new one and goes through.
    created = harness.create_order(activation_order(harness.emu))
    assert [o["id"] for o in harness.emu.control.orders()] == [created["id"]]
    assert harness.route_counts(ORDER_ROUTE) == {"401": 1, "201": 1}


SPELLINGS = [
    "/v2/orders/",
    "/v2//orders",
    "/v2/./orders",
    "v2/orders",
    "/v2/x/../orders",
    "/V2/Orders",
    "/v2/orders%2F",
]


@pytest.mark.parametrize("endpoint", SPELLINGS)
def test_every_spelling_of_the_order_path_is_validated_before_sending(harness: Harness, endpoint: str) -> None:
    with pytest.raises(TruConnectConfigError) as info:
        harness.call("POST", endpoint, json={"operation_type": "ACTIVATION"})
    assert info.value.field.startswith("order.")
    assert harness.stats()["requests_total"] == 0


@pytest.mark.parametrize("endpoint", SPELLINGS)
def test_every_spelling_of_the_order_path_follows_the_order_rule(harness: Harness, endpoint: str) -> None:
    # Never idempotent, whatever the caller says, and an unknown outcome is an order-specific one.
    call = harness.hook.client.prepare("POST", endpoint, None, activation_order(harness.emu), None, True)
    assert call.places_order and not call.idempotent


@pytest.mark.parametrize("endpoint", ["/v2/./orders", "/v2/x/../orders", "v2/orders"])
def test_spellings_the_server_routes_to_orders_are_never_sent_twice(harness: Harness, endpoint: str) -> None:
    harness.call("GET", "/v2/products", params={"page_size": 1})  # the token first: the fault is for the order
    harness.emu.control.add_fault(ORDER_ROUTE, status=500, after=True, count=1)
    with pytest.raises(TruConnectOrderUncertainError):
        harness.call("POST", endpoint, json=activation_order(harness.emu), idempotent=True)
    assert harness.route_counts(ORDER_ROUTE) == {"500": 1}
    assert len(harness.emu.control.orders()) == 1
