"""Shared plumbing of the benchmarks: results, statistics, logging as shipped, the emulator and connections."""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Emulator settings shared by every benchmark: no rate limit (we measure the client, not the throttle).
BASE_EMULATOR_CONFIG: dict[str, Any] = {"rate_limit_per_minute": None}

_DEVNULL: Any = None


@dataclass
class BenchResult:
    """One benchmark's outcome: a table for ``BENCHMARKS.md`` plus everything raw for ``bench-output/``."""

    key: str
    title: str
    method: list[str]
    columns: list[str]
    rows: list[list[Any]]
    headline: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def progress(message: str) -> None:
    """Progress on stderr (stdout is Airflow's log stream, silenced during runs)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return float(ordered[index])


def fmt(value: float, digits: int = 2) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def configure_logging_as_shipped() -> None:
    """Keep Airflow's own logging pipeline (structlog formatting, secret redaction) but send its output nowhere.

    Importing ``airflow.sdk`` installs a root ``StreamHandler`` (INFO) with structlog's ``ProcessorFormatter``; the
    hook's one INFO line per request therefore pays the full formatting cost, as in a task, without flooding stdout.
    """
    global _DEVNULL
    import airflow.sdk  # noqa: F401 - configures logging

    _DEVNULL = _DEVNULL or open(os.devnull, "w")  # noqa: SIM115 - lives for the process
    root = logging.getLogger()
    handlers = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    for handler in handlers:
        handler.setStream(_DEVNULL)
    if not handlers:
        handler = logging.StreamHandler(_DEVNULL)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        import structlog

        factory = structlog.get_config().get("logger_factory")
        if factory is not None and hasattr(factory, "io"):
            factory.io = _DEVNULL
    except Exception:  # pragma: no cover - structlog layout changed; stdlib handlers are silenced anyway
        pass
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def emulator(**overrides: Any) -> Iterator[Any]:
    """An emulator in a subprocess (its own GIL), with the benchmark defaults and ``overrides``."""
    from airflow_provider_truconnect.emulator.server import run_emulator

    config = {**BASE_EMULATOR_CONFIG, **overrides}
    started = time.perf_counter()
    with run_emulator(mode="subprocess", **config) as emu:
        progress(f"emulator up at {emu.url} in {time.perf_counter() - started:.1f} s ({overrides or 'defaults'})")
        yield emu


@contextmanager
def tls_emulator(**overrides: Any) -> Iterator[tuple[Any, str]]:
    """Like :func:`emulator`, serving HTTPS with a certificate of a throw-away private CA made for this run.

    :return: the running emulator and the path of the CA certificate that verifies it; both are gone on exit.
    """
    from airflow_provider_truconnect.emulator.server import run_emulator
    from airflow_provider_truconnect.emulator.tls import write_tls_files

    config = {**BASE_EMULATOR_CONFIG, **overrides}
    with tempfile.TemporaryDirectory(prefix="truconnect-bench-tls-") as directory:
        files = write_tls_files(Path(directory))
        started = time.perf_counter()
        with run_emulator(
            mode="subprocess", ssl_certfile=files.server_cert, ssl_keyfile=files.server_key, **config
        ) as emu:
            progress(
                f"TLS emulator up at {emu.url} in {time.perf_counter() - started:.1f} s ({overrides or 'defaults'})"
            )
            yield emu, str(files.ca_cert)


@contextmanager
def env_vars(**values: str) -> Iterator[None]:
    """Set environment variables (``AIRFLOW_CONN_*``) for the duration of a benchmark."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def conn_env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def truconnect_hook(
    emu: Any, conn_id: str = "truconnect_bench", *, verify_ssl: str | None = None, **kwargs: Any
) -> Any:
    """A :class:`TruConnectHook` whose connection comes from an ``AIRFLOW_CONN_*`` variable (as users configure it).

    The caller must keep the variable set (see :func:`env_vars`) until the hook has looked its connection up.

    :param verify_ssl: a CA file for the connection's ``verify_ssl`` extra (an emulator serving TLS).
    """
    from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

    conn = emu.connection_dict()
    if verify_ssl is not None:
        conn["extra"] = {**conn.get("extra", {}), "verify_ssl": verify_ssl}
    os.environ[conn_env_name(conn_id)] = json.dumps(conn)
    return TruConnectHook(conn_id, **kwargs)


def grants(stats: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in (stats.get("token_grants_total") or {}).items()}


def total_grants(stats: dict[str, Any]) -> int:
    return sum(grants(stats).values())


def route_count(stats: dict[str, Any], route: str, status: str | None = None) -> int:
    by_status = (stats.get("requests_by_route") or {}).get(route, {})
    if status is not None:
        return int(by_status.get(status, 0))
    return sum(int(v) for v in by_status.values())


def slim_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The counters of ``/__emulator/stats`` without the per-request logs (they can be megabytes)."""
    keep = (
        "requests_total",
        "requests_by_route",
        "token_grants_total",
        "token_failures_by_error",
        "unauthorized",
        "rate_limited",
    )
    return {k: stats.get(k) for k in keep}


def dump_json(path: str, data: Any) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")
