"""Run the emulator for tests: in a daemon thread of this process or in a subprocess.

.. code-block:: python

    from airflow_provider_truconnect.emulator.server import run_emulator

    with run_emulator(order_complete_after=0.5) as emu:
        token = requests.post(emu.oauth_url, data={...}).json()["access_token"]
        emu.control.advance(1)
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

if TYPE_CHECKING:
    from airflow_provider_truconnect.emulator.state import EmulatorState

_START_TIMEOUT = 20.0
_URL_LINE = re.compile(r"^TRUCONNECT_EMULATOR_URL=(http://\S+)$")


class EmulatorControl:
    """HTTP client of the control plane (``/__emulator/...``); works for thread and subprocess mode alike."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        """:param url: server root, e.g. ``http://127.0.0.1:8765``.
        :param timeout: per-request timeout in seconds."""
        self.base = url.rstrip("/") + "/__emulator"
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.session.request(method, self.base + path, json=body, timeout=self.timeout)
        if response.status_code >= 400:
            raise RuntimeError(f"control {method} {path} failed: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def stats(self) -> dict[str, Any]:
        """:return: the counters (see ``GET /__emulator/stats``)."""
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def reset(self) -> None:
        """Restore the default config, data, clock, tokens, faults and stats."""
        self._call("POST", "/reset")

    def advance(self, seconds: float) -> float:
        """:param seconds: how far to move the emulator clock.
        :return: the new emulator time (epoch seconds)."""
        return float(self._call("POST", "/clock", {"advance": seconds})["now"])

    def set_time(self, epoch: float) -> float:
        """:param epoch: the new emulator time. :return: the new emulator time."""
        return float(self._call("POST", "/clock", {"set": epoch})["now"])

    def now(self) -> float:
        """:return: the emulator time (epoch seconds)."""
        return float(self._call("GET", "/clock")["now"])

    def set_config(self, **fields: Any) -> dict[str, Any]:
        """:param fields: :class:`EmulatorConfig` fields to change (JSON values; not ``clock``).
        :return: the whole new configuration."""
        result: dict[str, Any] = self._call("POST", "/config", fields)
        return result

    def config(self) -> dict[str, Any]:
        """:return: the current configuration."""
        result: dict[str, Any] = self._call("GET", "/config")
        return result

    def add_fault(
        self,
        route: str = "*",
        *,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        drop: bool = False,
        body: Literal["malformed", "html"] | None = None,
        count: int | None = None,
        fraction: float | None = None,
        after: bool = False,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Inject a fault.

        :param route: route template (``GET /v2/sims/{iccid}``, ``POST /v2/orders``), ``token`` or ``*``.
        :param status: HTTP status to answer (error body in the active model, or OAuth shape for ``token``).
        :param retry_after: ``Retry-After`` header value.
        :param delay: seconds to wait before answering (or, with ``after``, after processing).
        :param drop: close the connection without a response.
        :param body: ``"malformed"`` (broken JSON, default 200) or ``"html"`` (gateway page, default 502).
        :param count: fire for the next ``count`` matching requests (default 1 when ``fraction`` is not given).
        :param fraction: fire for this share of matching requests (seeded RNG).
        :param after: process the request first (e.g. create the order), then apply the fault to the response.
        :param seed: RNG seed for ``fraction``.
        :return: the stored fault.
        """
        spec: dict[str, Any] = {"route": route, "delay": delay, "drop": drop, "after": after}
        for key, value in (
            ("status", status),
            ("retry_after", retry_after),
            ("body", body),
            ("count", count),
            ("fraction", fraction),
            ("seed", seed),
        ):
            if value is not None:
                spec[key] = value
        result: dict[str, Any] = self._call("POST", "/faults", spec)
        return result

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._call("DELETE", "/faults")

    def revoke(self, token: str | None = None) -> int:
        """:param token: the token to revoke; None revokes every token.
        :return: how many were revoked."""
        return int(self._call("POST", "/revoke", {} if token is None else {"token": token})["revoked"])

    def issued_tokens(self) -> list[str]:
        """:return: every access and refresh token issued since the last reset (for leak scans)."""
        return list(self._call("GET", "/tokens")["tokens"])

    def orders(self) -> list[dict[str, Any]]:
        """:return: every created order with ``correlation_id``, ``status``, ``output`` and the request body."""
        return list(self._call("GET", "/orders")["orders"])

    def usage(self, iccid: str, used_bytes: int) -> dict[str, Any]:
        """Simulate data use on a SIM.

        :param iccid: the SIM.
        :param used_bytes: bytes consumed.
        :return: a summary of the SIM's subscriptions after the usage.
        """
        result: dict[str, Any] = self._call("POST", "/usage", {"iccid": iccid, "bytes": used_bytes})
        return result

    def set_sim_status(self, iccid: str, status: str) -> dict[str, Any]:
        """:param iccid: the SIM. :param status: ``Released``, ``Downloaded``, ``Installed`` or ``Unavailable``.
        :return: ``{"iccid", "status"}``."""
        result: dict[str, Any] = self._call("POST", f"/sims/{iccid}/status", {"status": status})
        return result

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


@dataclass
class RunningEmulator:
    """A started emulator and everything a test needs to talk to it."""

    url: str
    config: EmulatorConfig
    mode: Literal["thread", "subprocess"]
    control: EmulatorControl
    state: EmulatorState | None = None
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
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _wait_until_up(url: str, deadline: float, is_alive: Any = None) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        if is_alive is not None and not is_alive():
            raise RuntimeError("emulator exited during start-up")
        try:
            if requests.get(url + "/__emulator/health", timeout=2).status_code == 200:
                return
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.02)
    raise RuntimeError(f"emulator at {url} did not answer in time: {last}")


@contextmanager
def _run_thread(config: EmulatorConfig) -> Iterator[RunningEmulator]:
    import uvicorn

    from airflow_provider_truconnect.emulator.app import create_app
    from airflow_provider_truconnect.emulator.state import EmulatorState

    state = EmulatorState(config)
    sock = bind_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(state), log_level="warning", access_log=False, lifespan="off", proxy_headers=False)
    )
    # uvicorn only installs signal handlers in the main thread; this one never is.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="truconnect-emulator", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    control = EmulatorControl(url)
    try:
        _wait_until_up(url, time.monotonic() + _START_TIMEOUT, thread.is_alive)
        yield RunningEmulator(url=url, config=config, mode="thread", control=control, state=state)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        control.close()
        sock.close()


#: Environment variable through which a subprocess emulator receives its configuration (JSON).
CONFIG_ENV_VAR = "TRUCONNECT_EMULATOR_CONFIG_JSON"


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


@contextmanager
def _run_subprocess(config: EmulatorConfig) -> Iterator[RunningEmulator]:
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
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    control: EmulatorControl | None = None
    try:
        url = _read_url(proc)
        control = EmulatorControl(url)
        _wait_until_up(url, time.monotonic() + _START_TIMEOUT, lambda: proc.poll() is None)
        yield RunningEmulator(url=url, config=config, mode="subprocess", control=control)
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
    **overrides: Any,
) -> Iterator[RunningEmulator]:
    """Start an emulator on ``127.0.0.1`` and a free port, wait until it answers, stop it on exit.

    :param config: the configuration (default :class:`EmulatorConfig`).
    :param mode: ``"thread"`` (uvicorn in a daemon thread; ``state`` is available) or ``"subprocess"`` (a separate
        process, so benchmarks do not share the GIL with the emulator).
    :param overrides: :class:`EmulatorConfig` fields replacing those of ``config``.
    :return: a context manager yielding the :class:`RunningEmulator`.
    """
    cfg = config or EmulatorConfig()
    if overrides:
        cfg = cfg.with_updates(overrides)
    runner = _run_thread if mode == "thread" else _run_subprocess
    with runner(cfg) as running:
        yield running
