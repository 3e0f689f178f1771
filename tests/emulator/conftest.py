"""Load the emulator's pytest plugin unless the installed ``pytest11`` entry point already did."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from airflow_provider_truconnect.emulator import pytest_plugin
from airflow_provider_truconnect.emulator.server import RunningEmulator


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.is_registered(pytest_plugin):
        config.pluginmanager.register(pytest_plugin, "truconnect_emulator")


class Api:
    """A tiny plain-``requests`` client used by the contract tests (no project code)."""

    def __init__(self, emu: RunningEmulator, client_id: str | None = None, secret: str | None = None) -> None:
        self.emu = emu
        self.client_id = client_id or emu.client_id
        self.secret = secret or emu.client_secret
        self.session = requests.Session()
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            response = self.session.post(
                self.emu.oauth_url,
                data={"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.secret},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", "X-Correlation-ID": "test-corr"}
        headers.update(kwargs.pop("headers", {}))
        url = path if path.startswith("http") else self.emu.api_base + path
        return self.session.request(method, url, headers=headers, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture
def emu(truconnect_emulator: RunningEmulator) -> RunningEmulator:
    return truconnect_emulator


@pytest.fixture
def api(emu: RunningEmulator) -> Api:
    return Api(emu)


@pytest.fixture
def other_api(emu: RunningEmulator) -> Api:
    return Api(emu, "other-client", emu.config.clients["other-client"])
