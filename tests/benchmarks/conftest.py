"""Markers of the benchmark smoke test."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "af3: needs an Airflow 3 feature (excluded from the Airflow 2.11 run)")
