"""Fixtures of the end-to-end suite: one emulator and one real Airflow 3 per test session, both on loopback.

Everything started here is stopped here, also when a test fails or the run is interrupted (SIGINT/SIGTERM): the
Airflow components run in their own process groups and are killed by group.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from airflow_deploy import (  # noqa: E402
    E2E_DAGS_DIR,
    EXAMPLE_DAGS_DIR,
    RESULTS_DIR,
    AirflowDeployment,
)

from airflow_provider_truconnect.emulator.server import RunningEmulator, run_emulator  # noqa: E402

#: The example DAGs the project ships (``dags_examples/``) and the e2e suite's own smoke DAG.
EXAMPLE_DAG_IDS = ("truconnect_usage_report", "truconnect_esim_provisioning", "truconnect_low_balance_topup")
SMOKE_DAG_ID = "truconnect_e2e_smoke"
DEFERRING_DAG_IDS = ("truconnect_esim_provisioning", "truconnect_low_balance_topup", SMOKE_DAG_ID)
MAPPING_DAG_IDS = ("truconnect_low_balance_topup",)
DAG_RUN_TIMEOUT = 150.0


def present_example_dag_ids() -> list[str]:
    """:return: the expected example DAG ids whose files exist in ``dags_examples/`` (found by a text scan)."""
    text = "\n".join(p.read_text(errors="replace") for p in sorted(EXAMPLE_DAGS_DIR.glob("*.py")))
    return [dag_id for dag_id in EXAMPLE_DAG_IDS if re.search(rf"[\"']{dag_id}[\"']", text)]


def dag_ids_under_test() -> list[str]:
    """:return: the DAG ids the run tests are parametrised over (``TRUCONNECT_E2E_DAG_IDS=a,b`` narrows them)."""
    ids = [*present_example_dag_ids(), SMOKE_DAG_ID]
    wanted = [d.strip() for d in os.environ.get("TRUCONNECT_E2E_DAG_IDS", "").split(",") if d.strip()]
    return [d for d in ids if d in wanted] if wanted else ids


def dag_sources() -> list[Path]:
    """:return: the files copied into the DAGs folder: ``dags_examples/*.py`` with its ``.airflowignore``, and ours."""
    sources = [*sorted(EXAMPLE_DAGS_DIR.glob("*.py")), *sorted(E2E_DAGS_DIR.glob("*.py"))]
    ignore = EXAMPLE_DAGS_DIR / ".airflowignore"
    return [ignore, *sources] if ignore.is_file() else sources


def _dag_file(dag_id: str) -> str:
    for path in [*EXAMPLE_DAGS_DIR.glob("*.py"), *E2E_DAGS_DIR.glob("*.py")]:
        if re.search(rf"[\"']{dag_id}[\"']", path.read_text(errors="replace")):
            return path.name
    return ""


def _terminate_on_sigterm(signum: int, frame: Any) -> None:
    # Turn SIGTERM into the same path as Ctrl-C so pytest tears the session fixtures down.
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def e2e_results_dir() -> Path:
    """:return: ``test-results/e2e`` (created)."""
    (RESULTS_DIR / "screenshots").mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR


@pytest.fixture(scope="session")
def e2e_emulator() -> Iterator[RunningEmulator]:
    """The Connect API emulator in a subprocess, for every Airflow component and the browser."""
    with run_emulator(mode="subprocess", order_fulfilling_after=1.0, order_complete_after=3.0) as emu:
        yield emu


@pytest.fixture(scope="session")
def airflow(e2e_emulator: RunningEmulator, e2e_results_dir: Path) -> Iterator[AirflowDeployment]:
    """A running Airflow (api-server, scheduler, dag-processor, triggerer) with the example and smoke DAGs."""
    previous = signal.signal(signal.SIGTERM, _terminate_on_sigterm)
    dep = AirflowDeployment(
        {"AIRFLOW_CONN_TRUCONNECT_DEFAULT": e2e_emulator.connection_json()}, dag_sources(), results_dir=e2e_results_dir
    )
    atexit.register(dep.stop)
    started = time.monotonic()
    try:
        dep.start()
        (e2e_results_dir / "startup.json").write_text(
            json.dumps({"seconds": round(time.monotonic() - started, 1), "url": dep.url}) + "\n"
        )
        yield dep
    finally:
        dep.stop()
        atexit.unregister(dep.stop)
        dep.cleanup()
        signal.signal(signal.SIGTERM, previous)


def wait_for_dags(dep: AirflowDeployment, dag_ids: list[str], timeout: float = 90.0) -> dict[str, Any]:
    """Wait until the dag-processor has serialized every DAG in ``dag_ids``.

    :return: the DAGs by id as returned by ``GET /api/v2/dags``.
    :raises AssertionError: on import errors or a timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        dep.check_alive()
        dags = {d["dag_id"]: d for d in dep.api("GET", "/dags", params={"limit": 100})["dags"]}
        if all(d in dags for d in dag_ids):
            return dags
        errors = dep.api("GET", "/importErrors")["import_errors"]
        if os.environ.get("TRUCONNECT_E2E_DAG_IDS"):
            wanted_files = {_dag_file(d) for d in dag_ids}
            errors = [e for e in errors if Path(e["filename"]).name in wanted_files]
        if errors:
            raise AssertionError("DAG import errors: " + json.dumps(errors, indent=1)[:4000])
        if time.monotonic() > deadline:
            raise AssertionError(f"DAGs not parsed after {timeout:.0f}s: missing {set(dag_ids) - set(dags)}")
        time.sleep(0.5)


class RunRecord:
    """One triggered DAG run and what was seen while polling it."""

    def __init__(self, dag_id: str, run_id: str) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.state: str | None = None
        self.seen_states: dict[tuple[str, int], set[str]] = {}
        self.task_instances: list[dict[str, Any]] = []

    def tasks_seen_in(self, state: str) -> list[tuple[str, int]]:
        """:return: ``(task_id, map_index)`` of task instances observed in ``state``."""
        return [key for key, states in self.seen_states.items() if state in states]


@pytest.fixture(scope="session")
def dag_runs(airflow: AirflowDeployment) -> dict[str, RunRecord]:
    """Unpause and trigger every DAG under test at once, poll until all runs finish (bounded).

    :return: the run records by DAG id.
    """
    dag_ids = dag_ids_under_test()
    wait_for_dags(airflow, dag_ids)
    records: dict[str, RunRecord] = {}
    for dag_id in dag_ids:
        airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = airflow.api(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            json={"logical_date": datetime.now(UTC).isoformat(), "conf": {}},
            expect=(200,),
        )
        records[dag_id] = RunRecord(dag_id, run["dag_run_id"])
    deadline = time.monotonic() + DAG_RUN_TIMEOUT
    pending = set(records)
    while pending:
        airflow.check_alive()
        for dag_id in sorted(pending):
            rec = records[dag_id]
            tis = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{rec.run_id}/taskInstances", params={"limit": 1000})[
                "task_instances"
            ]
            for ti in tis:
                rec.seen_states.setdefault((ti["task_id"], ti["map_index"]), set()).add(str(ti["state"]))
            run = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{rec.run_id}")
            if run["state"] in ("success", "failed"):
                rec.state = run["state"]
                rec.task_instances = airflow.api(
                    "GET", f"/dags/{dag_id}/dagRuns/{rec.run_id}/taskInstances", params={"limit": 1000}
                )["task_instances"]
                pending.discard(dag_id)
        if pending and time.monotonic() > deadline:
            summary = {d: {f"{k[0]}[{k[1]}]": sorted(v) for k, v in records[d].seen_states.items()} for d in pending}
            raise AssertionError(f"DAG runs not finished after {DAG_RUN_TIMEOUT:.0f}s: {json.dumps(summary)}")
        if pending:
            time.sleep(0.4)
    return records
