"""A throw-away Airflow 3 deployment on loopback for the end-to-end tests (and for poking at by hand).

``AirflowDeployment`` runs ``airflow db migrate`` and then the four components (``api-server``, ``scheduler``,
``dag-processor``, ``triggerer``) as separate processes, each in its own process group, with a temp
``AIRFLOW_HOME``, SQLite, LocalExecutor, SimpleAuthManager with a known admin password, free loopback ports and the
connection ``truconnect_default`` given through ``AIRFLOW_CONN_TRUCONNECT_DEFAULT``. Component logs go to
``test-results/e2e/logs/``; task logs are copied there on stop.

Run by hand (Ctrl-C stops everything)::

    .venv/bin/python tests/e2e/airflow_deploy.py
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "test-results" / "e2e"
E2E_DAGS_DIR = Path(__file__).resolve().parent / "dags"
EXAMPLE_DAGS_DIR = REPO_ROOT / "dags_examples"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"


def free_port() -> int:
    """:return: a TCP port that is free on 127.0.0.1 right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_bin() -> str:
    """:return: the ``airflow`` script of the running interpreter's environment."""
    candidate = Path(sys.executable).parent / "airflow"
    return str(candidate) if candidate.exists() else "airflow"


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something truthy.

    :param predicate: the check; exceptions count as "not yet".
    :param timeout: seconds.
    :param what: description for the error message.
    :param interval: seconds between polls.
    :return: the truthy value.
    :raises TimeoutError: when the time is up.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polling
            last = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last!r})" if last else "")
    )


class AirflowDeployment:
    """Start and stop a local Airflow with its own home, ports and logs.

    :param conn_env: extra ``AIRFLOW_CONN_*`` variables (name -> JSON) for every component.
    :param dag_sources: DAG files copied into the temp DAGs folder.
    :param results_dir: where component logs and task logs are kept.
    :param env_overrides: variables replacing the defaults for every component (another executor or database: see
        ``celery_deploy.py``).
    """

    def __init__(
        self,
        conn_env: Mapping[str, str],
        dag_sources: Iterable[Path],
        results_dir: Path = RESULTS_DIR,
        env_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="tc-e2e-airflow-"))
        self.dags_folder = self.home / "dags"
        self.dags_folder.mkdir()
        for src in dag_sources:
            shutil.copy2(src, self.dags_folder / src.name)
        self.logs_dir = results_dir / "logs"
        self.cache_dir = results_dir / ".cache"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(16)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[Any] = []
        self.env = self._build_env(conn_env)
        self.env.update(env_overrides or {})
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(
            json.dumps({ADMIN_USER: self.password}) + "\n"
        )
        self._token: str | None = None
        self.session = requests.Session()

    def _build_env(self, conn_env: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                # The log servers bind every interface: not wanted. All components share this machine's log folder.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # Only the runs the tests trigger: a scheduled run of a @daily example would race with them (and
                # e.g. top up the low-balance SIMs first, leaving the test's run an empty mapping).
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
            }
        )
        env.update(conn_env)
        return env

    # ------------------------------------------------------------------ processes
    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command against this deployment.

        :param args: the arguments after ``airflow``.
        :param timeout: seconds.
        :return: the completed process (stdout and stderr as text).
        """
        return subprocess.run(
            [airflow_bin(), *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.home
        )

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> None:
        log = open(self.logs_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._log_files.append(log)
        self.procs[name] = subprocess.Popen(
            [airflow_bin(), *args],
            env=dict(env if env is not None else self.env),
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start(self, timeout: float = 150) -> None:
        """Migrate the DB, start the components and wait until the API is healthy and all jobs heartbeat.

        :param timeout: seconds for the whole start-up.
        """
        deadline = time.monotonic() + timeout
        self._migrate(timeout)
        self._spawn_components()
        self.wait_healthy(max(5.0, deadline - time.monotonic()))

    def _spawn_components(self) -> None:
        self._spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"])
        self._spawn("scheduler", ["scheduler", "--skip-serve-logs"])
        self._spawn("dag-processor", ["dag-processor"])
        self._spawn("triggerer", ["triggerer", "--skip-serve-logs"])

    def _migrate(self, timeout: float) -> None:
        if not self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
            self._run_migrate(timeout)
            return
        # A freshly migrated SQLite file is the same for every run of one Airflow version: keep a copy and reuse it,
        # which saves the ~6 s of `airflow db migrate` on a warm run.
        airflow_version = importlib.metadata.version("apache-airflow-core")
        template = self.cache_dir / f"airflow-{airflow_version}-py{sys.version_info[0]}{sys.version_info[1]}.db"
        db_file = self.home / "airflow.db"
        if template.is_file():
            shutil.copy2(template, db_file)
            return
        self._run_migrate(timeout)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = template.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy2(db_file, tmp)
        os.replace(tmp, template)

    def _run_migrate(self, timeout: float) -> None:
        migrate = self.cli("db", "migrate", timeout=timeout)
        (self.logs_dir / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed, see {self.logs_dir / 'db-migrate.log'}")

    def check_alive(self) -> None:
        """:raises RuntimeError: if a component has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Airflow {name} exited with code {proc.returncode}; see {self.logs_dir / (name + '.log')}"
                )

    def health(self) -> dict[str, Any]:
        """:return: ``GET /api/v2/monitor/health``."""
        result: dict[str, Any] = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        return result

    def wait_healthy(self, timeout: float) -> None:
        """Wait until the API answers and scheduler, triggerer and dag-processor report healthy.

        :param timeout: seconds.
        """

        def healthy() -> bool:
            self.check_alive()
            h = self.health()
            return all(
                (h.get(part) or {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            )

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if healthy():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Airflow not healthy after {timeout:.0f}s; logs in {self.logs_dir}")

    def stop(self, timeout: float = 8) -> None:
        """Stop every component (SIGTERM to its process group, then SIGKILL) and keep the task logs."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            # Kill leftovers of the group too (task runners, supervisors), even when the leader is gone.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(timeout=10)
        for log in self._log_files:
            log.close()
        self.session.close()
        task_logs = self.home / "logs"
        if task_logs.is_dir():
            target = self.logs_dir / "task-logs"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(task_logs, target, dirs_exist_ok=True)

    def cleanup(self) -> None:
        """Remove the temp AIRFLOW_HOME."""
        shutil.rmtree(self.home, ignore_errors=True)

    # ------------------------------------------------------------------ REST
    def token(self) -> str:
        """:return: a JWT from ``POST /auth/token`` (cached)."""
        if self._token is None:
            resp = requests.post(
                f"{self.url}/auth/token", json={"username": ADMIN_USER, "password": self.password}, timeout=30
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, *, expect: Iterable[int] = (200,), **kwargs: Any) -> Any:
        """Call ``/api/v2`` with the admin token.

        :param method: HTTP method.
        :param path: path below ``/api/v2``.
        :param expect: accepted status codes.
        :return: the decoded JSON body.
        """
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        resp = self.session.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=60, **kwargs)
        if resp.status_code not in tuple(expect):
            raise AssertionError(f"{method} {path} -> {resp.status_code}: {resp.text[:1000]}")
        return resp.json() if resp.content else None


def main() -> None:  # pragma: no cover - manual use
    """Start the emulator and Airflow with the e2e and example DAGs; stop on Ctrl-C."""
    from airflow_provider_truconnect.emulator.server import run_emulator

    with run_emulator(mode="subprocess") as emu:
        sources = sorted(EXAMPLE_DAGS_DIR.glob("*.py")) + sorted(E2E_DAGS_DIR.glob("*.py"))
        dep = AirflowDeployment({"AIRFLOW_CONN_TRUCONNECT_DEFAULT": emu.connection_json()}, sources)
        t0 = time.monotonic()
        try:
            dep.start()
            print(f"Airflow up in {time.monotonic() - t0:.1f}s at {dep.url} (admin / {dep.password}); emu {emu.url}")
            while True:
                time.sleep(1)
                dep.check_alive()
        except KeyboardInterrupt:
            pass
        finally:
            dep.stop()
            dep.cleanup()


if __name__ == "__main__":  # pragma: no cover
    main()
