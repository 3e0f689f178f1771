"""Local emulator of the Truphone/1GLOBAL Connect API v2 and its Keycloak token server.

Public names are loaded lazily so that importing the package (e.g. through the pytest plugin) costs nothing until the
emulator is actually used. The emulator never imports Airflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_truconnect.emulator.config import EmulatorConfig
    from airflow_provider_truconnect.emulator.server import EmulatorControl, RunningEmulator, run_emulator
    from airflow_provider_truconnect.emulator.state import EmulatorState
    from airflow_provider_truconnect.emulator.tls import TlsFiles, write_tls_files

__all__ = [
    "EmulatorConfig",
    "EmulatorControl",
    "EmulatorState",
    "RunningEmulator",
    "TlsFiles",
    "run_emulator",
    "write_tls_files",
]

_LOCATIONS = {
    "EmulatorConfig": "config",
    "EmulatorControl": "server",
    "RunningEmulator": "server",
    "run_emulator": "server",
    "EmulatorState": "state",
    "TlsFiles": "tls",
    "write_tls_files": "tls",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
