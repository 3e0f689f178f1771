"""One short "task process" for the host token cache benchmark and tests: obtain a token once, report, exit.

Protocol (stdin/stdout, so that no secret travels on the command line):

1. the parent writes one JSON line: ``{"conn": {"host", "login", "password", "extra"}, "preload_crypto": bool}``;
2. the worker builds its client (imports done, nothing sent) and prints ``ready``;
3. the parent writes ``go`` to every worker at once; each calls ``client.token()`` and prints one JSON line:
   ``{"ms": wall ms of token(), "cpu_ms": CPU ms of token(), "requests": token requests it sent, "token": a digest}``.

The cache directory comes from ``XDG_CACHE_HOME`` in the worker's environment. :func:`run_together` is the parent's
side.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    setup = json.loads(sys.stdin.readline())
    if setup.get("preload_crypto"):
        # What an Airflow 3 task process has already imported (its task runner uses cryptography), so that the
        # measured cache hit does not include a one-off import that the task would not pay.
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
        import cryptography.hazmat.primitives.kdf.hkdf  # noqa: F401

    from airflow_provider_truconnect.client.client import TruConnectClient
    from airflow_provider_truconnect.client.config import ClientConfig

    conn = setup["conn"]
    config = ClientConfig.from_connection_fields(
        host=conn["host"], login=conn["login"], password=conn["password"], extra=conn.get("extra")
    )
    client = TruConnectClient(config)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        token = client.token()
    except Exception as exc:  # reported to the parent, which counts it as a failure
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {
        "ms": wall * 1000,
        "cpu_ms": cpu * 1000,
        "requests": client.requests_sent,
        "token": hashlib.sha256(token.access_token.encode()).hexdigest()[:16],
    }
    client.close()
    print(json.dumps(result), flush=True)
    return 0


def run_together(
    count: int,
    conn: dict[str, Any],
    cache_home: Callable[[int], str],
    *,
    preload_crypto: bool = True,
    one_by_one: bool = False,
    timeout: float = 600.0,
) -> list[dict[str, Any]]:
    """Start ``count`` workers, wait until every one is ready, release them at once, and collect their reports.

    With ``one_by_one`` each worker is released only once the previous one has reported: its latency is then the
    uncontended one (200 processes released at once on a 2-CPU machine mostly measure the CPU queue).

    :param count: how many processes.
    :param conn: the connection (``host``, ``login``, ``password``, ``extra``).
    :param cache_home: the ``XDG_CACHE_HOME`` of worker *i* (one for all: one host; one each: one pod each).
    :param preload_crypto: import cryptography before ``ready``, as an Airflow 3 task process has.
    :param timeout: seconds to wait for the workers to exit.
    :return: one report per worker, in start order.
    :raises RuntimeError: when a worker dies or fails (its stderr tail in the message).
    """
    setup = json.dumps({"conn": conn, "preload_crypto": preload_crypto}) + "\n"
    procs: list[subprocess.Popen[str]] = []
    try:
        for index in range(count):
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.host_cache_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO_ROOT,
                env={**os.environ, "XDG_CACHE_HOME": cache_home(index)},
            )
            procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(setup)
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"worker did not start: {_stderr_tail(proc)}")
        if not one_by_one:
            for proc in procs:  # the release: one short write each
                _release(proc)
        reports = []
        for proc in procs:
            if one_by_one:
                _release(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            report = json.loads(line) if line.strip() else {"error": _stderr_tail(proc)}
            if "error" in report:
                raise RuntimeError(f"worker failed: {report['error']}")
            reports.append(report)
        for proc in procs:
            proc.wait(timeout)
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _stderr_tail(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate(timeout=30)
    return (err or "").strip()[-2000:]


if __name__ == "__main__":
    sys.exit(main())
