"""A throw-away CeleryExecutor deployment on loopback: PostgreSQL, Redis, Airflow 3 and two Celery workers.

``CeleryDeployment`` extends :class:`airflow_deploy.AirflowDeployment` (same home, ports, auth and logs) with

- a PostgreSQL cluster as the metadata database and Celery result backend: ``initdb`` into a temp directory owned by
  the ``postgres`` system user (the server refuses to run as root), listening on 127.0.0.1 and a free port, started
  and stopped with ``pg_ctl`` as that user, every statement logged (the leak scan reads the log);
- a Redis server as the Celery broker (127.0.0.1, free port, no persistence), with ``redis-cli monitor`` recording
  every command, so the leak scan also sees messages that were consumed before the end;
- two ``airflow celery worker`` processes with distinct ``--celery-hostname``\\ s, each standing for one host: its
  own ``HOME`` and ``XDG_CACHE_HOME`` (where a per-host token cache lives). The control-plane components share a
  third home. All share the task log folder, as a shared volume or remote logging would.

The log servers of workers and triggerer are not started (``--skip-serve-logs``): Airflow 3.3.2 binds them to every
interface with no setting to change it, and the API server reads the shared log folder directly.

Every process is started in a session of its own (PostgreSQL's postmaster makes its own: ``pg_ctl`` calls
``setsid``); :meth:`CeleryDeployment.stop` ends them all, and :func:`leftover_processes` finds any process that is
still in one of those sessions or runs inside one of the deployment's temp directories.

Run by hand (Ctrl-C stops everything)::

    .venv/bin/python tests/e2e/celery_deploy.py                 # the whole deployment with the e2e and example DAGs
    .venv/bin/python tests/e2e/celery_deploy.py --backing-only  # only PostgreSQL and Redis
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from airflow_deploy import E2E_DAGS_DIR, REPO_ROOT, AirflowDeployment, free_port, wait_for  # noqa: E402

CELERY_RESULTS_DIR = REPO_ROOT / "test-results" / "e2e-celery"
#: One Celery worker per name; each stands for one host (its own HOME and cache directory).
WORKER_HOSTS = ("host-a", "host-b")
CONTROL_HOST = "host-control"
#: The 40-way mapped DAG; its ``conn_id`` param picks the connection, hence the token cache mode.
MAPPED_DAG_ID = "truconnect_celery_mapped"
MAPPED_DAG_FILE = E2E_DAGS_DIR / "truconnect_celery_mapped.py"
#: Values of the ``oauth_cache`` connection extra; each gets a connection and an emulator client of its own, so the
#: emulator counts token grants per mode.
CACHE_MODES = ("process", "host")
PG_USER = "airflow"
PG_DATABASE = "airflow"
_SYSTEM_USER = "postgres"


def postgres_bin_dir() -> Path:
    """:return: the newest ``/usr/lib/postgresql/<major>/bin`` (Debian's layout).

    :raises RuntimeError: when Debian's ``postgresql`` package is missing.
    """
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")]
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql: run `make system-deps` "
            "(Debian package postgresql)"
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; any other user may run it as itself.
    return ["runuser", "-u", _SYSTEM_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM to a child's process group, SIGKILL to whatever is left of it after ``timeout``; reap the child."""
    if proc is None:
        return
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # Also when the leader has exited: the group may still hold its children, and the group id is not reused while
    # any of them lives.
    _killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1 and a free port, run as the ``postgres`` system user.

    :param logs_dir: where the server log is copied on :meth:`stop`.
    """

    def __init__(self, logs_dir: Path) -> None:
        self.bin = postgres_bin_dir()
        self.logs_dir = logs_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="tc-e2e-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgresql.log"
        self.postmaster_pid: int | None = None
        self._lock = threading.Lock()
        if os.geteuid() == 0:
            shutil.chown(self.root, _SYSTEM_USER, _SYSTEM_USER)
        self.root.chmod(0o700)

    def url(self, database: str = PG_DATABASE) -> str:
        """:return: the SQLAlchemy URL with the psycopg2 driver (SQLAlchemy 2.1 would pick psycopg 3 otherwise)."""
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            _as_postgres_user([str(self.bin / args[0]), *args[1:]]),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")

    def start(self) -> None:
        """``initdb`` (trust auth for the ``airflow`` superuser), ``pg_ctl start``, then create the database."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", PG_USER, "-E", "UTF8", "--no-sync")
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.root}",
                "-c listen_addresses=127.0.0.1",
                "-c max_connections=200",
                # A throw-away cluster: durability costs CPU on a shared 2-core machine and buys nothing here.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                # Every statement with its parameters: the leak scan reads what travelled to the database.
                "-c log_statement=all",
                "-c log_line_prefix=%m\\ ",
            ]
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start")
        self.postmaster_pid = int((self.data / "postmaster.pid").read_text().split()[0])
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {PG_DATABASE}")
        finally:
            conn.close()

    def dump(self, path: Path) -> None:
        """Write a data-only ``pg_dump`` of the Airflow database to ``path``.

        :param path: the target file.
        """
        with open(path, "wb") as out:
            done = subprocess.run(
                [str(self.bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "--data-only"]
                + [PG_DATABASE],
                stdout=out,
                stderr=subprocess.PIPE,
                timeout=120,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {done.stderr.decode(errors='replace')[-2000:]}")

    def stop(self) -> None:
        """``pg_ctl -m fast stop`` as the postgres user (SIGKILL to the postmaster's session if that fails), keep the
        server log, remove the cluster. Safe to call twice and after a failed start."""
        with self._lock:
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():
                pid = self.postmaster_pid or int(pid_file.read_text().split()[0])
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", timeout=60)
                except (RuntimeError, subprocess.TimeoutExpired):
                    # Only while it is still our postmaster (working in our data directory), never a reused pid.
                    if _cwd(pid) == str(self.data):
                        _killpg(pid, signal.SIGKILL)
            if self.log_path.is_file():
                self.logs_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.log_path, self.logs_dir / "postgresql.log")
            shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A throw-away Redis on 127.0.0.1 and a free port (no persistence), plus ``redis-cli monitor`` recording every
    command it receives.

    :param logs_dir: where the server log and the monitor output go.
    """

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="tc-e2e-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.monitor: subprocess.Popen[bytes] | None = None
        self.monitor_path = logs_dir / "redis-monitor.log"
        self._files: list[Any] = []

    @property
    def url(self) -> str:
        """:return: the broker URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _popen(self, cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._files.append(log)
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root, start_new_session=True
        )

    def start(self, timeout: float = 30) -> None:
        """Start the server and the monitor; return when the monitor is attached."""
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if not server or not cli:
            raise RuntimeError("redis-server or redis-cli missing: run `make system-deps` (Debian redis-server)")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = self._popen([server, *args, "--dir", str(self.root)], self.logs_dir / "redis-server.log")
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        try:
            wait_for(lambda: self._alive() and client.ping(), timeout, "redis-server to answer PING", interval=0.1)
            self.monitor = self._popen([cli, "-h", "127.0.0.1", "-p", str(self.port), "monitor"], self.monitor_path)
            # The monitor's own PING shows in its output once it is attached.
            wait_for(
                lambda: client.ping() and b"PING" in self.monitor_path.read_bytes().upper(),
                timeout,
                "redis-cli monitor to attach",
                interval=0.1,
            )
        finally:
            client.close()

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.logs_dir}")
        return True

    def dump(self, path: Path) -> int:
        """Write every key and its value (strings, lists, hashes, sets, sorted sets) to ``path`` as JSON lines.

        :param path: the target file.
        :return: the number of keys.
        """
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)
        count = 0
        try:
            with open(path, "w", encoding="utf-8") as out:
                for key in client.scan_iter(count=500):
                    kind = client.type(key).decode()
                    value: Any
                    if kind == "string":
                        value = client.get(key)
                    elif kind == "list":
                        value = client.lrange(key, 0, -1)
                    elif kind == "hash":
                        value = client.hgetall(key)
                    elif kind == "set":
                        value = sorted(client.smembers(key))
                    elif kind == "zset":
                        value = client.zrange(key, 0, -1)
                    else:
                        value = None
                    out.write(json.dumps(_text({"key": key, "type": kind, "value": value})) + "\n")
                    count += 1
        finally:
            client.close()
        return count

    def stop(self) -> None:
        """Stop the monitor and the server (by session); remove the temp directory. Safe to call twice."""
        _stop_group(self.monitor, timeout=5)
        _stop_group(self.proc, timeout=10)
        for log in self._files:
            log.close()
        self._files.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _text(value: Any) -> Any:
    # Redis answers bytes; JSON wants text (undecodable bytes stay visible as escapes).
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    return value


class CeleryDeployment(AirflowDeployment):
    """Airflow with the CeleryExecutor on PostgreSQL and Redis, and one Celery worker per host in ``hosts``.

    :param conn_env: ``AIRFLOW_CONN_*`` variables (name -> JSON) for every component.
    :param dag_sources: DAG files copied into the temp DAGs folder.
    :param results_dir: where component logs, task logs and dumps are kept.
    :param hosts: one Celery worker per name, with its own ``HOME``.
    :param worker_concurrency: task slots per worker.
    """

    def __init__(
        self,
        conn_env: Mapping[str, str],
        dag_sources: Iterable[Path],
        results_dir: Path = CELERY_RESULTS_DIR,
        hosts: Iterable[str] = WORKER_HOSTS,
        worker_concurrency: int = 4,
    ) -> None:
        self.results_dir = results_dir
        logs_dir = results_dir / "logs"
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.postgres = PostgresServer(logs_dir)
        self.redis = RedisServer(logs_dir)
        self.hosts = tuple(hosts)
        self.worker_concurrency = worker_concurrency
        self.timings: dict[str, float] = {}
        self._stopped = False
        super().__init__(
            conn_env,
            dag_sources,
            results_dir=results_dir,
            env_overrides={
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url(),
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url(),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
                # Room for both workers' slots plus what the scheduler queues ahead.
                "AIRFLOW__CORE__PARALLELISM": str(4 * worker_concurrency * len(self.hosts)),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(4 * worker_concurrency * len(self.hosts)),
            },
        )
        for host in (CONTROL_HOST, *self.hosts):
            (self.host_home(host) / ".cache").mkdir(parents=True)
        # The control plane (api-server, scheduler, dag-processor, triggerer) is one more host.
        self.env.update(self._host_env(CONTROL_HOST))

    def host_home(self, host: str) -> Path:
        """:return: the ``HOME`` of one host of the deployment."""
        return self.home / "hosts" / host

    def _host_env(self, host: str) -> dict[str, str]:
        home = self.host_home(host)
        return {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}

    # ------------------------------------------------------------------ start-up
    def start(self, timeout: float = 300) -> None:
        """Start Redis and PostgreSQL, migrate, start the Airflow components and workers; wait until all are ready.

        :param timeout: seconds for the whole start-up.
        """
        started = time.monotonic()
        self.redis.start()
        self.timings["redis_s"] = time.monotonic() - started
        mark = time.monotonic()
        self.postgres.start()
        self.timings["postgres_s"] = time.monotonic() - mark
        super().start(max(30.0, timeout - (time.monotonic() - started)))
        self.timings["total_s"] = time.monotonic() - started

    def _migrate(self, timeout: float) -> None:
        mark = time.monotonic()
        super()._migrate(timeout)
        self.timings["migrate_s"] = time.monotonic() - mark

    def _spawn_components(self) -> None:
        self._components_spawned_at = time.monotonic()
        super()._spawn_components()
        for host in self.hosts:
            self._spawn(
                f"worker-{host}",
                [
                    "celery",
                    "worker",
                    "--celery-hostname",
                    host,
                    "--concurrency",
                    str(self.worker_concurrency),
                    "--skip-serve-logs",
                    "--without-mingle",
                    "--without-gossip",
                ],
                env={**self.env, **self._host_env(host)},
            )

    def worker_ready(self, host: str) -> bool:
        """:return: whether the worker of ``host`` has logged Celery's ``ready.`` line."""
        log = self.logs_dir / f"worker-{host}.log"
        return log.is_file() and re.search(rb"celery@\S+ ready\.", log.read_bytes()) is not None

    def wait_healthy(self, timeout: float) -> None:
        """Wait until the API answers, the jobs heartbeat and every worker is ready.

        :param timeout: seconds.
        """
        deadline = time.monotonic() + timeout
        super().wait_healthy(timeout)
        # The API server builds its Execution API on the first request to it; make that request ours, so that the
        # first tasks' calls do not time out and retry meanwhile.
        wait_for(
            lambda: requests.get(f"{self.url}/execution/health", timeout=30).ok,
            max(5.0, deadline - time.monotonic()),
            "the Execution API",
        )
        self.timings["components_healthy_s"] = time.monotonic() - self._components_spawned_at

        def workers_ready() -> bool:
            self.check_alive()
            return all(self.worker_ready(host) for host in self.hosts)

        wait_for(workers_ready, max(5.0, deadline - time.monotonic()), "the Celery workers to be ready")
        self.timings["workers_ready_s"] = time.monotonic() - self._components_spawned_at

    # ------------------------------------------------------------------ processes
    def session_ids(self) -> set[int]:
        """:return: the sessions of every process this deployment started (each leads its own)."""
        sessions = {p.pid for p in self.procs.values()}
        sessions |= {p.pid for p in (self.redis.proc, self.redis.monitor) if p is not None}
        if self.postgres.postmaster_pid is not None:
            sessions.add(self.postgres.postmaster_pid)
        return sessions

    def roots(self) -> list[Path]:
        """:return: the deployment's temp directories (Airflow home, PostgreSQL cluster, Redis)."""
        return [self.home, self.postgres.root, self.redis.root]

    def memory_pss_mib(self) -> float:
        """:return: the proportional set size of every process of the deployment now, in MiB."""
        total_kib = 0
        for pid in _deployment_pids(self.session_ids(), self.roots()):
            try:
                with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
                    for line in fh:
                        if line.startswith("Pss:"):
                            total_kib += int(line.split()[1])
                            break
            except OSError:
                continue
        return total_kib / 1024

    def stop(self, timeout: float = 15) -> None:
        """Stop the Airflow components and workers, then Redis, then PostgreSQL. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            super().stop(timeout)
        finally:
            try:
                self.redis.stop()
            finally:
                self.postgres.stop()

    def cleanup(self) -> None:
        """Remove the temp directories."""
        super().cleanup()
        for root in (self.postgres.root, self.redis.root):
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------- connections, runs and figures
def cache_client_id(mode: str) -> str:
    """:return: the emulator client id used with the token cache ``mode``."""
    return f"celery-{mode}-cache"


def cache_conn_id(mode: str) -> str:
    """:return: the Airflow connection id whose ``oauth_cache`` extra is ``mode``."""
    return f"truconnect_celery_{mode}"


def emulator_clients(modes: Iterable[str] = CACHE_MODES) -> dict[str, str]:
    """:return: the emulator's ``clients``: its default client plus one per cache mode (random secrets)."""
    from airflow_provider_truconnect.emulator.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    clients = {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}
    clients.update({cache_client_id(mode): os.urandom(18).hex() for mode in modes})
    return clients


def cache_conn_env(emu: Any, modes: Iterable[str] = CACHE_MODES) -> dict[str, str]:
    """:param emu: a running emulator started with :func:`emulator_clients`.
    :return: ``AIRFLOW_CONN_TRUCONNECT_DEFAULT`` and one ``AIRFLOW_CONN_*`` per cache mode."""
    env = {"AIRFLOW_CONN_TRUCONNECT_DEFAULT": emu.connection_json()}
    for mode in modes:
        conn = emu.connection_dict()
        conn["login"] = cache_client_id(mode)
        conn["password"] = emu.config.clients[cache_client_id(mode)]
        conn["extra"] = {**conn["extra"], "oauth_cache": mode}
        env[f"AIRFLOW_CONN_{cache_conn_id(mode).upper()}"] = json.dumps(conn)
    return env


def token_grants(emu: Any, client_id: str) -> int:
    """:return: the token grants (of any grant type) the emulator has answered for ``client_id``."""
    return sum(int(n) for n in (emu.control.stats()["token_grants"].get(client_id) or {}).values())


@dataclass
class DagRun:
    """A DAG run triggered through the REST API, with the states seen while polling and its end as the API shows it."""

    dag_id: str
    run_id: str
    state: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    task_instances: list[dict[str, Any]] = field(default_factory=list)
    seen_states: dict[tuple[str, int], set[str]] = field(default_factory=dict)

    @property
    def wall_s(self) -> float:
        """Seconds from the run's start to its end, as recorded by Airflow."""
        start, end = self.run["start_date"], self.run["end_date"]
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_dags(
    dep: AirflowDeployment, runs: Mapping[str, tuple[str, dict[str, Any]]], timeout: float = 240.0
) -> dict[str, DagRun]:
    """Unpause and trigger runs (label -> (DAG id, conf)) at once, poll them until all have finished.

    :param dep: the deployment.
    :param runs: what to run.
    :param timeout: seconds for all runs together.
    :return: the runs by label.
    :raises AssertionError: when the runs have not finished in time.
    """
    records: dict[str, DagRun] = {}
    for label, (dag_id, conf) in runs.items():
        dep.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        body = {"logical_date": datetime.now(UTC).isoformat(), "conf": conf}
        records[label] = DagRun(dag_id, dep.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])
    deadline = time.monotonic() + timeout
    pending = set(records)
    while pending:
        dep.check_alive()
        for label in sorted(pending):
            rec = records[label]
            base = f"/dags/{rec.dag_id}/dagRuns/{rec.run_id}"
            tis = dep.api("GET", f"{base}/taskInstances", params={"limit": 1000})["task_instances"]
            for ti in tis:
                rec.seen_states.setdefault((ti["task_id"], ti["map_index"]), set()).add(str(ti["state"]))
            run = dep.api("GET", base)
            if run["state"] in ("success", "failed"):
                rec.state, rec.run = run["state"], run
                rec.task_instances = dep.api("GET", f"{base}/taskInstances", params={"limit": 1000})["task_instances"]
                pending.discard(label)
        if pending and time.monotonic() > deadline:
            states = {lb: sorted({s for v in records[lb].seen_states.values() for s in v}) for lb in pending}
            raise AssertionError(f"runs not finished after {timeout:.0f}s: {states}")
        if pending:
            time.sleep(1.0)
    return records


@dataclass
class MappedRun:
    """One run of the mapped DAG with one token cache mode, and what it cost."""

    mode: str
    run: DagRun
    grants: int
    summary: dict[str, Any]


def run_mapped(dep: AirflowDeployment, emu: Any, mode: str, width: int, timeout: float = 240.0) -> MappedRun:
    """Run :data:`MAPPED_DAG_ID` with ``width`` mapped tasks on the connection of cache ``mode``.

    :return: the run, the token grants it caused and the DAG's own summary (tasks per host, distinct processes).
    """
    before = token_grants(emu, cache_client_id(mode))
    conf = {"conn_id": cache_conn_id(mode), "width": width}
    run = run_dags(dep, {mode: (MAPPED_DAG_ID, conf)}, timeout)[mode]
    summary: dict[str, Any] = {}
    if run.state == "success":
        summary = dep.api(
            "GET",
            f"/dags/{MAPPED_DAG_ID}/dagRuns/{run.run_id}/taskInstances/hosts/xcomEntries/return_value",
            params={"map_index": -1, "deserialize": "true"},
        )["value"]
    return MappedRun(mode, run, token_grants(emu, cache_client_id(mode)) - before, summary)


class MemorySampler:
    """Samples a deployment's total PSS every ``interval`` seconds in a thread; keeps the peak since :meth:`reset` and
    the overall peak.

    :param dep: the deployment.
    :param interval: seconds between samples.
    """

    def __init__(self, dep: CeleryDeployment, interval: float = 2.0) -> None:
        self.dep, self.interval = dep, interval
        self.peak_mib = 0.0
        self.overall_peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celery-pss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = self.dep.memory_pss_mib()
            self.peak_mib = max(self.peak_mib, now)
            self.overall_peak_mib = max(self.overall_peak_mib, now)

    def reset(self) -> None:
        """Start a new peak."""
        self.peak_mib = 0.0

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _read_stat(pid: int) -> tuple[str, int] | None:
    """:return: ``(state, session id)`` of a process, or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[3])


def _deployment_pids(sessions: set[int], roots: Iterable[Path]) -> list[int]:
    prefixes = [str(r) for r in roots]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        stat = _read_stat(pid)
        # A zombie has exited already; an orphan's waits for the init process to reap it.
        if stat is None or stat[0] in ("Z", "X"):
            continue
        cwd = _cwd(pid)
        if stat[1] in sessions or any(cwd == p or cwd.startswith(p + "/") for p in prefixes):
            found.append(pid)
    return found


def leftover_processes(sessions: Iterable[int], roots: Iterable[Path]) -> list[str]:
    """Live processes still in one of ``sessions`` or working inside one of ``roots`` (also once those are deleted).

    :param sessions: session ids of the processes a deployment started.
    :param roots: its temp directories.
    :return: ``"<pid> <state> <command line>"`` per process found (empty when everything has stopped).
    """
    out = []
    for pid in _deployment_pids(set(sessions), list(roots)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = "?"
        stat = _read_stat(pid)
        out.append(f"{pid} {stat[0] if stat else '?'} {cmdline.strip()[:200]}")
    return out


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def stop_on_termination(stop: Any) -> Iterator[None]:
    """Within the block, SIGTERM unwinds like Ctrl-C (so ``finally`` blocks and fixture teardowns run), and ``stop``
    also runs at interpreter exit if the block is left some other way.

    :param stop: the callable that stops everything (idempotent).
    """
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    atexit.register(stop)
    try:
        yield
    finally:
        try:
            stop()
        finally:
            atexit.unregister(stop)
            signal.signal(signal.SIGTERM, previous)


def _backing_only(ready_file: Path | None) -> None:
    logs = CELERY_RESULTS_DIR / "logs-backing"
    postgres, redis_server = PostgresServer(logs), RedisServer(logs)

    def stop() -> None:
        try:
            redis_server.stop()
        finally:
            postgres.stop()

    with stop_on_termination(stop):
        redis_server.start()
        postgres.start()
        sessions = [p.pid for p in (redis_server.proc, redis_server.monitor) if p is not None]
        info = {
            "postgres_url": postgres.url(),
            "redis_url": redis_server.url,
            "ports": [postgres.port, redis_server.port],
            "sessions": [*sessions, postgres.postmaster_pid],
            "roots": [str(postgres.root), str(redis_server.root)],
        }
        print(json.dumps(info), flush=True)
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            os.replace(tmp, ready_file)
        while True:
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - manual use and the interruption test
    """Start the deployment (or only PostgreSQL and Redis) and keep it up until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backing-only", action="store_true", help="start only PostgreSQL and Redis")
    parser.add_argument("--ready-file", type=Path, help="write the started services' details here (JSON)")
    args = parser.parse_args(argv)
    try:
        if args.backing_only:
            _backing_only(args.ready_file)
            return
        from airflow_provider_truconnect.emulator.server import run_emulator

        with run_emulator(mode="subprocess", clients=emulator_clients()) as emu:
            examples = REPO_ROOT / "dags_examples"
            sources = [examples / ".airflowignore", *sorted(examples.glob("*.py")), *sorted(E2E_DAGS_DIR.glob("*.py"))]
            dep = CeleryDeployment(cache_conn_env(emu), sources)
            try:
                with stop_on_termination(dep.stop):
                    dep.start()
                    print(f"Airflow (Celery) up at {dep.url} (admin / {dep.password}); emulator {emu.url}")
                    print(f"start-up: {dep.timings}")
                    while True:
                        time.sleep(1)
                        dep.check_alive()
            finally:
                dep.cleanup()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":  # pragma: no cover
    main()
