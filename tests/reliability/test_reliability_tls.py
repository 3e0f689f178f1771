"""TLS over real sockets: the emulator serves HTTPS with a throw-away CA, and both transports (the hook on requests,
the trigger path on httpx) are run with the CA variables real machines carry pointing at *another* bundle.

The connection's ``verify_ssl`` decides: a CA file verifies, ``false`` skips verification, ``true`` means the certifi
bundle; only when it is not set do ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``SSL_CERT_FILE`` decide, in that
order, the same for both transports. A refused certificate is refused before the request leaves (``sent=False``), on
both paths alike, and nothing reaches the API.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Connection

from airflow_provider_truconnect.client import RetryPolicy, TokenCache, TruConnectConfigError, TruConnectConnectionError
from airflow_provider_truconnect.emulator.server import RunningEmulator, run_emulator
from airflow_provider_truconnect.emulator.tls import TlsFiles, write_tls_files
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook
from tests.reliability.support import report

ENV_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
#: The variables real machines carry, each pointing at an unrelated bundle; and a clean environment.
ENVIRONMENTS = ["none", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_emu(tls: TlsFiles) -> Iterator[RunningEmulator]:
    with run_emulator(ssl_certfile=tls.server_cert, ssl_keyfile=tls.server_key, rate_limit_per_minute=None) as emu:
        yield emu


@pytest.fixture(scope="module")
def wrong_host_emu(tls: TlsFiles) -> Iterator[RunningEmulator]:
    with run_emulator(
        ssl_certfile=tls.other_host_cert,
        ssl_keyfile=tls.other_host_key,
        ca_bundle=tls.ca_cert,
        server_name=tls_other_host(),
        rate_limit_per_minute=None,
    ) as emu:
        yield emu


def tls_other_host() -> str:
    from airflow_provider_truconnect.emulator.tls import OTHER_HOST

    return OTHER_HOST


@pytest.fixture(params=ENVIRONMENTS)
def machine_env(request: pytest.FixtureRequest, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> str:
    """A machine environment: no CA variable, or one CA variable naming an unrelated bundle."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    if request.param != "none":
        monkeypatch.setenv(request.param, str(tls.other_ca))
    return str(request.param)


def _conn(emu: RunningEmulator, **extra: Any) -> Connection:
    return Connection(
        conn_id="tc_tls",
        conn_type="truconnect",
        host=emu.api_base,
        login=emu.client_id,
        password=emu.client_secret,
        extra=json.dumps({"oauth_url": emu.oauth_url, **extra}),
    )


def _hook(emu: RunningEmulator, **extra: Any) -> TruConnectHook:
    return TruConnectHook(
        "tc_tls", connection=_conn(emu, **extra), token_cache=TokenCache(), retry_policy=RetryPolicy(max_retries=0)
    )


def call(path: str, emu: RunningEmulator, **extra: Any) -> Any:
    """One product-list call on the ``sync`` (hook) or ``async`` (trigger client) path."""
    hook = _hook(emu, **extra)
    if path == "sync":
        try:
            return hook.request("GET", "/v2/products", params={"page_size": 1})
        finally:
            hook.close()

    async def run() -> Any:
        client = await hook.get_async_client()
        try:
            return await client.request("GET", "/v2/products", params={"page_size": 1})
        finally:
            await client.aclose()

    return asyncio.run(run())


def _requests_seen(emu: RunningEmulator) -> int:
    return int(emu.control.stats()["requests_total"])


@pytest.mark.parametrize("path", ["sync", "async"])
class TestTheConnectionDecides:
    def test_ca_file_verifies_whatever_the_environment(
        self, path: str, https_emu: RunningEmulator, tls: TlsFiles, machine_env: str
    ) -> None:
        body = call(path, https_emu, verify_ssl=str(tls.ca_cert))
        assert body["data"], (path, machine_env)
        report(f"TLS: verify_ssl=<CA file>, env {machine_env} [{path}]", outcome="verified")

    def test_false_skips_verification_whatever_the_environment(
        self, path: str, https_emu: RunningEmulator, machine_env: str
    ) -> None:
        assert call(path, https_emu, verify_ssl=False)["data"]
        assert call(path, https_emu, verify_ssl="false")["data"]
        report(f"TLS: verify_ssl=false, env {machine_env} [{path}]", outcome="not verified, as configured")

    @pytest.mark.parametrize("setting", [None, True], ids=["default", "true"])
    def test_default_and_true_refuse_a_private_ca(
        self, path: str, https_emu: RunningEmulator, machine_env: str, setting: bool | None
    ) -> None:
        before = _requests_seen(https_emu)
        extra = {} if setting is None else {"verify_ssl": setting}
        with pytest.raises(TruConnectConnectionError) as info:
            call(path, https_emu, **extra)
        err = info.value
        assert "certificate is not trusted" in str(err) and err.sent is False and not err.retryable
        expected_source = (
            "extra.verify_ssl"
            if setting
            else ("certifi" if machine_env == "none" else f"environment variable {machine_env}")
        )
        assert f"trust from {expected_source}" in str(err)
        assert _requests_seen(https_emu) == before  # refused in the handshake: nothing reached the API
        report(
            f"TLS: verify_ssl={'unset' if setting is None else 'true'}, env {machine_env} [{path}]",
            outcome="refused before sending",
        )

    def test_hostname_mismatch_is_refused(
        self, path: str, wrong_host_emu: RunningEmulator, tls: TlsFiles, machine_env: str
    ) -> None:
        before = _requests_seen(wrong_host_emu)
        with pytest.raises(TruConnectConnectionError) as info:
            call(path, wrong_host_emu, verify_ssl=str(tls.ca_cert))
        assert "certificate is not trusted" in str(info.value) and info.value.sent is False
        assert _requests_seen(wrong_host_emu) == before
        report(f"TLS: hostname mismatch, CA file, env {machine_env} [{path}]", outcome="refused before sending")


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_when_the_connection_is_silent_both_paths_honour_the_same_variables(
    path: str, variable: str, https_emu: RunningEmulator, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    if variable == "SSL_CERT_DIR":
        # A directory of hashed certificates, as OpenSSL's c_rehash writes it.
        import ssl

        cert = ssl.PEM_cert_to_DER_cert(tls.ca_cert.read_text())
        from cryptography import x509

        subject_hash = _openssl_subject_hash(x509.load_der_x509_certificate(cert))
        (tmp_path / f"{subject_hash}.0").write_text(tls.ca_cert.read_text())
        monkeypatch.setenv(variable, str(tmp_path))
    else:
        monkeypatch.setenv(variable, str(tls.ca_cert))
    assert call(path, https_emu)["data"]
    report(f"TLS: verify_ssl unset, {variable}=<the CA> [{path}]", outcome="verified")


def _openssl_subject_hash(cert: Any) -> str:
    import subprocess
    import tempfile

    from cryptography.hazmat.primitives import serialization

    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        f.flush()
        out = subprocess.run(
            ["openssl", "x509", "-noout", "-subject_hash", "-in", f.name], capture_output=True, text=True, check=True
        )
    return out.stdout.strip()


def test_the_first_variable_wins_in_the_documented_order(
    https_emu: RunningEmulator, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_cert))
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.other_ca))
    for path in ("sync", "async"):
        assert call(path, https_emu)["data"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.other_ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_cert))
    for path in ("sync", "async"):
        with pytest.raises(TruConnectConnectionError, match="REQUESTS_CA_BUNDLE"):
            call(path, https_emu)


@pytest.mark.parametrize(
    ("extra", "env", "field"),
    [
        ({"verify_ssl": "/no/such/ca.pem"}, {}, "extra.verify_ssl"),
        ({"verify_ssl": "ture"}, {}, "extra.verify_ssl"),
        ({"verify_ssl": 3}, {}, "extra.verify_ssl"),
        ({}, {"REQUESTS_CA_BUNDLE": "/no/such/bundle.pem"}, "environment variable REQUESTS_CA_BUNDLE"),
        ({}, {"SSL_CERT_FILE": "/no/such/bundle.pem"}, "environment variable SSL_CERT_FILE"),
    ],
)
def test_a_trust_setting_that_names_nothing_is_a_config_error_before_any_call(
    https_emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], env: dict[str, str], field: str
) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = _requests_seen(https_emu)
    for path in ("sync", "async"):
        with pytest.raises(TruConnectConfigError) as info:
            call(path, https_emu, **extra)
        assert info.value.field == field
    assert _requests_seen(https_emu) == before


def test_netrc_never_replaces_the_credentials(
    https_emu: RunningEmulator, tls: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ~/.netrc entry for the API host, as a developer machine may have: requests would send it as HTTP Basic
    # credentials on any request without explicit auth (the token request with client_secret_post, and the API call,
    # whose bearer header it would replace).
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login intruder password intruder-secret\n")
    os.chmod(netrc, 0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    before = https_emu.control.stats()["token_grants_total"].get("client_credentials", 0)
    for path in ("sync", "async"):
        assert call(path, https_emu, verify_ssl=str(tls.ca_cert))["data"]
    stats = https_emu.control.stats()
    assert stats["token_grants_total"]["client_credentials"] == before + 2
    assert "intruder" not in json.dumps(stats)
