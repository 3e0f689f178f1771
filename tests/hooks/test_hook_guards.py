"""Secrets on the async path, asserted so that breaking the rule fails a test (issue 11).

The clients that :meth:`TruConnectHook.get_async_client` builds (the triggers' path) register every token they obtain,
access and refresh, with Airflow's secret masker, without blocking the event loop. Checked here through the masker
itself (a token is redacted from any text afterwards) and through the fallback used where Airflow has no
``amask_secret``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Connection

from airflow_provider_truconnect.client.token_cache import TokenCache
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.hooks import truconnect as hook_module
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger


def redact(text: str) -> str:
    """Airflow's own redaction, as task logs apply it, from the masker that the hook's masking functions feed."""
    try:  # Airflow 3.3
        from airflow.sdk.log import redact as airflow_redact
    except ImportError:
        try:  # Airflow 3.0 - 3.2
            from airflow.sdk.execution_time.secrets_masker import redact as airflow_redact
        except ImportError:  # Airflow 2
            from airflow.utils.log.secrets_masker import redact as airflow_redact
    return str(airflow_redact(text))


def masked(value: str) -> bool:
    return value not in redact(f"Authorization: Bearer {value}")


def connection(emu: RunningEmulator) -> Connection:
    return Connection(
        conn_id="tc_guards",
        conn_type="truconnect",
        host=emu.api_base,
        login=emu.client_id,
        password=emu.client_secret,
        extra=json.dumps(emu.connection_extra),
    )


async def test_the_async_client_masks_every_token_it_obtains(truconnect_emulator: RunningEmulator) -> None:
    emu = truconnect_emulator
    hook = TruConnectHook("tc_guards", connection=connection(emu), token_cache=TokenCache())
    client = await hook.get_async_client()
    try:
        assert (await client.request("GET", "/v2/products", params={"page_size": 1}))["data"]
    finally:
        await client.aclose()
    tokens = emu.control.issued_tokens()
    current = client.tokens.cache.get(client.tokens.key)
    assert current is not None and current.access_token in tokens
    # Access and refresh token, each issued to this client alone: only its masking can have registered them.
    assert len(tokens) == (2 if current.refresh_token else 1)
    assert all(masked(token) for token in tokens), "a token obtained on the async path is not masked"


async def test_a_renewed_token_is_masked_too(truconnect_emulator: RunningEmulator) -> None:
    emu = truconnect_emulator
    hook = TruConnectHook("tc_guards", connection=connection(emu), token_cache=TokenCache())
    client = await hook.get_async_client()
    try:
        await client.request("GET", "/v2/products", params={"page_size": 1})
        first = set(emu.control.issued_tokens())
        emu.control.revoke()  # every token: the next request gets a 401 and renews
        await client.request("GET", "/v2/products", params={"page_size": 1})
    finally:
        await client.aclose()
    renewed = set(emu.control.issued_tokens()) - first
    assert renewed
    assert all(masked(token) for token in renewed)


async def test_a_trigger_masks_the_tokens_it_obtains(
    emu: RunningEmulator, order_body: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with TruConnectHook() as hook:
        order_id = hook.create_order(order_body())["id"]
    emu.control.advance(10)
    before = set(emu.control.issued_tokens())
    # A cache of its own, so the trigger obtains tokens of its own instead of reusing the sync hook's.
    monkeypatch.setattr(TruConnectOrderTrigger, "token_cache", TokenCache())
    gen = TruConnectOrderTrigger(order_id, "truconnect_default", 1.0, time.time() + 60).run()
    event = (await anext(gen)).payload
    await gen.aclose()
    assert event["status"] == "success"
    obtained = set(emu.control.issued_tokens()) - before
    assert obtained
    assert all(masked(token) for token in obtained)


async def test_async_masking_without_amask_secret_runs_off_the_loop(
    monkeypatch: pytest.MonkeyPatch, mocker: Any
) -> None:
    calls: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()

    def record(value: str) -> None:
        calls.append((value, threading.get_ident() != loop_thread))

    mocker.patch.object(hook_module, "mask_secret", side_effect=record)
    monkeypatch.setitem(sys.modules, "airflow.sdk.log", None)  # an Airflow without amask_secret
    await hook_module._amask_secret("secret-value-1")
    assert calls == [("secret-value-1", True)]


@pytest.mark.af3
async def test_async_masking_uses_amask_secret_when_there_is_one(mocker: Any) -> None:
    import airflow.sdk.log as sdk_log

    awaited: list[str] = []

    async def amask(value: str, name: str | None = None) -> None:
        await asyncio.sleep(0)
        awaited.append(value)

    sync = mocker.patch.object(hook_module, "mask_secret")
    mocker.patch.object(sdk_log, "amask_secret", new=amask, create=True)
    await hook_module._amask_secret("secret-value-2")
    assert awaited == ["secret-value-2"]
    assert sync.call_count == 0
