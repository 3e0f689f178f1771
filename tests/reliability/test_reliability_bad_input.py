"""Bad input is refused with an error naming the field, before any network call, on the hook and async paths.

Complements ``tests/hooks/test_truconnect_hook.py`` (which covers empty login/password, ftp and non-loopback http hosts,
bad timeout/max_retries/verify_ssl/client_auth/scope, and a missing e-mail in an order).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Connection

from airflow_provider_truconnect.client import TokenCache, TruConnectConfigError
from airflow_provider_truconnect.client.orders import validate_order
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from tests.reliability.support import activation_order


@pytest.fixture
def emu(truconnect_emulator: RunningEmulator) -> RunningEmulator:
    return truconnect_emulator


def hook_for(emu: RunningEmulator, *, extra: Any = None, **fields: Any) -> TruConnectHook:
    conn = Connection(
        conn_id="tc_bad_input",
        conn_type="truconnect",
        host=fields.get("host", emu.api_base),
        login=fields.get("login", emu.client_id),
        password=fields.get("password", emu.client_secret),
        extra=extra if isinstance(extra, str) else json.dumps({"oauth_url": emu.oauth_url, **(extra or {})}),
    )
    return TruConnectHook("tc_bad_input", connection=conn, token_cache=TokenCache())


async def async_get_sim(hook: TruConnectHook) -> None:
    client = await hook.get_async_client()
    try:
        await client.request("GET", "/v2/sims/8944000000000000000")
    finally:
        await client.aclose()


BAD_CONNECTIONS = [
    ({"login": None}, "login"),
    ({"login": "   "}, "login"),
    ({"password": None}, "password"),
    ({"host": "https://"}, "host"),
    ({"host": "https://api.example.com:99999/connect-api"}, "host"),
    ({"host": "https://user:pw@api.example.com/connect-api"}, "host"),
    ({"host": "https://api.example.com/connect-api?x=1"}, "host"),
    ({"extra": {"oauth_url": "ftp://idp.example.com/token"}}, "extra.oauth_url"),
    ({"extra": {"oauth_url": "https:///token"}}, "extra.oauth_url"),
    ({"extra": {"oauth_url": 42}}, "extra.oauth_url"),
    ({"extra": {"timeout": [1]}}, "extra.timeout"),
    ({"extra": {"timeout": "nan"}}, "extra.timeout"),
    ({"extra": {"max_retries": "-1"}}, "extra.max_retries"),
    ({"extra": {"max_retries": True}}, "extra.max_retries"),
    ({"extra": {"allow_insecure_http": "maybe"}}, "extra.allow_insecure_http"),
    ({"extra": {"client_auth": 5}}, "extra.client_auth"),
    ({"extra": "[1, 2]"}, "extra"),
    ({"extra": "{not json"}, "extra"),
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("fields", "field"), BAD_CONNECTIONS)
def test_bad_connection_names_the_field_before_any_call(
    emu: RunningEmulator, mode: str, fields: dict[str, Any], field: str
) -> None:
    hook = hook_for(emu, **fields)
    with pytest.raises(TruConnectConfigError) as info:
        if mode == "sync":
            hook.get_sim("8944000000000000000")
        else:
            asyncio.run(async_get_sim(hook))
    assert field in str(info.value)
    assert emu.client_secret not in str(info.value)
    assert emu.control.stats()["requests_total"] == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: o.pop("product"), "order.product"),
        (lambda o: o["product"].pop("id"), "order.product.id"),
        (lambda o: o["product"].update(id=123), "order.product.id"),
        (lambda o: o.pop("subscriber"), "order.subscriber"),
        (lambda o: o["subscriber"].pop("device"), "order.subscriber.device"),
        (lambda o: o["subscriber"].update(last_name=""), "order.subscriber.last_name"),
        (lambda o: o.update(operation_type="BUY"), "order.operation_type"),
        (lambda o: o.update(sim_type=None), "order.sim_type"),
        (lambda o: o.update(country="GBR"), "order.country"),
        (lambda o: o["product"].update(sold_price=20), "order.product.sold_price"),
        (lambda o: o.update(operation_type="TOPUP"), "order.subscriber.sim.iccid"),
        (lambda o: o.update(operation_type="TOPUP", subscriber={"sim": {"iccid": 8944}}), "order.subscriber.sim.iccid"),
    ],
)
def test_bad_order_body_names_the_field_and_sends_nothing(emu: RunningEmulator, change: Any, field: str) -> None:
    body = activation_order(emu)
    change(body)
    with pytest.raises(TruConnectConfigError) as info:
        hook_for(emu).create_order(body)
    assert f"Invalid {field}" in str(info.value)
    with pytest.raises(TruConnectConfigError):
        validate_order(body)
    assert emu.control.stats()["requests_total"] == 0
    assert emu.control.orders() == []


@pytest.mark.parametrize("value", [8944000000000000000, None, b"8944", ["8944"], "", "   "])
@pytest.mark.parametrize(
    ("method", "field"),
    [
        ("get_sim", "iccid"),
        ("cancel_sim", "iccid"),
        ("get_order", "order_id"),
        ("get_product", "product_id"),
        ("get_subscription", "subscription_id"),
        ("activate_subscription", "subscription_id"),
    ],
)
def test_ids_that_are_not_strings_are_refused(emu: RunningEmulator, method: str, field: str, value: Any) -> None:
    with pytest.raises(TruConnectConfigError) as info:
        getattr(hook_for(emu), method)(value)
    assert info.value.field == field
    assert emu.control.stats()["requests_total"] == 0


def test_filters_and_endpoints_are_checked_before_any_call(emu: RunningEmulator) -> None:
    hook = hook_for(emu)
    with pytest.raises(TruConnectConfigError, match="iccid"):
        list(hook.list_subscriptions(iccid=8944))
    with pytest.raises(TruConnectConfigError, match="page_size"):
        list(hook.paginate("/v2/subscriptions", page_size=0))
    with pytest.raises(TruConnectConfigError, match="endpoint"):
        hook.request("GET", "/v2/sims?iccid=1")
    with pytest.raises(TruConnectConfigError, match="headers.Authorization"):
        hook.request("GET", "/v2/products", headers={"Authorization": "Bearer x"})
    assert emu.control.stats()["requests_total"] == 0


@pytest.mark.parametrize("value", [8944, None, ""])
def test_async_ids_and_endpoints_are_checked_before_any_call(emu: RunningEmulator, value: Any) -> None:
    async def run() -> None:
        client = await hook_for(emu).get_async_client()
        try:
            with pytest.raises(TruConnectConfigError, match="order_id"):
                await client.get_order(value)
            with pytest.raises(TruConnectConfigError, match="endpoint"):
                await client.request("GET", value)
        finally:
            await client.aclose()

    asyncio.run(run())
    assert emu.control.stats()["requests_total"] == 0
