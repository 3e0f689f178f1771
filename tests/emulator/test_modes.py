"""Server modes, CLI, config, plugin fixtures and data scale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from airflow_provider_truconnect.emulator.cli import build_parser, config_from_args
from airflow_provider_truconnect.emulator.config import EmulatorConfig
from airflow_provider_truconnect.emulator.server import run_emulator
from airflow_provider_truconnect.emulator.state import EmulatorState

ROOT = Path(__file__).resolve().parents[2]


def test_conn_env_fixture(truconnect_conn_env):
    conn = json.loads(os.environ["AIRFLOW_CONN_TRUCONNECT_DEFAULT"])
    assert conn == {
        "conn_type": "truconnect",
        "host": truconnect_conn_env.api_base,
        "login": "truconnect-demo",
        "password": "demo-secret-change-me",
        "extra": {"oauth_url": truconnect_conn_env.oauth_url},
    }
    assert truconnect_conn_env.connection_extra == {"oauth_url": truconnect_conn_env.oauth_url}


def test_reset_between_tests_part_1(emu):
    emu.control.set_config(error_model="rfc7807")
    emu.control.add_fault("*", status=500)
    emu.control.advance(10_000)
    # The changes took (part 2 checks that the next test does not see them).
    assert emu.control.config()["error_model"] == "rfc7807" and emu.state.clock.offset >= 10_000
    assert len(requests.get(emu.url + "/__emulator/faults", timeout=10).json()) == 1


def test_reset_between_tests_part_2(emu):
    assert emu.control.config()["error_model"] == "classic"
    assert requests.get(emu.url + "/__emulator/faults", timeout=10).json() == []
    assert emu.state.clock.offset == 0


def test_injected_clock_thread_mode():
    now = [1_700_000_000.0]
    with run_emulator(clock=lambda: now[0], seed_subscriptions=5, order_complete_after=2) as emu:
        assert emu.control.now() == now[0]
        now[0] += 100
        assert emu.control.now() == 1_700_000_100.0
        assert emu.control.advance(5) == 1_700_000_105.0


def test_config_validation():
    with pytest.raises(ValueError):
        EmulatorConfig(error_model="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EmulatorConfig().with_updates({"nope": 1})
    with pytest.raises(ValueError):
        EmulatorConfig().with_updates({"rate_limit_per_minute": "10"})
    cfg = EmulatorConfig.from_json_dict(EmulatorConfig(seed=7).to_json_dict())
    assert cfg.seed == 7


def test_cli_args_to_config():
    args = build_parser().parse_args(
        ["--port", "0", "--seed-subscriptions", "5", "--order-complete-after", "0.5", "--no-refresh-tokens",
         "--rate-limit", "0", "--client", "x:y"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert cfg.seed_subscriptions == 5 and cfg.order_complete_after == 0.5 and cfg.order_fulfilling_after <= 0.5
    assert cfg.issue_refresh_tokens is False and cfg.rate_limit_per_minute is None
    assert cfg.clients["x"] == "y"


def test_subprocess_mode():
    with run_emulator(mode="subprocess", seed_subscriptions=3) as emu:
        assert emu.state is None
        token = requests.post(
            emu.oauth_url,
            data={"grant_type": "client_credentials"},
            auth=(emu.client_id, emu.client_secret),
            timeout=10,
        ).json()["access_token"]
        body = requests.get(
            emu.api_base + "/v2/subscriptions", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        assert len(body["data"]) == 3
        assert emu.control.stats()["token_grants_total"] == {"client_credentials": 1}


def test_cli_prints_connection_and_stops_on_sigterm():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_truconnect.emulator.cli", "--port", "0", "--seed-subscriptions", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
        url = lines[0].strip().split("=", 1)[1]
        conn = json.loads(lines[5])
        assert conn["host"] == url + "/connect-api" and conn["extra"]["oauth_url"].startswith(url + "/auth/")
        assert requests.get(url + "/__emulator/health", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_seed_100k_and_page_through():
    state = EmulatorState(EmulatorConfig(seed_subscriptions=100_000))
    client = state.config.default_client
    assert len(state.client_subs[client]) == 100_000
    seen, page, more = 0, 1, True
    while more:
        items, more = state.list_subscriptions(client, page, 1000)
        seen += len(items)
        page += 1
    assert seen == 100_000
    low, _ = state.list_subscriptions(client, 1, 1000, statuses=frozenset({"ACTIVE"}))
    assert len(low) == 1000


def test_seed_is_deterministic():
    a = EmulatorState(EmulatorConfig(seed=3, seed_subscriptions=50))
    b = EmulatorState(EmulatorConfig(seed=3, seed_subscriptions=50))
    assert [s.id for s in a.client_subs["truconnect-demo"]] == [s.id for s in b.client_subs["truconnect-demo"]]
    assert list(a.products) == list(b.products)
