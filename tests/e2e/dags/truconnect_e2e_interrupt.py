"""E2E DAGs for the interruption tests (``tests/e2e/test_interruptions.py``): one order task with ``retries=2``.

Both DAGs place an ACTIVATION / ESIM order whose product and subscriber e-mail come from the run's params, so each
test run can find its own order on the emulator. ``truconnect_e2e_interrupt_timeout`` gives the order task an
``execution_timeout`` shorter than the answer delay the test injects; ``truconnect_e2e_interrupt`` has none and is
interrupted by a signal to its task process.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param

from airflow_provider_truconnect.operators.truconnect import TruConnectCreateOrderOperator

#: ``execution_timeout`` of the order task in ``truconnect_e2e_interrupt_timeout`` (seconds). Not 1 s: on a loaded
#: machine the task state store reads that come before the refusal took longer than that, and a second try that times
#: out before it refuses makes a third try (still one order, but not the run this DAG is meant to show).
ORDER_EXECUTION_TIMEOUT = 5.0

ORDER: dict[str, Any] = {
    "operation_type": "ACTIVATION",
    "sim_type": "ESIM",
    "country": "GB",
    "product": {"id": "{{ params.product_id }}"},
    "subscriber": {
        "email": "{{ params.email }}",
        "first_name": "Interrupt",
        "last_name": "Test",
        "country_of_residence": "GB",
        "device": {"operating_system": "ios", "model": "iPhone 15", "id": "e2e-interrupt-device"},
    },
}


def _order_dag(dag_id: str, execution_timeout: timedelta | None, doc: str) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        tags=["truconnect", "e2e"],
        params={
            "product_id": Param("", type="string", description="The product to order (an eSIM product)."),
            "email": Param("interrupt@example.com", type="string", description="Identifies the run's order."),
        },
        doc_md=doc,
    ) as order_dag:
        TruConnectCreateOrderOperator(
            task_id="place_order",
            order=ORDER,
            wait_for_completion=False,
            retries=2,
            retry_delay=timedelta(seconds=1),
            execution_timeout=execution_timeout,
        )
    return order_dag


timeout_dag = _order_dag(
    "truconnect_e2e_interrupt_timeout",
    timedelta(seconds=ORDER_EXECUTION_TIMEOUT),
    "The order task times out while POST /v2/orders waits for its answer.",
)
signal_dag = _order_dag(
    "truconnect_e2e_interrupt", None, "The order task is interrupted by a signal while POST /v2/orders is out."
)
