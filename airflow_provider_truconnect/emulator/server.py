"""Run the emulator for tests: in a daemon thread of this process or in a subprocess, over HTTP or HTTPS.

.. code-block:: python

    from airflow_provider_truconnect.emulator.server import run_emulator

    with run_emulator(order_complete_after=0.5) as emu:
        token = requests.post(emu.oauth_url, data={...}).json()["access_token"]
        emu.control.advance(1)

    files = write_tls_files(tmp_path)  # from airflow_provider_truconnect.emulator.tls
    with run_emulator(ssl_certfile=files.server_cert, ssl_keyfile=files.server_key) as emu:
        requests.get(emu.api_base + "/v2/products", verify=files.ca_cert)  # emu.url is https://127.0.0.1:<port>
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import requests

from airflow_provider_truconnect.emulator.config import EmulatorConfig
from airflow_provider_truconnect.emulator.control_client import EmulatorControl

__all__ = [
    "CONFIG_ENV_VAR",
    "EmulatorControl",
    "RunningEmulator",
    "bind_socket",
    "connection_dict",
    "run_emulator",
    "stop_process",
]

if TYPE_CHECKING:
    from airflow_provider_truconnect.emulator.state import EmulatorState

_START_TIMEOUT = 20.0
_URL_LINE = re.compile(r"^TRUCONNECT_EMULATOR_URL=(https?://\S+)$")
#: Seconds uvicorn waits for requests still running when it stops, before it cancels them.
_GRACEFUL_SHUTDOWN = 3


@dataclass
class RunningEmulator:
    """A started emulator and everything a test needs to talk to it (``ca_bundle``: what verifies it over HTTPS)."""

    url: str
    config: EmulatorConfig
    mode: Literal["thread", "subprocess"]
    control: EmulatorControl
    state: EmulatorState | None = None
    ca_bundle: str | None = None
    client_id: str = field(init=False)
    client_secret: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client_id = self.config.default_client
        self.client_secret = self.config.client_secret

    @property
    def api_base(self) -> str:
        """:return: the API base, e.g. ``http://127.0.0.1:8765/connect-api``."""
        return self.url + self.config.api_prefix

    @property
    def oauth_url(self) -> str:
        """:return: the token URL at the server root."""
        return self.url + "/auth/realms/tru-staff/protocol/openid-connect/token"

    @property
    def connection_extra(self) -> dict[str, Any]:
        """:return: the connection ``extra`` (``oauth_url``)."""
        return {"oauth_url": self.oauth_url}

    def connection_dict(self) -> dict[str, Any]:
        """:return: the Airflow connection as a dict (``conn_type``, ``host``, ``login``, ``password``, ``extra``)."""
        return connection_dict(self.api_base, self.client_id, self.client_secret, self.oauth_url)

    def connection_json(self) -> str:
        """:return: the one-line JSON for ``AIRFLOW_CONN_TRUCONNECT_DEFAULT``."""
        return json.dumps(self.connection_dict(), separators=(",", ":"))


def connection_dict(api_base: str, client_id: str, secret: str, oauth_url: str) -> dict[str, Any]:
    """:param api_base: API base URL. :param client_id: login. :param secret: password. :param oauth_url: token URL.
    :return: the Airflow connection JSON object."""
    return {
        "conn_type": "truconnect",
        "host": api_base,
        "login": client_id,
        "password": secret,
        "extra": {"oauth_url": oauth_url},
    }


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Bind a listening socket (``port=0`` picks a free port) that uvicorn can serve on.

    :param host: address.
    :param port: port or 0.
    :return: the bound socket.
    """
    # IPPROTO_TCP explicitly: asyncio disables Nagle only on sockets whose proto says TCP, and accepted sockets inherit
    # it; with proto 0 every answer written in two parts (head, body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _wait_until_up(control: EmulatorControl, deadline: float, is_alive: Any = None) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        if is_alive is not None and not is_alive():
            raise RuntimeError("emulator exited during start-up")
        try:
            if control.health():
                return
        except (requests.RequestException, RuntimeError) as exc:
            last = exc
        time.sleep(0.02)
    raise RuntimeError(f"emulator at {control.base} did not answer in time: {last}")


@dataclass(frozen=True)
class _Tls:
    certfile: str | None = None
    keyfile: str | None = None
    ca_bundle: str | None = None
    server_name: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

    @property
    def bundle(self) -> str | None:
        return self.ca_bundle or self.certfile

    @property
    def verify(self) -> str | bool:
        return self.bundle or True


@contextmanager
def _run_thread(config: EmulatorConfig, tls: _Tls) -> Iterator[RunningEmulator]:
    import uvicorn

    from airflow_provider_truconnect.emulator.app import create_app
    from airflow_provider_truconnect.emulator.state import EmulatorState

    state = EmulatorState(config)
    sock = bind_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(state),
            log_level="warning",
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
            ssl_certfile=tls.certfile,
            ssl_keyfile=tls.keyfile,
        )
    )
    # uvicorn only installs signal handlers in the main thread; this one never is.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="truconnect-emulator", daemon=True)
    thread.start()
    url = f"{tls.scheme}://127.0.0.1:{port}"
    control = EmulatorControl(url, verify=tls.verify, server_name=tls.server_name)
    try:
        _wait_until_up(control, time.monotonic() + _START_TIMEOUT, thread.is_alive)
        yield RunningEmulator(url=url, config=config, mode="thread", control=control, state=state, ca_bundle=tls.bundle)
    finally:
        # Requests still waiting (a delay, a pause, headers that never end) end now instead of holding the shutdown.
        state.close()
        server.should_exit = True
        # Over TLS an idle keep-alive connection holds a graceful shutdown until its close_notify times out.
        server.force_exit = tls.certfile is not None
        thread.join(timeout=10)
        control.close()
        sock.close()


#: Environment variable through which a subprocess emulator receives its configuration (JSON).
CONFIG_ENV_VAR = "TRUCONNECT_EMULATOR_CONFIG_JSON"


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


@contextmanager
def _run_subprocess(config: EmulatorConfig, tls: _Tls) -> Iterator[RunningEmulator]:
    if config.clock is not None:
        raise ValueError("an injected clock only works in thread mode")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    # Through the environment rather than argv: the config holds client secrets, and argv is visible to `ps`.
    env[CONFIG_ENV_VAR] = json.dumps(config.to_json_dict())
    cmd = [
        sys.executable,
        "-m",
        "airflow_provider_truconnect.emulator.cli",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--quiet",
    ]
    if tls.certfile:
        cmd += ["--ssl-certfile", tls.certfile]
    if tls.keyfile:
        cmd += ["--ssl-keyfile", tls.keyfile]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    control: EmulatorControl | None = None
    try:
        url = _read_url(proc)
        control = EmulatorControl(url, verify=tls.verify, server_name=tls.server_name)
        _wait_until_up(control, time.monotonic() + _START_TIMEOUT, lambda: proc.poll() is None)
        yield RunningEmulator(url=url, config=config, mode="subprocess", control=control, ca_bundle=tls.bundle)
    finally:
        if control is not None:
            control.close()
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate a child process, killing it if it has not exited 10 s later.

    :param proc: the child.
    """
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _read_url(proc: subprocess.Popen[str]) -> str:
    result: list[str] = []
    found = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        # Keep draining stdout after the URL line so the child never blocks on a full pipe.
        for line in proc.stdout:
            match = _URL_LINE.match(line.strip())
            if match and not result:
                result.append(match.group(1))
                found.set()
        found.set()

    threading.Thread(target=reader, daemon=True, name="truconnect-emulator-stdout").start()
    found.wait(_START_TIMEOUT)
    if not result:
        raise RuntimeError(f"emulator subprocess did not report its URL (exit code {proc.poll()})")
    return result[0]


@contextmanager
def run_emulator(
    config: EmulatorConfig | None = None,
    *,
    mode: Literal["thread", "subprocess"] = "thread",
    ssl_certfile: str | os.PathLike[str] | None = None,
    ssl_keyfile: str | os.PathLike[str] | None = None,
    ca_bundle: str | os.PathLike[str] | None = None,
    server_name: str | None = None,
    **overrides: Any,
) -> Iterator[RunningEmulator]:
    """Start an emulator on ``127.0.0.1`` and a free port, wait until it answers, stop it on exit.

    :param config: the configuration (default :class:`EmulatorConfig`).
    :param mode: ``"thread"`` (uvicorn in a daemon thread; ``state`` is available) or ``"subprocess"`` (a separate
        process, so benchmarks do not share the GIL with the emulator).
    :param ssl_certfile: serve HTTPS with this certificate (PEM; the server certificate first, then its chain), so
        ``url``, ``api_base``, ``oauth_url`` and the connection JSON use ``https://``.
        :func:`airflow_provider_truconnect.emulator.tls.write_tls_files` writes test certificates.
    :param ssl_keyfile: the certificate's private key (PEM, unencrypted).
    :param ca_bundle: the CA bundle that verifies the certificate, used by the start-up check and ``control``;
        default: ``ssl_certfile`` itself, which works when it holds the chain up to a CA, as the files of
        :mod:`~airflow_provider_truconnect.emulator.tls` do.
    :param server_name: the host name the certificate is valid for, when it is not ``127.0.0.1`` (e.g.
        ``TlsFiles.other_host``): the start-up check and ``control`` verify against that name.
    :param overrides: :class:`EmulatorConfig` fields replacing those of ``config``.
    :return: a context manager yielding the :class:`RunningEmulator`.
    :raises ValueError: when only one of ``ssl_certfile`` and ``ssl_keyfile`` is given.
    """
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("HTTPS needs both ssl_certfile and ssl_keyfile")
    tls = _Tls(
        None if ssl_certfile is None else os.fspath(ssl_certfile),
        None if ssl_keyfile is None else os.fspath(ssl_keyfile),
        None if ca_bundle is None else os.fspath(ca_bundle),
        server_name,
    )
    cfg = config or EmulatorConfig()
    if overrides:
        cfg = cfg.with_updates(overrides)
    runner = _run_thread if mode == "thread" else _run_subprocess
    with runner(cfg, tls) as running:
        yield running
