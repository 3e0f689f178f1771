"""HTTPS: the throw-away certificates of ``emulator.tls`` and the emulator serving them, in both modes and the CLI."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509

from airflow_provider_truconnect.emulator.cli import main
from airflow_provider_truconnect.emulator.fault_answers import NOT_HTTP
from airflow_provider_truconnect.emulator.server import RunningEmulator, run_emulator
from airflow_provider_truconnect.emulator.tls import OTHER_HOST, TlsFiles, write_tls_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_emulator(tls_files: TlsFiles) -> Iterator[RunningEmulator]:
    with run_emulator(
        ssl_certfile=tls_files.server_cert, ssl_keyfile=tls_files.server_key, seed_subscriptions=3
    ) as emu:
        yield emu


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _sans(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


def _token(emu: RunningEmulator, verify: str) -> str:
    response = requests.post(
        emu.oauth_url,
        data={"grant_type": "client_credentials"},
        auth=(emu.client_id, emu.client_secret),
        timeout=10,
        verify=verify,
    )
    assert response.status_code == 200
    token: str = response.json()["access_token"]
    return token


def _handshake(emu: RunningEmulator, context: ssl.SSLContext, server_hostname: str) -> str | None:
    host, port = emu.url.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.version()


def test_files_written(tls_files: TlsFiles) -> None:
    names = sorted(p.name for p in tls_files.directory.iterdir())
    assert names == ["ca.pem", "other-ca.pem", "other-host.key", "other-host.pem", "server.key", "server.pem"]
    for key in (tls_files.server_key, tls_files.other_host_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    (ca,) = _certs(tls_files.ca_cert)
    server, chained_ca = _certs(tls_files.server_cert)
    other, _ = _certs(tls_files.other_host_cert)
    (unrelated,) = _certs(tls_files.other_ca)
    assert chained_ca == ca and server.issuer == ca.subject and other.issuer == ca.subject
    assert unrelated.subject != ca.subject
    assert sorted(_sans(server)) == ["127.0.0.1", "::1", "localhost"]
    assert _sans(other) == [OTHER_HOST] == [tls_files.other_host]
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=1, hours=1)
    assert "PRIVATE KEY" not in repr(tls_files)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid_days"):
        write_tls_files(tmp_path, valid_days=0)
    with pytest.raises(FileNotFoundError):
        write_tls_files(tmp_path / "missing")
    with pytest.raises(ValueError, match="both ssl_certfile and ssl_keyfile"):
        with run_emulator(ssl_certfile=tmp_path / "server.pem"):
            pass


def test_urls_and_connection_use_https(https_emulator: RunningEmulator, tls_files: TlsFiles) -> None:
    emu = https_emulator
    assert emu.url.startswith("https://127.0.0.1:")
    assert emu.api_base == emu.url + "/connect-api" and emu.oauth_url.startswith(emu.url + "/auth/")
    conn = json.loads(emu.connection_json())
    assert conn["host"] == emu.api_base and conn["extra"]["oauth_url"] == emu.oauth_url
    assert emu.ca_bundle == str(tls_files.server_cert)


def test_requests_verifies_with_the_ca_only(https_emulator: RunningEmulator, tls_files: TlsFiles) -> None:
    emu = https_emulator
    token = _token(emu, str(tls_files.ca_cert))
    listed = requests.get(
        emu.api_base + "/v2/products",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        verify=str(tls_files.ca_cert),
    ).json()
    assert listed["data"][0]["_metadata"]["links"]["_self"].startswith(emu.api_base + "/v2/products/")
    for other in (str(tls_files.other_ca), True):  # the unrelated bundle, the system's (certifi)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(emu.url + "/__emulator/health", timeout=10, verify=other)


def test_plain_ssl_client(https_emulator: RunningEmulator, tls_files: TlsFiles) -> None:
    good = ssl.create_default_context(cafile=str(tls_files.ca_cert))
    assert _handshake(https_emulator, good, "127.0.0.1") in ("TLSv1.2", "TLSv1.3")
    assert _handshake(https_emulator, good, "localhost") in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(https_emulator, ssl.create_default_context(cafile=str(tls_files.other_ca)), "127.0.0.1")


def test_certificate_for_another_host_fails_only_on_the_name(tls_files: TlsFiles) -> None:
    with run_emulator(
        ssl_certfile=tls_files.other_host_cert,
        ssl_keyfile=tls_files.other_host_key,
        ca_bundle=tls_files.ca_cert,
        server_name=tls_files.other_host,
        seed_subscriptions=1,
    ) as emu:
        with pytest.raises(requests.exceptions.SSLError, match="mismatch|doesn't match|not valid for"):
            requests.get(emu.url + "/__emulator/health", timeout=10, verify=str(tls_files.ca_cert))
        context = ssl.create_default_context(cafile=str(tls_files.ca_cert))
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|not valid for"):
            _handshake(emu, context, "127.0.0.1")
        assert _handshake(emu, context, OTHER_HOST)  # the chain is fine: the name alone is wrong
        assert emu.control.stats()["requests_total"] == 0  # the control plane verifies against the given name


def test_raw_fault_answers_over_tls(https_emulator: RunningEmulator, tls_files: TlsFiles) -> None:
    emu = https_emulator
    token = _token(emu, str(tls_files.ca_cert))
    context = ssl.create_default_context(cafile=str(tls_files.ca_cert))
    host, port = emu.url.rsplit("//", 1)[1].split(":")
    request = (
        f"GET /connect-api/v2/products HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    replies = []
    for fault in ({"raw": "not_http"}, {"status": 103}, {"body": "truncated"}):
        emu.control.add_fault("GET /v2/products", **fault)
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(request)
                chunks = []
                try:
                    while chunk := tls.recv(65536):
                        chunks.append(chunk)
                except ssl.SSLError:
                    pass  # a close without close_notify
                replies.append(b"".join(chunks))
    assert replies[0] == NOT_HTTP
    assert replies[1] == b"HTTP/1.1 103 Early Hints\r\n\r\n"
    head, body = replies[2].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and 0 < len(body) < int(head.split(b"content-length: ")[1])


def test_subprocess_mode_over_https(tls_files: TlsFiles) -> None:
    with run_emulator(
        mode="subprocess", ssl_certfile=tls_files.server_cert, ssl_keyfile=tls_files.server_key, seed_subscriptions=2
    ) as emu:
        assert emu.url.startswith("https://") and emu.state is None
        token = _token(emu, str(tls_files.ca_cert))
        body = requests.get(
            emu.api_base + "/v2/subscriptions",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            verify=str(tls_files.ca_cert),
        ).json()
        assert len(body["data"]) == 2
        assert emu.control.stats()["token_grants_total"] == {"client_credentials": 1}


def test_cli_prints_https_urls_and_stops(tls_files: TlsFiles) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "airflow_provider_truconnect.emulator.cli", "--port", "0", "--seed-subscriptions", "1"]
    cmd += ["--ssl-certfile", str(tls_files.server_cert), "--ssl-keyfile", str(tls_files.server_key)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
        url = lines[0].strip().split("=", 1)[1]
        assert url.startswith("https://")
        assert json.loads(lines[5])["host"] == url + "/connect-api"
        assert requests.get(url + "/__emulator/health", timeout=10, verify=str(tls_files.ca_cert)).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_a_certificate_without_its_key(tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "0", "--ssl-certfile", str(tls_files.server_cert)]) == 2
    assert "needs both --ssl-certfile and --ssl-keyfile" in capsys.readouterr().err
