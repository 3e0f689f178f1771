"""E2E smoke DAG: calls the Connect API through the hook, logs a token on purpose, defers once on the triggerer.

Used by ``tests/e2e`` next to the example DAGs: the test checks the logged token shows as ``***``, that no token or
secret appears in logs, XComs or rendered fields, and that the deferred task went through the triggerer.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.providers.common.compat.sdk import redact
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.time_delta import WaitSensor
from airflow.sdk import dag, task

from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

log = logging.getLogger(__name__)


def _show_rendered(conn_host: str, conn_login: str, **_: object) -> str:
    log.info("rendered host=%s login=%s", conn_host, conn_login)
    return conn_host


@dag(dag_id="truconnect_e2e_smoke", schedule=None, catchup=False, tags=["truconnect", "e2e"])
def truconnect_e2e_smoke() -> None:
    @task
    def call_api() -> dict[str, object]:
        with TruConnectHook() as hook:
            products = hook.request("GET", "/v2/products")
            first_sub = next(iter(hook.list_subscriptions(page_size=1)))
            sim = hook.get_sim(first_sub["sim_id"])
            token = hook.client.token().access_token
            # Deliberately log the token: the secret masker must hide it. Airflow's structlog JWT filter hides
            # anything starting with "eyJ" anyway, so also prove the hook registered the token with the masker.
            log.info("token used (should be masked): %s", token)
            log.info("token known to the secret masker: %s", redact(token) == "***")
            log.info("client secret (should be masked): %s", hook.connection.password)
            return {"products": len(products.get("data", [])), "iccid": sim.get("iccid", first_sub["sim_id"])}

    rendered = PythonOperator(
        task_id="rendered_fields",
        python_callable=_show_rendered,
        op_kwargs={
            "conn_host": "{{ conn.truconnect_default.host }}",
            # Airflow must redact a connection password that ends up in a rendered template field.
            "conn_login": "{{ conn.truconnect_default.login }} {{ conn.truconnect_default.password }}",
        },
    )

    wait = WaitSensor(task_id="wait_deferred", time_to_wait=timedelta(seconds=2), deferrable=True)

    call_api() >> rendered >> wait


truconnect_e2e_smoke()
