"""
### TruConnect daily usage report

Reads **every** subscription of the account from the Connect API (`GET /v2/subscriptions`, 100 per page), and
writes one CSV row per *product and status* with the number of subscriptions, the data allowance sold, the data used
(`initial_balance - current_balance`) and the data left (`current_balance`), all in bytes.

* **Where the report goes:** `params.report_dir`; empty means `$AIRFLOW_HOME/reports` (or the system temp directory
  when `AIRFLOW_HOME` is not set). The file is `truconnect_usage_<YYYY-MM-DD>.csv`, named after the run's date, and is
  replaced atomically, so re-running a day overwrites that day's report.
* **Returns** a small summary (`path`, `rows`, `subscriptions`, totals) for XCom; the subscriptions themselves never
  go to XCom.
* Balances may arrive as JSON numbers or numeric strings; both are normalised with `to_bytes`. A subscription whose
  balances cannot be read is counted in `unreadable` and left out of the byte totals.

Connection: `truconnect_default` (OAuth2 client credentials; see the provider README).
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

log = logging.getLogger(__name__)

#: CSV columns, in order.
REPORT_COLUMNS = (
    "product_id",
    "product_name",
    "status",
    "subscriptions",
    "initial_bytes",
    "used_bytes",
    "remaining_bytes",
)
PAGE_SIZE = 100
_LOG_EVERY = 500


def _report_dir(configured: str) -> Path:
    if configured:
        return Path(configured).expanduser()
    airflow_home = os.environ.get("AIRFLOW_HOME")
    return Path(airflow_home) / "reports" if airflow_home else Path(tempfile.gettempdir()) / "truconnect-reports"


# [START truconnect_usage_report]
@dag(
    dag_id="truconnect_usage_report",
    schedule="@daily",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["example", "truconnect", "reporting"],
    default_args={"owner": "telecom-ops", "retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "report_dir": Param(
            "",
            type="string",
            description="Directory for the CSV; empty means $AIRFLOW_HOME/reports.",
        ),
    },
    doc_md=__doc__,
)
def truconnect_usage_report() -> None:
    @task
    def aggregate_usage() -> dict[str, Any]:
        """Page through every subscription and sum balances per (product, status)."""
        from airflow_provider_truconnect.client.models import SubscriptionStatus, to_bytes
        from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

        hook = TruConnectHook(truconnect_conn_id="truconnect_default")
        groups: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        seen = unreadable = 0
        with hook:
            for sub in hook.list_subscriptions(page_size=PAGE_SIZE):
                seen += 1
                if seen % _LOG_EVERY == 0:
                    log.info("Read %d subscriptions so far", seen)
                status = SubscriptionStatus.parse(sub.get("status")).value
                key = (str(sub.get("product_id") or ""), str(sub.get("name") or ""), status)
                initial, current = to_bytes(sub.get("initial_balance")), to_bytes(sub.get("current_balance"))
                group = groups[key]
                group[0] += 1
                if initial is None or current is None:
                    unreadable += 1
                    continue
                group[1] += initial
                # A top-up can make current exceed initial on some plans; usage is never negative.
                group[2] += max(initial - current, 0)
                group[3] += current
        log.info("Read %d subscriptions into %d product/status groups", seen, len(groups))
        if unreadable:
            log.warning("%d subscriptions had unreadable balances and are left out of the byte totals", unreadable)
        rows = [
            dict(zip(REPORT_COLUMNS, (pid, name, status, *values), strict=True))
            for (pid, name, status), values in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2]))
        ]
        return {"rows": rows, "subscriptions": seen, "unreadable": unreadable}

    @task
    def write_report(usage: dict[str, Any]) -> dict[str, Any]:
        """Write the CSV atomically and return where it is, with a few totals."""
        context = get_current_context()
        run_date = context["dag_run"].run_after.date()
        directory = _report_dir(context["params"]["report_dir"])
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"truconnect_usage_{run_date.isoformat()}.csv"
        rows: list[dict[str, Any]] = usage["rows"]
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".truconnect_usage_", suffix=".csv.tmp")
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=REPORT_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        summary = {
            "path": str(path),
            "rows": len(rows),
            "subscriptions": usage["subscriptions"],
            "unreadable": usage["unreadable"],
            "used_bytes": sum(r["used_bytes"] for r in rows),
            "remaining_bytes": sum(r["remaining_bytes"] for r in rows),
        }
        log.info("Wrote %d rows covering %d subscriptions to %s", summary["rows"], summary["subscriptions"], path)
        return summary

    write_report(aggregate_usage())


truconnect_usage_report()
# [END truconnect_usage_report]
