"""The emulator's own objects keep client secrets out of reprs (pytest prints them on failures)."""

from __future__ import annotations

from airflow_provider_truconnect.emulator.config import EmulatorConfig
from airflow_provider_truconnect.emulator.server import RunningEmulator


def test_secrets_are_not_in_reprs(truconnect_emulator: RunningEmulator) -> None:
    config = EmulatorConfig(clients={"canary-id": "CANARY-SECRET-repr"}, default_client="canary-id")
    assert "CANARY-SECRET-repr" not in repr(config)
    assert truconnect_emulator.client_secret not in repr(truconnect_emulator)
    assert truconnect_emulator.client_secret not in repr(truconnect_emulator.config)
