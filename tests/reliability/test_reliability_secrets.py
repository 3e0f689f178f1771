"""Leak scan: with a canary client secret and every issued token as canaries, run the fault scenarios on the hook and
the async client path, then search every log record (DEBUG, root), every exception (text, repr, chained causes and
formatted tracebacks) and every URL the emulator received. TLS verification and the plain-http rules are checked too.
"""

from __future__ import annotations

import asyncio
import ssl
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_truconnect.client import (
    AsyncTruConnectClient,
    ClientConfig,
    TokenCache,
    TruConnectClient,
    TruConnectConfigError,
    TruConnectError,
)
from airflow_provider_truconnect.emulator.server import run_emulator
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from tests.conftest import FakeClock
from tests.reliability.support import Harness, activation_order, connection_for, report

CANARY_CLIENT = "canary-client"
CANARY_SECRET = "CANARY-SECRET-9f3b7c21d4e8a6b0"
WRONG_SECRET = "CANARY-WRONG-SECRET-5e1d2c3b"


def exception_texts(exc: BaseException) -> str:
    out = ["".join(traceback.format_exception(exc)), repr(exc), str(exc)]
    seen: BaseException | None = exc
    while seen is not None:
        out += [repr(seen), str(seen), repr(getattr(seen, "__dict__", {}))]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(out)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_no_secret_or_token_leaks_anywhere(mode: str, all_logs: Any) -> None:
    clock = FakeClock()
    with run_emulator(
        clock=clock,
        rate_limit_per_minute=None,
        clients={CANARY_CLIENT: CANARY_SECRET, "other-client": "other-secret-change-me"},
        default_client=CANARY_CLIENT,
    ) as emu:
        h = Harness(emu=emu, clock=clock, mode=mode)
        errors: list[BaseException] = []

        def attempt(fn: Callable[[], Any]) -> None:
            try:
                fn()
            except TruConnectError as exc:
                errors.append(exc)

        def get() -> Any:
            return h.call("GET", "/v2/products", params={"page_size": 1})

        control = emu.control
        get()  # client_credentials
        clock.advance(300)
        get()  # refresh grant
        control.revoke()
        get()  # 401, re-auth
        clock.advance(300)
        get()  # refresh token revoked: invalid_grant, then client_credentials
        for fault in ({"status": 503}, {"drop": True}, {"body": "malformed"}, {"body": "html"}, {"status": 429}):
            control.add_fault("GET /v2/products", count=100, **fault)
            attempt(get)
            control.clear_faults()
        control.add_fault("GET /v2/products", status=401, count=2)
        attempt(get)
        control.add_fault("token", status=503, count=100)
        h.cache.clear()
        attempt(get)
        control.clear_faults()
        control.add_fault("token", body="malformed", count=100)
        attempt(get)
        control.clear_faults()
        control.add_fault("POST /v2/orders", drop=True, after=True)
        attempt(lambda: h.create_order(activation_order(emu)))
        control.add_fault("POST /v2/orders", status=503, after=True)
        attempt(lambda: h.create_order(activation_order(emu)))
        h.reconfigure(password=WRONG_SECRET)
        h.cache.clear()
        attempt(get)
        hook_reprs = (
            repr(h.hook)
            + repr(h.hook.client_config)
            + repr(h.hook.client)
            + repr(h.cache.get(h.hook.client_config.cache_key))
        )

        tokens = control.issued_tokens()
        urls = control.stats()["urls"]
        h.close()

    canaries = [CANARY_SECRET, WRONG_SECRET, *tokens]
    assert len(tokens) >= 6  # access and refresh tokens of several grants
    assert len(errors) >= 10
    haystacks = {
        "logs": all_logs.text(),
        "log args": "\n".join(repr(r.args) for r in all_logs.records),
        "exceptions": "\n".join(exception_texts(e) for e in errors),
        "reprs": hook_reprs,
        "urls": "\n".join(urls),
    }
    hits = {name: [c[:12] for c in canaries if c in text] for name, text in haystacks.items()}
    assert all_logs.records and urls
    assert hits == {name: [] for name in haystacks}, hits
    report(
        f"leak scan [{mode}]",
        outcome="0 hits",
        canaries=len(canaries),
        log_records=len(all_logs.records),
        exceptions=len(errors),
        urls=len(urls),
    )


def _config(**kwargs: Any) -> ClientConfig:
    return ClientConfig(client_id="cid", client_secret="secret-123", **kwargs)


def test_tls_verification_is_on_by_default() -> None:
    config = _config()
    assert config.verify_ssl is None and config.trust.verify
    with TruConnectClient(config, token_cache=TokenCache()) as client:
        assert client.session.verify == config.trust.requests_verify and isinstance(client.session.verify, str)

    async def check() -> None:
        client = AsyncTruConnectClient(config, token_cache=TokenCache())
        try:
            context = client.http._transport._pool._ssl_context  # type: ignore[attr-defined]
            assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        finally:
            await client.aclose()

    asyncio.run(check())


def test_tls_verification_can_be_turned_off_only_explicitly() -> None:
    config = ClientConfig.from_connection_fields(
        host="api.example.com/connect-api", login="cid", password="pw", extra={"verify_ssl": "false"}
    )
    assert config.api_base == "https://api.example.com/connect-api" and config.verify_ssl is False
    with TruConnectClient(config, token_cache=TokenCache()) as client:
        assert client.session.verify is False


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/connect-api",
        "http://localhost/connect-api",
        "http://[::1]:8080/connect-api",
        "http://127.5.6.7/connect-api",
    ],
)
def test_plain_http_allowed_on_loopback(url: str) -> None:
    config = _config(api_base=url)
    assert config.oauth_url.startswith("http://")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"api_base": "http://api.example.com/connect-api"}, "host"),
        ({"api_base": "http://localhost.evil.example/connect-api"}, "host"),
        ({"api_base": "http://127.0.0.1.evil.example/connect-api"}, "host"),
        ({"oauth_url": "http://idp.example.com/token"}, "extra.oauth_url"),
        ({"api_base": "https://api.example.com/c", "oauth_url": "http://10.0.0.1/token"}, "extra.oauth_url"),
        ({"api_base": "http://127.0.0.1/c", "oauth_url": "http://idp.example.com/token"}, "extra.oauth_url"),
    ],
)
def test_plain_http_refused_elsewhere(fields: dict[str, str], field: str) -> None:
    with pytest.raises(TruConnectConfigError) as info:
        _config(**fields)
    assert field in str(info.value) and "plain http" in str(info.value)
    assert "secret-123" not in str(info.value)


def test_plain_http_allowed_with_explicit_flag() -> None:
    config = _config(
        api_base="http://api.example.com/c", oauth_url="http://idp.example.com/token", allow_insecure_http=True
    )
    assert config.oauth_url == "http://idp.example.com/token"
    from_conn = ClientConfig.from_connection_fields(
        host="http://api.example.com/c", login="a", password="b", extra={"allow_insecure_http": "true"}
    )
    assert from_conn.api_base == "http://api.example.com/c"


def test_hook_connection_with_plain_http_is_refused_before_any_call() -> None:
    with run_emulator(rate_limit_per_minute=None) as emu:
        conn = connection_for(emu, oauth_url="http://idp.example.com/token")
        with pytest.raises(TruConnectConfigError, match="extra.oauth_url"):
            TruConnectHook("x", connection=conn, token_cache=TokenCache()).get_sim("8944000000000000000")
        assert emu.control.stats()["requests_total"] == 0
