"""Throw-away test run by ``run.py`` (copied as ``test_installed_plugin.py`` into a scratch directory).

It uses only the installed wheel: the fixtures come from the ``pytest11`` entry point (no conftest, no
``pytest_plugins``), and the hook talks to the installed emulator over a real loopback socket.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_truconnect
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook


def test_plugin_is_the_installed_one(request: pytest.FixtureRequest) -> None:
    plugin = request.config.pluginmanager.get_plugin("truconnect_emulator")
    assert plugin is not None, "the pytest11 entry point did not register the plugin"
    site = Path(sys.prefix).resolve()
    assert Path(plugin.__file__).resolve().is_relative_to(site)
    assert Path(airflow_provider_truconnect.__file__).resolve().is_relative_to(site)


def test_fixtures_serve_the_installed_hook(truconnect_conn_env: Any) -> None:
    assert truconnect_conn_env.url.startswith("http://127.0.0.1:")
    hook = TruConnectHook()
    ok, message = hook.test_connection()
    assert ok, message
    with TruConnectHook() as hook:
        products = list(hook.list_products())
    assert products and all("id" in p for p in products)
    grants = truconnect_conn_env.control.stats()["token_grants_total"]
    assert grants == {"client_credentials": 1}, grants
