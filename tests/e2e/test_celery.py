"""The provider on a real CeleryExecutor deployment: PostgreSQL, Redis, api-server, scheduler, dag-processor,
triggerer and two Celery workers, each worker standing for one host (``celery_deploy.py``).

The deployment lives for the class below and is gone before the next test: the last tests check that no process it
started is left, and that an interrupted start-up (SIGINT, SIGTERM) leaves nothing behind either. Figures (start-up,
wall time of the mapped runs, token grants per cache mode, peak memory) go to
``test-results/e2e-celery/celery-figures.json``.
"""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery_deploy import (
    CACHE_MODES,
    CELERY_RESULTS_DIR,
    MAPPED_DAG_ID,
    WORKER_HOSTS,
    CeleryDeployment,
    DagRun,
    MappedRun,
    MemorySampler,
    cache_conn_env,
    emulator_clients,
    leftover_processes,
    run_dags,
    run_mapped,
    stop_on_termination,
)
from conftest import SMOKE_DAG_ID, dag_ids_under_test, dag_sources, wait_for_dags
from leak_scan import find_leaks, leak_needles, scan_files

from airflow_provider_truconnect.client.tokens import renew_skew
from airflow_provider_truconnect.emulator.server import RunningEmulator, run_emulator

pytestmark = pytest.mark.e2e

MAPPED_WIDTH = 40
ORDER_DAG_ID, ORDER_TASK_ID = "truconnect_esim_provisioning", "place_order"
TOKEN_LIFETIME = 300

_STARTED: dict[str, Any] = {}


def _figures(update: dict[str, Any]) -> None:
    path = CELERY_RESULTS_DIR / "celery-figures.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(update)
    path.write_text(json.dumps(data, indent=2) + "\n")


@pytest.fixture(scope="class")
def celery_emulator() -> Iterator[RunningEmulator]:
    """An emulator of its own: a client per cache mode besides the default one, so grants are counted per mode."""
    with run_emulator(
        mode="subprocess",
        clients=emulator_clients(),
        access_token_lifetime=TOKEN_LIFETIME,
        order_fulfilling_after=1.0,
        order_complete_after=3.0,
    ) as emu:
        yield emu


@pytest.fixture(scope="class")
def celery(celery_emulator: RunningEmulator) -> Iterator[CeleryDeployment]:
    """The running deployment (stopped, and its temp directories removed, when the class is done)."""
    CELERY_RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (CELERY_RESULTS_DIR / "celery-figures.json").unlink(missing_ok=True)
    dep = CeleryDeployment(cache_conn_env(celery_emulator), dag_sources())
    _STARTED.update(sessions=set(), roots=dep.roots(), ports=[dep.port, dep.postgres.port, dep.redis.port])
    try:
        with stop_on_termination(dep.stop), MemorySampler(dep) as sampler:
            dep.start()
            _figures({"startup": {k: round(v, 1) for k, v in dep.timings.items()}})
            yield dep
        _figures({"peak_pss_mib": round(sampler.overall_peak_mib)})
    finally:
        # Every process the deployment started leads a session; the record outlives stop().
        _STARTED["sessions"] = dep.session_ids()
        dep.cleanup()


@pytest.fixture(scope="class")
def example_runs(celery: CeleryDeployment) -> dict[str, DagRun]:
    """Every example DAG and the smoke DAG, triggered together on the Celery deployment."""
    dag_ids = dag_ids_under_test()
    wait_for_dags(celery, [*dag_ids, MAPPED_DAG_ID])
    return run_dags(celery, {d: (d, {}) for d in dag_ids})


@pytest.fixture(scope="class")
def mapped_runs(
    celery: CeleryDeployment, celery_emulator: RunningEmulator, example_runs: dict[str, DagRun]
) -> dict[str, MappedRun]:
    """The 40-way mapped DAG once per cache mode, one after the other (after the examples, on a quiet deployment)."""
    out = {mode: run_mapped(celery, celery_emulator, mode, MAPPED_WIDTH) for mode in CACHE_MODES}
    _figures(
        {
            "mapped_runs": {
                m.mode: {"grants": m.grants, "wall_s": round(m.run.wall_s, 1), "per_host": m.summary.get("per_host")}
                for m in out.values()
            },
            "renewal_interval_s": TOKEN_LIFETIME - renew_skew(TOKEN_LIFETIME),
        }
    )
    return out


class TestCeleryDeployment:
    def test_components_and_workers_up(self, celery: CeleryDeployment) -> None:
        health = celery.health()
        assert all(health[p]["status"] == "healthy" for p in ("metadatabase", "scheduler", "triggerer")), health
        for host in WORKER_HOSTS:
            assert celery.worker_ready(host), f"worker {host} not ready"
            log = (celery.logs_dir / f"worker-{host}.log").read_text(errors="replace")
            assert f"celery@{host} ready." in log, log[-2000:]
        assert celery.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")

    @pytest.mark.parametrize("dag_id", dag_ids_under_test())
    def test_example_dag_succeeds(self, example_runs: dict[str, DagRun], dag_id: str) -> None:
        rec = example_runs[dag_id]
        states = {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in rec.task_instances}
        assert rec.state == "success", f"{dag_id} run {rec.run_id} ended {rec.state}: {states}"
        assert rec.task_instances
        assert all(s in ("success", "skipped") for s in states.values()), states

    def test_order_task_defers_to_triggerer_and_resumes_on_a_worker(
        self, celery: CeleryDeployment, example_runs: dict[str, DagRun]
    ) -> None:
        rec = example_runs[ORDER_DAG_ID]
        assert "deferred" in rec.seen_states.get((ORDER_TASK_ID, -1), set()), rec.seen_states
        ti = next(t for t in rec.task_instances if t["task_id"] == ORDER_TASK_ID)
        assert ti["state"] == "success"
        assert ti["try_number"] == 1, "the order task was retried"
        ti_dir = celery.home / "logs" / f"dag_id={ORDER_DAG_ID}" / f"run_id={rec.run_id}" / f"task_id={ORDER_TASK_ID}"
        worker_log = (ti_dir / "attempt=1.log").read_text(errors="replace")
        assert "Pausing task as DEFERRED" in worker_log, worker_log[-3000:]
        trigger_logs = list(ti_dir.glob("attempt=1.log.trigger.*.log"))
        assert trigger_logs, f"no triggerer log in {ti_dir}"
        assert re.search(r"trigger .*starting", trigger_logs[0].read_text(errors="replace"))
        # After the trigger fired, a worker ran the task again: it parsed the DAG and pushed the operator's result.
        resumed = worker_log.split("Pausing task as DEFERRED", 1)[1]
        assert "Worker startup parse complete" in resumed and "Pushing xcom" in resumed, resumed[-3000:]
        # ... on one of the Celery workers, which both together received the task twice: to start and to resume it.
        workload = re.compile(
            r"Executing workload in Celery: .*log_path='"
            + re.escape(f"dag_id={ORDER_DAG_ID}/run_id={rec.run_id}/task_id={ORDER_TASK_ID}/attempt=1.log'")
        )
        received = {
            host: len(workload.findall((celery.logs_dir / f"worker-{host}.log").read_text(errors="replace")))
            for host in WORKER_HOSTS
        }
        assert sum(received.values()) == 2, received

    @pytest.mark.parametrize("mode", CACHE_MODES)
    def test_mapped_run_spreads_over_both_workers(self, mapped_runs: dict[str, MappedRun], mode: str) -> None:
        run = mapped_runs[mode]
        rec = run.run
        mapped = [t for t in rec.task_instances if t["task_id"] == "call_api"]
        assert rec.state == "success", {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in rec.task_instances}
        assert len(mapped) == MAPPED_WIDTH and all(t["state"] == "success" for t in mapped)
        assert run.summary["tasks"] == MAPPED_WIDTH
        assert set(run.summary["per_host"]) == set(WORKER_HOSTS), run.summary
        assert run.summary["pids"] == MAPPED_WIDTH, "every mapped task runs in a process of its own"

    def test_process_cache_grants_one_token_per_task_process(self, mapped_runs: dict[str, MappedRun]) -> None:
        assert mapped_runs["process"].grants == MAPPED_WIDTH

    def test_host_cache_grants_at_most_one_token_per_host_and_renewal(self, mapped_runs: dict[str, MappedRun]) -> None:
        run = mapped_runs["host"]
        renewal_interval = TOKEN_LIFETIME - renew_skew(TOKEN_LIFETIME)
        goal = len(WORKER_HOSTS) * math.ceil(run.run.wall_s / renewal_interval)
        assert 1 <= run.grants <= goal, f"{run.grants} grants in {run.run.wall_s:.0f}s; goal <= {goal}"

    def test_no_secret_or_token_in_logs_broker_or_database(
        self, celery: CeleryDeployment, celery_emulator: RunningEmulator, mapped_runs: dict[str, MappedRun]
    ) -> None:
        """Task logs (worker and triggerer parts), every component's and worker's log, the PostgreSQL statement log
        and a dump of the database, the Redis command stream and a dump of its keys, and the hosts' cache files."""
        needles = leak_needles(celery_emulator)
        assert sum(k.startswith("issued token") for k in needles) >= MAPPED_WIDTH, "too few tokens issued"
        dumps = celery.results_dir / "dumps"
        dumps.mkdir(exist_ok=True)
        celery.postgres.dump(dumps / "postgresql-data.sql")
        keys = celery.redis.dump(dumps / "redis-keys.jsonl")
        pg_log = dumps / "postgresql-statements.log"
        pg_log.write_bytes(celery.postgres.log_path.read_bytes())
        files = [
            *celery.logs_dir.glob("*.log"),
            *(p for p in (celery.home / "logs").rglob("*") if p.is_file()),
            *(p for p in (celery.home / "hosts").rglob("*") if p.is_file()),
            *dumps.iterdir(),
        ]
        names = {p.name for p in files}
        assert {"redis-monitor.log", "postgresql-data.sql", "postgresql-statements.log", "scheduler.log"} <= names
        assert {f"worker-{h}.log" for h in WORKER_HOSTS} <= names
        assert keys > 0
        # The scan sees inside the encodings: a workload's type travels through Redis only base64-encoded, and the
        # Celery worker's name reaches PostgreSQL only pickled (bytea).
        monitor, pg_dump = celery.redis.monitor_path.read_bytes(), (dumps / "postgresql-data.sql").read_bytes()
        assert b"ExecuteTask" not in monitor and find_leaks(monitor, {"workload": "ExecuteTask"})
        assert b"celery@host-" not in pg_dump and find_leaks(pg_dump, {"worker": "celery@host-"})
        leaks, scanned = scan_files(files, needles)
        _figures({"leak_scan": {"files": len(files), "mib": round(scanned / 2**20, 1)}})
        assert not leaks, "\n".join(leaks)

    def test_smoke_dag_masks_token_on_a_celery_worker(
        self, celery: CeleryDeployment, example_runs: dict[str, DagRun]
    ) -> None:
        if SMOKE_DAG_ID not in example_runs:
            pytest.fail(f"{SMOKE_DAG_ID} was not run (TRUCONNECT_E2E_DAG_IDS narrows the DAGs)")
        rec = example_runs[SMOKE_DAG_ID]
        path = celery.home / "logs" / f"dag_id={SMOKE_DAG_ID}" / f"run_id={rec.run_id}" / "task_id=call_api"
        log = (path / "attempt=1.log").read_text(errors="replace")
        assert re.search(r"token used \(should be masked\): (eyJ)?\*\*\*", log), log[-3000:]
        assert "token known to the secret masker: True" in log, log[-3000:]
        assert "client secret (should be masked): ***" in log, log[-3000:]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_deployment_left_no_process_behind() -> None:
    """Runs after the class above has torn its deployment down."""
    assert _STARTED, "the Celery deployment tests did not run in this session"
    assert _STARTED["sessions"], "no process was recorded"
    assert leftover_processes(_STARTED["sessions"], _STARTED["roots"]) == []
    assert [p for p in _STARTED["ports"] if _port_open(p)] == []
    assert [str(r) for r in _STARTED["roots"] if r.exists()] == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_backing_services_leave_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    """PostgreSQL (a daemon of the postgres user) and Redis, started by ``celery_deploy.py`` and interrupted."""
    ready = tmp_path / "ready.json"
    script = Path(__file__).with_name("celery_deploy.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--backing-only", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "backing services did not start in 60 s"
            time.sleep(0.2)
        info = json.loads(ready.read_text())
        assert all(_port_open(p) for p in info["ports"])
        assert leftover_processes(info["sessions"], [Path(r) for r in info["roots"]]), "nothing found while running"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert leftover_processes(info["sessions"], [Path(r) for r in info["roots"]]) == []
    assert [p for p in info["ports"] if _port_open(p)] == []
    assert [r for r in info["roots"] if Path(r).exists()] == []


def test_leak_scan_finds_secrets_in_kombu_bodies_and_bytea() -> None:
    secret = "s3cr3t-value-for-the-scan"
    body = base64.b64encode(json.dumps([[{"token": secret}], {}, {}]).encode()).decode()
    monitor_line = f'1.0 [0 127.0.0.1:1] "LPUSH" "default" "{{\\"body\\": \\"{body}\\"}}"'.encode()
    bytea = b"42\tSUCCESS\t\\\\x" + pickle.dumps({"result": secret}).hex().encode() + b"\t\\N"
    assert secret.encode() not in monitor_line + bytea
    assert find_leaks(monitor_line, {"secret": secret}) == ["secret"]
    assert find_leaks(bytea, {"secret": secret}) == ["secret"]
    assert find_leaks(monitor_line + bytea, {"other": "not-there-at-all"}) == []
