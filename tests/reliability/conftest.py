"""Fixtures of the reliability suite: one shared emulator on a fake clock, the sync/async harness, the figures file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_truconnect.emulator.server import RunningEmulator, run_emulator
from tests.conftest import FakeClock
from tests.reliability.support import REPORT, RESULTS_FILE, Harness


@pytest.fixture(scope="session", autouse=True)
def _write_reliability_report() -> Iterator[None]:
    yield
    if not REPORT:
        return
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    existing: dict[str, Any] = {}
    if RESULTS_FILE.exists():
        try:
            existing = json.loads(RESULTS_FILE.read_text())
        except ValueError:
            existing = {}
    existing.update(REPORT)
    RESULTS_FILE.write_text(json.dumps(dict(sorted(existing.items())), indent=2) + "\n")


@pytest.fixture(scope="session")
def reliability_emulator() -> Iterator[RunningEmulator]:
    """One in-process emulator for the suite, without rate limit; reset onto a fresh fake clock by each test."""
    with run_emulator(clock=FakeClock(), rate_limit_per_minute=None) as emu:
        yield emu


@pytest.fixture
def clocked_emulator(reliability_emulator: RunningEmulator) -> tuple[RunningEmulator, FakeClock]:
    """The suite's emulator with fresh data, tokens, faults and stats, on a new fake clock."""
    clock = FakeClock()
    assert reliability_emulator.state is not None
    reliability_emulator.state.reset(reliability_emulator.config.with_updates({"clock": clock}))
    return reliability_emulator, clock


@pytest.fixture(params=["sync", "async"])
def harness(request: pytest.FixtureRequest, clocked_emulator: tuple[RunningEmulator, FakeClock]) -> Iterator[Harness]:
    """The hook (sync) or the async client path over the emulator, retries waiting on the fake clock."""
    emu, clock = clocked_emulator
    h = Harness(emu=emu, clock=clock, mode=request.param)
    try:
        yield h
    finally:
        h.close()
