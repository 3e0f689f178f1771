"""What every part of the emulator state shares: one lock, the current configuration and the clock."""

from __future__ import annotations

import threading

from airflow_provider_truconnect.emulator.clock import EmulatorClock
from airflow_provider_truconnect.emulator.config import EmulatorConfig


class Runtime:
    """The shared lock, configuration and clock. The state replaces :attr:`config` and :attr:`clock` in place, so
    every part always sees the current ones."""

    def __init__(self, config: EmulatorConfig) -> None:
        """:param config: the initial configuration (its ``clock`` callable, if any, drives the clock)."""
        self.lock = threading.RLock()
        self.config = config
        self.clock = EmulatorClock(config.clock)

    def now(self) -> float:
        """:return: the emulator clock's now."""
        return self.clock.now()
