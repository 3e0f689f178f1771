"""A throw-away Airflow 2.11 webserver on loopback, for the browser tests of the legacy connection form.

It runs from ``.venv-af211`` (``make venv211``, built from ``requirements/airflow-2.11.txt``) with its own
``AIRFLOW_HOME``, SQLite, an admin user with a random password, ``[core] test_connection = Enabled`` and a free
loopback port. Only the webserver runs: the connection form and its *Test* button need nothing else. The gunicorn
master and its worker share one process group, which :meth:`Airflow211Webserver.stop` kills.

Run by hand (Ctrl-C stops it)::

    .venv/bin/python tests/e2e/airflow211_webserver.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from airflow_deploy import ADMIN_USER, REPO_ROOT, RESULTS_DIR, free_port, wait_for
from cryptography.fernet import Fernet

VENV211 = REPO_ROOT / ".venv-af211"

# One process instead of `airflow db migrate` plus `airflow users create`: half the start-up, and the password
# travels in the environment rather than on a command line.
_BOOTSTRAP = """
import os
from airflow.utils import db
db.upgradedb()
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
with get_application_builder() as appbuilder:
    role = appbuilder.sm.find_role("Admin")
    user = appbuilder.sm.add_user(
        os.environ["TC_E2E_ADMIN_USER"], "Admin", "User", "admin@example.invalid", role,
        os.environ["TC_E2E_ADMIN_PASSWORD"],
    )
    if not user:
        raise SystemExit("could not create the admin user")
"""


def venv211_missing() -> str | None:
    """:return: why ``.venv-af211`` cannot run the webserver, or ``None`` when it can."""
    for exe in ("python", "airflow"):
        if not os.access(VENV211 / "bin" / exe, os.X_OK):
            return f"{VENV211 / 'bin' / exe} is missing: build the Airflow 2.11 environment with `make venv211`"
    return None


class Airflow211Webserver:
    """Start and stop an Airflow 2.11 webserver with its own home, port and logs.

    :param results_dir: where ``logs/af211-*.log`` are written.
    """

    def __init__(self, results_dir: Path = RESULTS_DIR) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="tc-e2e-af211-"))
        self.logs_dir = results_dir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.user = ADMIN_USER
        self.password = secrets.token_urlsafe(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.startup_seconds: float | None = None
        self.env = self._build_env()

    def _build_env(self) -> dict[str, str]:
        # Nothing of the test process's Airflow 3.3 environment: its settings, or a PYTHONPATH ahead of .venv-af211.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "PYTHONPATH", "PYTHONHOME"))
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.home / "dags"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self.port),
                "AIRFLOW__WEBSERVER__BASE_URL": self.url,
                "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__WEBSERVER__WORKERS": "1",
                # No rolling worker restarts in the middle of a test; generous timeouts on a loaded 2-core machine.
                "AIRFLOW__WEBSERVER__WORKER_REFRESH_BATCH_SIZE": "0",
                "AIRFLOW__WEBSERVER__WEB_SERVER_MASTER_TIMEOUT": "300",
                "AIRFLOW__WEBSERVER__WEB_SERVER_WORKER_TIMEOUT": "300",
                "AIRFLOW__WEBSERVER__WARN_DEPLOYMENT_EXPOSURE": "False",
                # gunicorn 23+ opens a control socket in the user's home by default, shared by every gunicorn.
                "GUNICORN_CMD_ARGS": "--no-control-socket",
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
            }
        )
        return env

    def start(self, timeout: float = 240) -> None:
        """Migrate the DB, create the admin user, start the webserver and wait until it serves the login page.

        :param timeout: seconds for the whole start-up.
        :raises RuntimeError: when ``.venv-af211`` is missing or a step fails (see ``logs/af211-*.log``).
        :raises TimeoutError: when the webserver does not answer in time.
        """
        missing = venv211_missing()
        if missing:
            raise RuntimeError(missing)
        started = time.monotonic()
        (self.home / "dags").mkdir()
        boot = subprocess.run(
            [str(VENV211 / "bin" / "python"), "-c", _BOOTSTRAP],
            env={**self.env, "TC_E2E_ADMIN_USER": self.user, "TC_E2E_ADMIN_PASSWORD": self.password},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        (self.logs_dir / "af211-bootstrap.log").write_text(boot.stdout + boot.stderr)
        if boot.returncode != 0:
            raise RuntimeError(f"Airflow 2.11 bootstrap failed, see {self.logs_dir / 'af211-bootstrap.log'}")
        self._log = open(self.logs_dir / "af211-webserver.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(VENV211 / "bin" / "airflow"), "webserver", "--hostname", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            cwd=self.home,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

        def serving() -> bool:
            self.check_alive()
            return requests.get(f"{self.url}/login/", timeout=10).status_code == 200

        wait_for(serving, max(5.0, timeout - (time.monotonic() - started)), "the Airflow 2.11 webserver")
        self.startup_seconds = round(time.monotonic() - started, 1)

    def check_alive(self) -> None:
        """:raises RuntimeError: if the webserver has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"Airflow 2.11 webserver exited with code {self.proc.returncode}; "
                f"see {self.logs_dir / 'af211-webserver.log'}"
            )

    def stop(self, timeout: float = 10) -> None:
        """Stop the webserver: SIGTERM to its process group, then SIGKILL to whatever is left of it."""
        proc = self.proc
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            # A worker can outlive its master: kill whatever is left of the group.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(timeout=timeout)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        """Remove the temp ``AIRFLOW_HOME``."""
        shutil.rmtree(self.home, ignore_errors=True)


def main() -> None:  # pragma: no cover - manual use
    """Start the webserver and an emulator; print how to log in; stop on Ctrl-C."""
    from airflow_provider_truconnect.emulator.server import run_emulator

    with run_emulator(mode="subprocess") as emu:
        web = Airflow211Webserver()
        try:
            web.start()
            print(f"Airflow 2.11 up in {web.startup_seconds}s at {web.url} ({web.user} / {web.password})")
            print(f"emulator: {emu.api_base} token URL {emu.oauth_url} client {emu.client_id}")
            while True:
                time.sleep(1)
                web.check_alive()
        except KeyboardInterrupt:
            pass
        finally:
            web.stop()
            web.cleanup()


if __name__ == "__main__":  # pragma: no cover
    main()
