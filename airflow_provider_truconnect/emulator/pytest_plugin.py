"""pytest plugin: a Connect API emulator per test session, reset before every test.

Fixtures:

* ``truconnect_emulator`` -> :class:`~airflow_provider_truconnect.emulator.server.RunningEmulator` (function scope;
  the server itself is shared by the session and reset before each test). A request of an earlier test that is still
  in flight at the reset (its answer sent but not yet counted, or waiting on a ``delay`` fault) is not counted, and
  creates or consumes nothing, in the next test: the reset ends its state generation and waits for it.
* ``truconnect_conn_env`` -> the same emulator, with ``AIRFLOW_CONN_TRUCONNECT_DEFAULT`` pointing at it.

Nothing heavy is imported at module level, so registering the plugin costs other test suites nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_truconnect.emulator.server import RunningEmulator

CONN_ENV_VAR = "AIRFLOW_CONN_TRUCONNECT_DEFAULT"


@pytest.fixture(scope="session")
def _truconnect_emulator_session() -> Iterator[RunningEmulator]:
    from airflow_provider_truconnect.emulator.server import run_emulator

    with run_emulator(mode="thread") as running:
        yield running


@pytest.fixture
def truconnect_emulator(_truconnect_emulator_session: RunningEmulator) -> RunningEmulator:
    """A running emulator with default config, fresh data, clock, faults and stats.

    :param _truconnect_emulator_session: the session's server.
    :return: the running emulator.
    """
    running = _truconnect_emulator_session
    if running.state is not None:
        running.state.reset()
    else:
        running.control.reset()
    return running


@pytest.fixture
def truconnect_conn_env(truconnect_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    """The emulator, with ``AIRFLOW_CONN_TRUCONNECT_DEFAULT`` set to its connection JSON.

    :param truconnect_emulator: the emulator.
    :param monkeypatch: pytest's monkeypatch.
    :return: the running emulator.
    """
    monkeypatch.setenv(CONN_ENV_VAR, truconnect_emulator.connection_json())
    return truconnect_emulator
