"""The README is a landing page that must stay true: its code runs, and every file it links to exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_every_relative_link_points_at_a_file_of_the_repository() -> None:
    links = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README) if "://" not in t]
    assert links
    missing = [t for t in links if not (ROOT / t).exists()]
    assert missing == []


@pytest.mark.af3
def test_the_ten_line_example_builds_a_dag_with_a_valid_order_once_rendered() -> None:
    from airflow_provider_truconnect.client.orders import validate_order
    from airflow_provider_truconnect.operators.truconnect import TruConnectCreateOrderOperator

    [example] = [b for b in _python_blocks() if "@dag" in b]
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    dag = namespace["top_up_one_esim"]()  # type: ignore[operator]  # the example calls it too; this keeps the DAG
    assert set(dag.task_dict) == {"sim", "top_up"}  # type: ignore[attr-defined]
    order_task = dag.task_dict["top_up"]  # type: ignore[attr-defined]
    assert isinstance(order_task, TruConnectCreateOrderOperator) and order_task.deferrable
    params = {"iccid": "8944000000000000001", "product_id": "p-1"}
    rendered = _render(order_task.order, params)
    assert validate_order(rendered)["subscriber"]["sim"]["iccid"] == params["iccid"]


def _render(value: object, params: dict[str, str]) -> object:
    if isinstance(value, dict):
        return {k: _render(v, params) for k, v in value.items()}
    if isinstance(value, str):
        return re.sub(r"\{\{ params\.(\w+) \}\}", lambda m: params[m.group(1)], value)
    return value
