"""The ``airflow`` CLI sees the provider and can test the emulator-backed connection of the running deployment."""

from __future__ import annotations

import subprocess

import pytest
from airflow_deploy import AirflowDeployment, airflow_bin

from airflow_provider_truconnect.emulator.server import RunningEmulator

pytestmark = pytest.mark.e2e

COMMANDS = {
    "providers list": ("providers", "list", "-o", "plain"),
    "providers hooks": ("providers", "hooks", "-o", "plain"),
    "connections test": ("connections", "test", "truconnect_default"),
}


@pytest.fixture(scope="module")
def cli_results(airflow: AirflowDeployment) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the three commands concurrently (each pays ~4 s of imports), same env as the deployment."""
    procs = {
        name: subprocess.Popen(
            [airflow_bin(), *args],
            env=airflow.env,
            cwd=airflow.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for name, args in COMMANDS.items()
    }
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            (airflow.logs_dir / f"cli-{name.replace(' ', '-')}.log").write_text(out + "\n--- stderr ---\n" + err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def test_providers_list_shows_provider(cli_results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    res = cli_results["providers list"]
    assert res.returncode == 0, res.stderr[-3000:]
    assert "airflow-provider-truconnect" in res.stdout, res.stdout[-3000:]


def test_providers_hooks_shows_connection_type(cli_results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    res = cli_results["providers hooks"]
    assert res.returncode == 0, res.stderr[-3000:]
    line = next((ln for ln in res.stdout.splitlines() if ln.split() and ln.split()[0] == "truconnect"), "")
    assert line, res.stdout[-3000:]
    assert "airflow_provider_truconnect.hooks.truconnect.TruConnectHook" in line, line


def test_connections_test_succeeds(
    cli_results: dict[str, subprocess.CompletedProcess[str]], e2e_emulator: RunningEmulator
) -> None:
    res = cli_results["connections test"]
    output = res.stdout + res.stderr
    assert res.returncode == 0, output[-3000:]
    assert "Connection success!" in output, output[-3000:]
    assert e2e_emulator.client_secret not in output
