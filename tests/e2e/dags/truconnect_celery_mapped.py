"""E2E DAG for the CeleryExecutor deployment: one Connect API call in each of ``width`` (40) mapped task instances.

Every mapped task is a task process of its own, on whichever Celery worker takes it; it reports the host it ran on
(the worker's ``HOME`` stands for the host: ``tests/e2e/celery_deploy.py``). The run's ``conn_id`` param selects the
connection, so the same DAG measures token grants with ``token_cache=process`` and ``token_cache=host``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task


@dag(
    dag_id="truconnect_celery_mapped",
    schedule=None,
    catchup=False,
    tags=["truconnect", "e2e"],
    params={
        "conn_id": Param("truconnect_default", type="string", description="The TruConnect connection to use."),
        "width": Param(40, type="integer", minimum=1, maximum=200, description="Mapped task instances."),
    },
)
def truconnect_celery_mapped() -> None:
    @task
    def indexes() -> list[int]:
        return list(range(int(get_current_context()["params"]["width"])))

    @task
    def call_api(index: int) -> dict[str, Any]:
        from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

        with TruConnectHook(get_current_context()["params"]["conn_id"]) as hook:
            products = list(hook.list_products())
        return {"index": index, "host": Path.home().name, "pid": os.getpid(), "products": len(products)}

    @task
    def hosts(results: list[dict[str, Any]]) -> dict[str, Any]:
        per_host: dict[str, int] = {}
        for result in results:
            per_host[result["host"]] = per_host.get(result["host"], 0) + 1
        return {"tasks": len(results), "per_host": per_host, "pids": len({r["pid"] for r in results})}

    hosts(call_api.expand(index=indexes()))


truconnect_celery_mapped()
