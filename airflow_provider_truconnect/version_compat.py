"""Airflow version gates of the provider (a copy of the idea of ``airflow.providers.common.compat.version_compat``,
whose header asks providers to copy rather than import it)."""

from __future__ import annotations


def _airflow_version() -> tuple[int, int]:
    from importlib.metadata import version

    major, minor = version("apache-airflow").split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


#: Airflow 3.3 brought the task state store, which makes retries of an order task safe.
AIRFLOW_V_3_3_PLUS = _airflow_version() >= (3, 3)


def safe_order_retries(retries: int) -> int:
    """Retries for a task that places an order: ``retries`` where a retry reattaches to the order an earlier try
    placed (Airflow 3.3+, the task state store), else 0, because every try would place a new order there.

    :param retries: the retries wanted.
    """
    return retries if AIRFLOW_V_3_3_PLUS else 0
