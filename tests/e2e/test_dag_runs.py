"""Run the example DAGs (and the e2e smoke DAG) on a real Airflow and inspect the results through the REST API."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from airflow_deploy import AirflowDeployment
from conftest import DEFERRING_DAG_IDS, MAPPING_DAG_IDS, SMOKE_DAG_ID, RunRecord, dag_ids_under_test
from leak_scan import activation_needles, leak_needles

from airflow_provider_truconnect.emulator.server import RunningEmulator

pytestmark = pytest.mark.e2e

DAG_IDS = dag_ids_under_test()


#: Tasks whose return value holds activation codes because the user asked for them (include_activation_codes=True, or
#: a task that hands them to the subscriber).
CODES_ASKED_FOR = {
    ("truconnect_esim_provisioning", "place_order"),
    ("truconnect_esim_provisioning", "activation_details"),
}


def _assert_no_leak(text: str, needles: dict[str, str], where: str) -> None:
    leaked = [label for label, value in needles.items() if value and value in text]
    assert not leaked, f"{where} contains {', '.join(leaked)}"


def _task_log(airflow: AirflowDeployment, rec: RunRecord, ti: dict[str, Any], try_number: int) -> str:
    body = airflow.api(
        "GET",
        f"/dags/{rec.dag_id}/dagRuns/{rec.run_id}/taskInstances/{ti['task_id']}/logs/{try_number}",
        params={"full_content": "true", "map_index": ti["map_index"]},
        headers={"Accept": "application/json"},
    )
    content = body.get("content")
    lines = []
    for item in content if isinstance(content, list) else [content]:
        lines.append(json.dumps(item) if not isinstance(item, str) else item)
    return "\n".join(lines)


def _all_task_logs(airflow: AirflowDeployment, rec: RunRecord) -> dict[str, str]:
    logs = {}
    for ti in rec.task_instances:
        for try_number in range(1, (ti["try_number"] or 0) + 1):  # 0: never ran (e.g. an empty mapping)
            logs[f"{ti['task_id']}[{ti['map_index']}] try {try_number}"] = _task_log(airflow, rec, ti, try_number)
    return logs


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_run_succeeds(dag_runs: dict[str, RunRecord], dag_id: str) -> None:
    rec = dag_runs[dag_id]
    states = {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in rec.task_instances}
    assert rec.state == "success", f"{dag_id} run {rec.run_id} ended {rec.state}: {states}"
    assert rec.task_instances, f"{dag_id} ran no task"
    assert all(s in ("success", "skipped") for s in states.values()), states


@pytest.mark.parametrize("dag_id", [d for d in DAG_IDS if d in DEFERRING_DAG_IDS])
def test_deferrable_task_went_through_triggerer(
    airflow: AirflowDeployment, dag_runs: dict[str, RunRecord], dag_id: str
) -> None:
    rec = dag_runs[dag_id]
    deferred = rec.tasks_seen_in("deferred")
    assert deferred, f"no task of {dag_id} was seen in state 'deferred': {rec.seen_states}"
    for task_id, map_index in deferred:
        ti = next(t for t in rec.task_instances if t["task_id"] == task_id and t["map_index"] == map_index)
        assert ti["state"] == "success"
        log = _task_log(airflow, rec, ti, ti["try_number"])
        # Through the REST API the task log shows the worker part (deferring) and the triggerer part.
        assert "Pausing task as DEFERRED" in log, f"{task_id}: no deferral in the task log:\n{log[:3000]}"
        assert re.search(r"trigger .*starting", log), f"{task_id}: no triggerer lines in the task log:\n{log[:3000]}"
        assert "trigger completed" in log or "Trigger fired event" in log, log[-3000:]
        # ... which the triggerer wrote to its own file next to the worker's (attempt=N.log.trigger.<job>.log).
        ti_dir = airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={rec.run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            ti_dir = ti_dir / f"map_index={map_index}"
        assert list(ti_dir.glob("attempt=*.log.trigger.*.log")), f"no triggerer log file in {ti_dir}"


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_task_logs_mask_tokens_and_secret(
    airflow: AirflowDeployment, dag_runs: dict[str, RunRecord], e2e_emulator: RunningEmulator, dag_id: str
) -> None:
    rec = dag_runs[dag_id]
    needles = leak_needles(e2e_emulator)
    assert any(k.startswith("issued token") for k in needles), "the emulator issued no token at all"
    codes = activation_needles(e2e_emulator)
    if dag_id == "truconnect_esim_provisioning":
        assert codes, "the eSIM DAG placed no order with activation codes"
    needles.update(codes)
    logs = _all_task_logs(airflow, rec)
    assert logs
    for where, text in logs.items():
        _assert_no_leak(text, needles, f"task log {dag_id} {where}")
    if dag_id == SMOKE_DAG_ID:
        api_log = next(text for where, text in logs.items() if where.startswith("call_api["))
        # "***" from the secret masker, or "eyJ***"(+"***") from Airflow's structlog JWT filter (redact_jwt).
        assert re.search(r"token used \(should be masked\): (eyJ)?\*\*\*", api_log), api_log[-3000:]
        assert "token known to the secret masker: True" in api_log, api_log[-3000:]
        assert "client secret (should be masked): ***" in api_log, api_log[-3000:]


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_xcoms_and_rendered_fields_hold_no_secret(
    airflow: AirflowDeployment, dag_runs: dict[str, RunRecord], e2e_emulator: RunningEmulator, dag_id: str
) -> None:
    rec = dag_runs[dag_id]
    needles = leak_needles(e2e_emulator)
    codes = activation_needles(e2e_emulator)
    entries = airflow.api(
        "GET", f"/dags/{dag_id}/dagRuns/{rec.run_id}/taskInstances/~/xcomEntries", params={"limit": 1000}
    )["xcom_entries"]
    for entry in entries:
        value = airflow.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{rec.run_id}/taskInstances/{entry['task_id']}/xcomEntries/{entry['key']}",
            params={"map_index": entry["map_index"], "stringify": "true"},
        )
        where = f"XCom {entry['task_id']}[{entry['map_index']}] {entry['key']}"
        _assert_no_leak(json.dumps(value), needles, where)
        if (dag_id, entry["task_id"]) not in CODES_ASKED_FOR:
            _assert_no_leak(json.dumps(value), codes, where)
        elif entry["key"] == "return_value":
            assert any(code in json.dumps(value) for code in codes.values()), (
                f"{where}: the codes asked for are missing"
            )
    for ti in rec.task_instances:
        _assert_no_leak(
            json.dumps(ti.get("rendered_fields")), {**needles, **codes}, f"rendered fields of {ti['task_id']}"
        )
    if dag_id == SMOKE_DAG_ID:
        assert any(e["task_id"] == "call_api" for e in entries), entries
        rendered = next(t for t in rec.task_instances if t["task_id"] == "rendered_fields")["rendered_fields"]
        login = rendered["op_kwargs"]["conn_login"]
        assert login == f"{e2e_emulator.client_id} ***", rendered


def test_component_logs_hold_no_token_or_secret(
    airflow: AirflowDeployment, dag_runs: dict[str, RunRecord], e2e_emulator: RunningEmulator
) -> None:
    """Scheduler, triggerer, dag-processor and API server logs, and the task log files on disk.

    Known Airflow 3.3.2 gap: the LocalExecutor's supervisor echoes task log lines to the scheduler's stdout without
    the secret masker (only the structlog JWT filter), so the secret the smoke DAG logs *on purpose* shows there.
    Those deliberate lines are set aside (and listed in ``known-airflow-leaks.txt``); anything else fails.
    """
    needles = {**leak_needles(e2e_emulator), **activation_needles(e2e_emulator)}
    deliberate = ("(should be masked)", "rendered host=")
    files = list(airflow.logs_dir.glob("*.log")) + [p for p in (airflow.home / "logs").rglob("*") if p.is_file()]
    assert files
    known: list[str] = []
    for path in files:
        lines = Path(path).read_text(errors="replace").splitlines()
        kept = [ln for ln in lines if not any(marker in ln for marker in deliberate)]
        known += [f"{path.name}: {ln[:160]}" for ln in lines if ln not in kept and e2e_emulator.client_secret in ln]
        _assert_no_leak("\n".join(kept), needles, str(path))
    (airflow.logs_dir.parent / "known-airflow-leaks.txt").write_text("\n".join(known) + "\n")


@pytest.mark.parametrize("dag_id", [d for d in DAG_IDS if d == "truconnect_usage_report"])
def test_usage_report_wrote_csv(airflow: AirflowDeployment, dag_runs: dict[str, RunRecord], dag_id: str) -> None:
    assert dag_runs[dag_id].state == "success"
    reports = sorted((airflow.home / "reports").rglob("*.csv"))
    assert reports, f"no CSV under {airflow.home / 'reports'}"
    header = reports[0].read_text().splitlines()[0]
    assert "iccid" in header.lower() or "," in header, header
    shutil.copy2(reports[0], airflow.logs_dir.parent / reports[0].name)


@pytest.mark.parametrize("dag_id", [d for d in DAG_IDS if d in MAPPING_DAG_IDS])
def test_dynamic_task_mapping_expanded(dag_runs: dict[str, RunRecord], dag_id: str) -> None:
    mapped = [t for t in dag_runs[dag_id].task_instances if t["map_index"] >= 0]
    assert mapped, f"{dag_id}: no mapped task instance ran"
    assert all(t["state"] == "success" for t in mapped), [(t["task_id"], t["map_index"], t["state"]) for t in mapped]
