"""An order task interrupted while ``POST /v2/orders`` is in flight never places a second order (issue 11).

The DAGs are in ``tests/e2e/dags/truconnect_e2e_interrupt.py``: one order task with ``retries=2`` and a 1 s
``retry_delay``. The emulator creates the order and then holds its answer back (a ``delay`` fault with
``after=True``); the try is interrupted meanwhile, by its ``execution_timeout`` or by a signal to its task process.
Each run orders with an e-mail of its own, which finds its order on the emulator. What a run has to end with: the run
failed, one order on the emulator and one ``POST /v2/orders`` received for it, two tries of which the second refused
to send the order again, with a message that quotes the first request's correlation id and says how to check whether
the order exists, and the sending record left in the task state store without an order id. Without faults the same
DAGs succeed with one order (the control case).

Observations (tries, signals, durations, the refusal message) go to ``test-results/e2e/interruptions.json``.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psutil
import pytest
from airflow_deploy import RESULTS_DIR, AirflowDeployment
from conftest import wait_for_dags

from airflow_provider_truconnect.client.client import TruConnectClient
from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.operators.truconnect import SENDING_ORDER_KEY, TruConnectCreateOrderOperator

# af33: the task state store (Airflow 3.3+) is what stops the second order.
pytestmark = [pytest.mark.e2e, pytest.mark.af33]

TIMEOUT_DAG_ID = "truconnect_e2e_interrupt_timeout"
SIGNAL_DAG_ID = "truconnect_e2e_interrupt"
TASK_ID = "place_order"
ORDER_ROUTE = "POST /v2/orders"
#: How late the emulator answers the order in the execution_timeout case: far beyond the task's 5 s timeout.
TIMEOUT_CASE_DELAY = 20.0
#: How late it answers in the signal case: time to find the task process, signal it and wait out the grace period,
#: and still below the client's 30 s read timeout (a read timeout is another failure, tested elsewhere).
SIGNAL_CASE_DELAY = 25.0
#: How long the task process gets between SIGTERM and SIGKILL, like a pod's termination grace period (generous: the
#: operator stops at once, but the runner then reports the failure and exits on a loaded machine).
TERMINATION_GRACE = 20.0
#: Generous bounds for a loaded 2-core machine; none of them is asserted as a duration.
RUN_TIMEOUT = 240.0
ORDER_PLACED_TIMEOUT = 150.0
IDLE_TIMEOUT = SIGNAL_CASE_DELAY + 60.0
RESULTS_FILE = RESULTS_DIR / "interruptions.json"


# --------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def interrupt_dags(airflow: AirflowDeployment) -> AirflowDeployment:
    """The interruption DAGs, parsed and unpaused."""
    wait_for_dags(airflow, [TIMEOUT_DAG_ID, SIGNAL_DAG_ID])
    for dag_id in (TIMEOUT_DAG_ID, SIGNAL_DAG_ID):
        airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    return airflow


@pytest.fixture(scope="module")
def esim_product(e2e_emulator: RunningEmulator) -> str:
    """:return: the id of the first product the emulator sells for eSIMs."""
    conn = e2e_emulator.connection_dict()
    config = ClientConfig.from_connection_fields(
        host=conn["host"], login=conn["login"], password=conn["password"], extra=conn["extra"]
    )
    with TruConnectClient(config) as client:
        product = next((p for p in client.list_products() if "ESIM" in p.get("sim_type", [])), None)
    assert product is not None, "the emulator's catalogue has no eSIM product"
    return str(product["id"])


class Runs:
    """The DAG runs a test triggered; any still going at teardown is marked failed so it places nothing later."""

    def __init__(self, airflow: AirflowDeployment, product_id: str) -> None:
        self.airflow = airflow
        self.product_id = product_id
        self.started: list[tuple[str, str]] = []

    def trigger(self, dag_id: str, label: str) -> tuple[str, str]:
        """Trigger ``dag_id`` with a new subscriber e-mail.

        :return: the run id and the e-mail that identifies its order.
        """
        email = f"interrupt-{label}-{uuid.uuid4().hex[:10]}@example.com"
        run = self.airflow.api(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            json={
                "logical_date": datetime.now(UTC).isoformat(),
                "conf": {"product_id": self.product_id, "email": email},
            },
        )
        self.started.append((dag_id, run["dag_run_id"]))
        return run["dag_run_id"], email

    def stop_unfinished(self) -> None:
        for dag_id, run_id in self.started:
            try:
                state = self.airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
                if state not in ("success", "failed"):
                    self.airflow.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
            except Exception as exc:  # noqa: BLE001 - best effort at teardown, the deployment stops anyway
                print(f"could not stop run {dag_id}/{run_id}: {exc!r}")


@pytest.fixture
def runs(interrupt_dags: AirflowDeployment, esim_product: str, e2e_emulator: RunningEmulator) -> Iterator[Runs]:
    """Runs of the interruption DAGs; faults cleared before and after, unfinished runs stopped after."""
    control = e2e_emulator.control
    control.clear_faults()
    # An answer still held back (by a test that failed) would be counted in the next test's POSTs.
    assert control.wait_idle(timeout=IDLE_TIMEOUT), f"the emulator still serves a request after {IDLE_TIMEOUT:.0f}s"
    tracker = Runs(interrupt_dags, esim_product)
    try:
        yield tracker
    finally:
        control.clear_faults()
        tracker.stop_unfinished()
        control.wait_idle(timeout=IDLE_TIMEOUT)


# ---------------------------------------------------------------------------------------------------- helpers
def _ti_path(dag_id: str, run_id: str) -> str:
    return f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK_ID}"


def _task_instance(airflow: AirflowDeployment, dag_id: str, run_id: str) -> dict[str, Any]:
    ti: dict[str, Any] = airflow.api("GET", _ti_path(dag_id, run_id))
    return ti


def _wait_run_finished(airflow: AirflowDeployment, dag_id: str, run_id: str) -> str:
    """:return: the final state of the run (``success`` or ``failed``)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        airflow.check_alive()
        state = str(airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])
        if state in ("success", "failed"):
            return state
        if time.monotonic() > deadline:
            ti = _task_instance(airflow, dag_id, run_id)
            raise AssertionError(
                f"run {dag_id}/{run_id} still {state} after {RUN_TIMEOUT:.0f}s; {TASK_ID} is {ti['state']} "
                f"(try {ti['try_number']})"
            )
        time.sleep(0.5)


def _orders_for(emu: RunningEmulator, email: str) -> list[dict[str, Any]]:
    """:return: the orders the emulator created for ``email``."""
    return [o for o in emu.control.orders() if (o.get("request") or {}).get("subscriber", {}).get("email") == email]


def _order_posts(emu: RunningEmulator) -> int:
    """:return: how many ``POST /v2/orders`` the emulator has answered (any status, or none)."""
    return sum(emu.control.stats()["requests_by_route"].get(ORDER_ROUTE, {}).values())


def _posts_received_since(emu: RunningEmulator, before: int, wait: float) -> int:
    """Wait until no request is in flight (a held answer counts once sent), then count the order POSTs since."""
    assert emu.control.wait_idle(timeout=wait), f"the emulator still serves a request after {wait:.0f}s"
    return _order_posts(emu) - before


def _wait_order_placed(
    airflow: AirflowDeployment, emu: RunningEmulator, dag_id: str, run_id: str, email: str
) -> dict[str, Any]:
    """Wait until the emulator created the run's order (its answer is then held back by the fault)."""
    deadline = time.monotonic() + ORDER_PLACED_TIMEOUT
    while True:
        orders = _orders_for(emu, email)
        if orders:
            return orders[0]
        airflow.check_alive()
        run_state = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if run_state in ("success", "failed") or time.monotonic() > deadline:
            ti = _task_instance(airflow, dag_id, run_id)
            raise AssertionError(
                f"no order reached the emulator for run {run_id} (run {run_state}, {TASK_ID} {ti['state']}, try "
                f"{ti['try_number']}) within {ORDER_PLACED_TIMEOUT:.0f}s"
            )
        time.sleep(0.3)


def _tries(airflow: AirflowDeployment, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """:return: every try of the order task (``/tries``), by try number."""
    tries = airflow.api("GET", f"{_ti_path(dag_id, run_id)}/tries")["task_instances"]
    return sorted(tries, key=lambda t: t["try_number"])


def _task_log(airflow: AirflowDeployment, dag_id: str, run_id: str, try_number: int) -> str:
    """:return: the log of one try as the REST API serves it (structured lines as JSON, one a line)."""
    body = airflow.api(
        "GET",
        f"{_ti_path(dag_id, run_id)}/logs/{try_number}",
        params={"full_content": "true", "map_index": -1},
        headers={"Accept": "application/json"},
    )
    content = body.get("content")
    items = content if isinstance(content, list) else [content]
    return "\n".join(item if isinstance(item, str) else json.dumps(item) for item in items)


def _state_store(airflow: AirflowDeployment, dag_id: str, run_id: str, key: str) -> Any:
    """:return: the value under ``key`` in the order task's state store, or None when there is none."""
    resp = airflow.session.get(
        f"{airflow.url}/api/v2{_ti_path(dag_id, run_id)}/state-store/{key}",
        params={"map_index": -1},
        headers={"Authorization": f"Bearer {airflow.token()}"},
        timeout=60,
    )
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, f"state store {key}: {resp.status_code} {resp.text[:500]}"
    return resp.json()["value"]


def _record(name: str, data: dict[str, Any]) -> None:
    """Keep what a test observed in ``interruptions.json`` (one entry per test, last run wins)."""
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.is_file() else {}
    current[name] = data
    RESULTS_FILE.write_text(json.dumps(current, indent=1, default=str) + "\n")


def _refusal_line(log: str) -> str:
    """:return: the log line that carries the refusal (for the results file and failure messages)."""
    lines = [ln for ln in log.splitlines() if "does not send it again" in ln]
    return lines[-1] if lines else ""


def _assert_interrupted_once(
    airflow: AirflowDeployment, emu: RunningEmulator, dag_id: str, run_id: str, email: str, posts_before: int
) -> dict[str, Any]:
    """The outcome every interruption must have. :return: observations for the results file."""
    state = _wait_run_finished(airflow, dag_id, run_id)
    ti = _task_instance(airflow, dag_id, run_id)
    tries = _tries(airflow, dag_id, run_id)
    try_states = {t["try_number"]: t["state"] for t in tries}
    logs = {n: _task_log(airflow, dag_id, run_id, n) for n in sorted(try_states)}
    orders = _orders_for(emu, email)
    record = _state_store(airflow, dag_id, run_id, SENDING_ORDER_KEY)
    observed = {
        "run_state": state,
        "task_state": ti["state"],
        "try_number": ti["try_number"],
        "max_tries": ti["max_tries"],
        "tries": try_states,
        "orders": [{k: o.get(k) for k in ("id", "correlation_id", "status")} for o in orders],
        "sending_record": record,
        "refusal": _refusal_line(logs.get(2, ""))[:3000],
    }
    print(json.dumps(observed, indent=1, default=str))

    # The promise first: one order, from one request.
    assert len(orders) == 1, f"expected exactly one order for {email}, found {len(orders)}: {observed}"
    order = orders[0]
    first_cid = order["correlation_id"]
    assert first_cid, order
    posts = _posts_received_since(emu, posts_before, wait=IDLE_TIMEOUT)
    observed["order_posts_received"] = posts
    assert posts == 1, f"expected one POST /v2/orders for this run, the emulator received {posts}: {observed}"

    assert state == "failed", f"run ended {state}: {observed}"
    assert ti["state"] == "failed", observed
    # Two tries of the three allowed: the second failed without leaving a retry.
    assert ti["max_tries"] == 2, observed
    assert ti["try_number"] == 2, f"expected exactly 2 tries: {observed}"
    assert sorted(try_states) == [1, 2], observed
    assert try_states[2] == "failed", observed

    # The second try refused to send again, quoting the first request and saying how to check.
    refusal = logs[2]
    assert "does not send it again" in refusal, f"no refusal in the log of try 2:\n{refusal[-4000:]}"
    for needle in (
        first_cid,
        "AirflowFailException",
        "Check whether the order exists",
        "GET /v2/subscriptions?iccid=",
        SENDING_ORDER_KEY,
        "TruConnectOrderSensor",
    ):
        assert needle in refusal, f"{needle!r} missing from the log of try 2:\n{refusal[-4000:]}"
    assert "Placed order" not in refusal and "Reattaching" not in refusal, refusal[-4000:]
    # Try 1 never saw the answer: it was interrupted while the request was out.
    for needle in ("/v2/orders ->", "Placed order"):
        assert needle not in logs[1], f"try 1 got the order's answer, so it was not interrupted:\n{logs[1][-4000:]}"

    # The task state store keeps the sending record of try 1, without an order id.
    assert isinstance(record, dict), f"no sending record in the task state store: {record!r}"
    assert record.get("correlation_id") == first_cid, record
    assert record.get("try_number") == 1, record
    assert "order_id" not in record, record
    stored_id = _state_store(airflow, dag_id, run_id, TruConnectCreateOrderOperator.external_id_key)
    assert stored_id is None, f"an order id was stored although no try learned it: {stored_id!r}"
    return observed


# ------------------------------------------------------------------------------------------------------ tests
def test_control_runs_place_one_order_each(runs: Runs, e2e_emulator: RunningEmulator) -> None:
    """Without faults both DAGs succeed with one order each: the interruption tests cannot pass by never ordering."""
    airflow = runs.airflow
    started = time.monotonic()
    posts_before = _order_posts(e2e_emulator)
    triggered = {dag_id: runs.trigger(dag_id, "control") for dag_id in (TIMEOUT_DAG_ID, SIGNAL_DAG_ID)}
    observed: dict[str, Any] = {}
    for dag_id, (run_id, email) in triggered.items():
        state = _wait_run_finished(airflow, dag_id, run_id)
        ti = _task_instance(airflow, dag_id, run_id)
        orders = _orders_for(e2e_emulator, email)
        record = _state_store(airflow, dag_id, run_id, SENDING_ORDER_KEY)
        observed[dag_id] = {"run_state": state, "try_number": ti["try_number"], "orders": len(orders)}
        assert state == "success", f"{dag_id} control run ended {state} (try {ti['try_number']}): {observed}"
        assert ti["try_number"] == 1, observed
        assert len(orders) == 1, f"{dag_id}: expected one order for {email}, found {len(orders)}"
        order_id = orders[0]["id"]
        assert isinstance(record, dict) and record.get("order_id") == order_id, record
        assert record.get("correlation_id") == orders[0]["correlation_id"], record
        xcom = airflow.api("GET", f"{_ti_path(dag_id, run_id)}/xcomEntries/order_id", params={"map_index": -1})
        assert xcom["value"] == order_id, xcom
    assert _posts_received_since(e2e_emulator, posts_before, wait=IDLE_TIMEOUT) == 2
    observed["seconds"] = round(time.monotonic() - started, 1)
    _record("control", observed)


def test_execution_timeout_mid_post_places_one_order(runs: Runs, e2e_emulator: RunningEmulator) -> None:
    """Try 1 times out while the order's answer is held back; try 2 refuses to send it again."""
    airflow = runs.airflow
    started = time.monotonic()
    posts_before = _order_posts(e2e_emulator)
    e2e_emulator.control.add_fault(ORDER_ROUTE, after=True, delay=TIMEOUT_CASE_DELAY, count=1)
    run_id, email = runs.trigger(TIMEOUT_DAG_ID, "timeout")

    observed = _assert_interrupted_once(airflow, e2e_emulator, TIMEOUT_DAG_ID, run_id, email, posts_before)
    first = _task_log(airflow, TIMEOUT_DAG_ID, run_id, 1)
    assert "AirflowTaskTimeout" in first, f"try 1 did not end by its execution_timeout:\n{first[-4000:]}"
    observed["seconds"] = round(time.monotonic() - started, 1)
    _record("execution_timeout", observed)


def _task_process(airflow: AirflowDeployment, ti: dict[str, Any]) -> psutil.Process:
    """The process that runs the operator of task instance ``ti``.

    Airflow 3.3 with the LocalExecutor: the scheduler's executor worker (a multiprocessing child of the scheduler,
    titled ``airflow worker -- LocalExecutor: <workload>``) runs the supervisor, ``supervise()`` in
    ``airflow.sdk.execution_time.supervisor``, in its own process; the supervisor forks the **task process**, which
    runs ``task_runner``, retitles itself ``airflow worker -- <task instance id>`` and executes the operator. That
    process's pid is the task instance's ``pid`` in the REST API. The supervisor only forwards a SIGTERM it gets to it.
    """
    scheduler = psutil.Process(airflow.procs["scheduler"].pid)
    title = f"airflow worker -- {ti['id']}"
    for proc in scheduler.children(recursive=True):
        try:
            if " ".join(proc.cmdline()).strip() == title:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no process titled {title!r} under the scheduler (pid {scheduler.pid})")


def test_sigterm_mid_post_places_one_order(runs: Runs, e2e_emulator: RunningEmulator) -> None:
    """Try 1's task process gets SIGTERM (then SIGKILL after a grace period) while the order's answer is held back.

    This is what a deploy or a pod eviction does. Airflow 3.3.2's task runner answers SIGTERM by calling the
    operator's ``on_kill()`` and carrying on (apache/airflow#73006), so the operator's ``on_kill()`` stops the try
    itself (``StopOnKill``): SIGTERM alone must end it, well before the SIGKILL. The next try must refuse to order
    again.
    """
    airflow = runs.airflow
    started = time.monotonic()
    posts_before = _order_posts(e2e_emulator)
    e2e_emulator.control.add_fault(ORDER_ROUTE, after=True, delay=SIGNAL_CASE_DELAY, count=1)
    run_id, email = runs.trigger(SIGNAL_DAG_ID, "sigterm")

    _wait_order_placed(airflow, e2e_emulator, SIGNAL_DAG_ID, run_id, email)
    ti = _task_instance(airflow, SIGNAL_DAG_ID, run_id)
    assert (ti["state"], ti["try_number"]) == ("running", 1), f"try 1 is not running while its answer is held: {ti}"
    proc = _task_process(airflow, ti)
    parent = proc.parent()
    parent_title = " ".join(parent.cmdline()) if parent is not None else ""
    assert "LocalExecutor" in parent_title, f"the task process's parent is not the executor worker: {parent_title!r}"
    assert ti["pid"] == proc.pid, f"REST pid {ti['pid']} is not the task process {proc.pid}"

    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=TERMINATION_GRACE)
        ended_by = "SIGTERM"
    except psutil.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        ended_by = "SIGKILL after the grace period (SIGTERM did not end the try)"

    observed = _assert_interrupted_once(airflow, e2e_emulator, SIGNAL_DAG_ID, run_id, email, posts_before)
    assert ended_by == "SIGTERM", ended_by
    first = _task_log(airflow, SIGNAL_DAG_ID, run_id, 1)
    assert "told to stop" in first, f"try 1's log does not show the stop:\n{first[-4000:]}"
    observed.update(
        task_process={"pid": proc.pid, "parent_pid": parent.pid if parent else None, "parent_title": parent_title},
        try_1_ended_by=ended_by,
        seconds=round(time.monotonic() - started, 1),
    )
    _record("sigterm", observed)
