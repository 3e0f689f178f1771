"""Fixtures shared by the operator, sensor and trigger tests (loaded as a plugin by ``tests/conftest.py``).

The emulator comes from the ``truconnect_emulator`` pytest plugin; orders are made to finish within a fraction of a
second of real time, and the process-wide token cache is emptied before every test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_truconnect.client.token_cache import DEFAULT_TOKEN_CACHE
from airflow_provider_truconnect.emulator.server import RunningEmulator

#: Emulator seconds until an order is FULFILLING / COMPLETED: long enough to need a few polls, short for the suite.
FULFILLING_AFTER = 0.03
COMPLETE_AFTER = 0.12


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    # The emulator forgets its tokens on reset; a token cached by an earlier test would only cost a 401 round trip,
    # but tests that count token requests need a clean slate.
    DEFAULT_TOKEN_CACHE.clear()
    yield
    DEFAULT_TOKEN_CACHE.clear()


@pytest.fixture
def emu(truconnect_conn_env: RunningEmulator) -> RunningEmulator:
    """The emulator with ``AIRFLOW_CONN_TRUCONNECT_DEFAULT`` set and fast orders."""
    truconnect_conn_env.control.set_config(order_fulfilling_after=FULFILLING_AFTER, order_complete_after=COMPLETE_AFTER)
    return truconnect_conn_env


@pytest.fixture
def add_conn(emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Register another connection to the emulator, e.g. ``add_conn("noretry", max_retries=0)``; returns its id."""

    def add(conn_id: str, **extra: Any) -> str:
        conn = emu.connection_dict()
        conn["extra"] = {**conn.get("extra", {}), **extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return add


def esim_product_id(emu: RunningEmulator) -> str:
    """An eSIM product of the emulator's catalogue."""
    assert emu.state is not None
    return next(p.id for p in emu.state.products.values() if "ESIM" in p.sim_type)


@pytest.fixture
def order_body(emu: RunningEmulator) -> Callable[..., dict[str, Any]]:
    """Build a valid new-eSIM order body; ``email=`` / ``product_id=`` select emulator behaviours."""

    def build(*, email: str = "jane@example.com", product_id: str | None = None) -> dict[str, Any]:
        return {
            "operation_type": "ACTIVATION",
            "sim_type": "ESIM",
            "country": "GB",
            "product": {"id": product_id or esim_product_id(emu)},
            "subscriber": {
                "email": email,
                "first_name": "Jane",
                "last_name": "Doe",
                "country_of_residence": "GB",
                "device": {"operating_system": "ios", "model": "iPhone", "id": "device-1"},
            },
        }

    return build


class FakeTaskStateStore:
    """In-memory stand-in for Airflow 3.3's ``context["task_state_store"]`` (shared by all tries of a TI)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        assert value is not None
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeTI:
    """The bits of a task instance the operators and sensors use."""

    def __init__(self, task_id: str = "task", try_number: int = 1, xcoms: dict[str, Any] | None = None) -> None:
        self.task_id = task_id
        self.try_number = try_number
        self.max_tries = 0
        self.xcoms: dict[str, Any] = dict(xcoms or {})
        self.stats_tags: dict[str, str] = {}
        self.first_reschedule_date: Any = None

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)

    def get_first_reschedule_date(self, context: Any) -> Any:
        return self.first_reschedule_date


def make_context(ti: FakeTI | None = None, store: FakeTaskStateStore | None = None, **extra: Any) -> dict[str, Any]:
    """A minimal task context without a database."""
    context: dict[str, Any] = {"ti": ti or FakeTI(), "ds": "2026-01-01", "run_id": "manual__test", **extra}
    if store is not None:
        context["task_state_store"] = store
    return context


@pytest.fixture
def make_ti() -> type[FakeTI]:
    """The fake task instance class (fixtures, because conftest modules are not importable by name)."""
    return FakeTI


@pytest.fixture
def make_ctx() -> Callable[..., dict[str, Any]]:
    """:func:`make_context`."""
    return make_context


@pytest.fixture
def state_store() -> FakeTaskStateStore:
    """An empty fake task state store."""
    return FakeTaskStateStore()


async def first_event(trigger: Any) -> dict[str, Any]:
    """Run a trigger until its first (and only) event, close it as the triggerer would, and return the payload."""
    gen = trigger.run()
    try:
        event = await anext(gen)
    finally:
        await gen.aclose()
    payload: dict[str, Any] = dict(event.payload)
    return payload
