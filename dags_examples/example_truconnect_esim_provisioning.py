"""
### TruConnect eSIM provisioning

Orders a new eSIM for one subscriber and hands back what the subscriber needs to install it: the **LPA activation
string** (`LPA:1$rsp.truphone.com$<matching id>`) and the **QR code URL**.

Trigger it manually (or from a CRM through the REST API) with a run configuration such as:

```json
{"email": "ana@example.com", "first_name": "Ana", "last_name": "Silva", "country_of_residence": "PT",
 "product_id": "", "device": {"operating_system": "ios", "model": "iPhone 15", "id": "1234567"}}
```

1. `choose_product` uses `product_id` when given (and checks that it exists and sells eSIMs); otherwise it picks the
   first eSIM product of the catalogue, so the DAG runs out of the box against any account.
2. `place_order` posts an `ACTIVATION` / `ESIM` order, templated from the params, and **defers** while the order is
   fulfilled, so no worker slot is held; the triggerer polls `GET /v2/orders/{id}`. `POST /v2/orders` is not
   idempotent: on Airflow 3.3+ the operator keeps the order id in the task state store, so a retry reattaches to the
   order instead of buying a second eSIM; below 3.3 every try would place a new order, so the task gets no retries
   there (`safe_order_retries`). It asks for the activation codes (`include_activation_codes=True`): handing them to
   the subscriber is what this DAG is for.
3. `get_sim` reads `GET /v2/sims/{iccid}` and keeps only the profile status (its links carry the codes again).
4. `activation_details` returns `{iccid, order_id, sim_status, lpa, qr_code_url}` for the system that delivers them.

The LPA string and QR code URL install the paid eSIM on any phone: they are secrets. The provider registers them with
Airflow's secret masker, and this DAG never logs them; they are stored in the XComs of `place_order` and
`activation_details` only.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from airflow_provider_truconnect.operators.truconnect import TruConnectCreateOrderOperator, TruConnectOperator
from airflow_provider_truconnect.version_compat import safe_order_retries

log = logging.getLogger(__name__)


# [START truconnect_esim_provisioning]
@dag(
    dag_id="truconnect_esim_provisioning",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "truconnect", "provisioning"],
    default_args={"owner": "telecom-ops", "retries": 2, "retry_delay": timedelta(minutes=1)},  # reads only
    params={
        "product_id": Param("", type="string", description="Product to order; empty picks the first eSIM product."),
        "email": Param("demo.subscriber@example.com", type="string"),
        "first_name": Param("Demo", type="string", minLength=1),
        "last_name": Param("Subscriber", type="string", minLength=1),
        "country_of_residence": Param("GB", type="string", minLength=2, maxLength=2),
        "country": Param("GB", type="string", minLength=2, maxLength=2, description="Where the order is placed."),
        "device": Param(
            {"operating_system": "ios", "model": "iPhone", "id": "demo-device-1"},
            type="object",
            description="The subscriber's device (required for eSIM orders).",
        ),
    },
    doc_md=__doc__,
)
def truconnect_esim_provisioning() -> None:
    @task
    def choose_product() -> str:
        """Return the product to order: the configured one, or the first eSIM product in the catalogue."""
        from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

        wanted = get_current_context()["params"]["product_id"].strip()
        with TruConnectHook() as hook:
            product: dict[str, Any] | None
            if wanted:
                product = hook.get_product(wanted)
                if "ESIM" not in product.get("sim_type", []):
                    raise ValueError(f"Product {wanted} is not sold for eSIMs (sim_type={product.get('sim_type')})")
            else:
                product = next((p for p in hook.list_products() if "ESIM" in p.get("sim_type", [])), None)
                if product is None:
                    raise ValueError("The product catalogue has no eSIM product; set params.product_id")
        log.info("Ordering product %s (%s)", product["id"], product.get("name"))
        return str(product["id"])

    # [START howto_operator_truconnect_create_order_deferrable]
    # The documented ACTIVATION + ESIM body [docs/connect-api.md §7.1], templated from the run's params; the operator
    # validates it after rendering, before anything is sent.
    place_order = TruConnectCreateOrderOperator(
        task_id="place_order",
        order={
            "operation_type": "ACTIVATION",
            "sim_type": "ESIM",
            "country": "{{ params.country | upper }}",
            "product": {"id": "{{ ti.xcom_pull(task_ids='choose_product') }}"},
            "subscriber": {
                "email": "{{ params.email }}",
                "first_name": "{{ params.first_name }}",
                "last_name": "{{ params.last_name }}",
                "country_of_residence": "{{ params.country_of_residence | upper }}",
                "device": {
                    "operating_system": "{{ params.device.operating_system }}",
                    "model": "{{ params.device.model }}",
                    "id": "{{ params.device.id }}",
                },
            },
        },
        deferrable=True,
        poll_interval=10.0,
        wait_timeout=1800.0,
        include_activation_codes=True,
        # A retry reattaches to the order the first try placed (Airflow 3.3+); below 3.3 it would buy a second eSIM.
        retries=safe_order_retries(2),
    )
    # [END howto_operator_truconnect_create_order_deferrable]

    get_sim = TruConnectOperator(
        task_id="get_sim",
        endpoint="/v2/sims/{{ ti.xcom_pull(task_ids='place_order')['iccid'] }}",
        # Keep the status only: the SIM resource repeats the activation codes, which need not be stored again.
        response_filter=lambda sim: {"iccid": sim.get("iccid"), "status": sim.get("status")},
    )

    # The codes are read from XCom inside the task, not passed as arguments: arguments are rendered fields, which
    # Airflow stores and shows in the UI. The return value is not logged either.
    @task(show_return_value_in_logs=False)
    def activation_details() -> dict[str, Any]:
        """Return what the subscriber needs to install the eSIM (never logged: the codes are secrets)."""
        from airflow_provider_truconnect.hooks.truconnect import mask_activation_codes

        ti = get_current_context()["ti"]
        order = ti.xcom_pull(task_ids="place_order")
        sim = ti.xcom_pull(task_ids="get_sim")
        mask_activation_codes(order)  # this task process has not seen them yet: register them before any log line
        details = {
            "order_id": order["order_id"],
            "iccid": sim.get("iccid") or order.get("iccid"),
            "sim_status": sim.get("status"),
            "lpa": order.get("lpa"),
            "qr_code_url": order.get("qr_code_url"),
        }
        log.info("eSIM %s is %s; activation codes ready for delivery", details["iccid"], details["sim_status"])
        return details

    choose_product() >> place_order >> get_sim >> activation_details()


truconnect_esim_provisioning()
# [END truconnect_esim_provisioning]
